"""Reduced-precision CPU candidates for the shipped network, side by side in one run.

    python tests/benchmarks/bench_precision.py --data VOCDEVKIT [--calib-images 256] [--limit N]

For each candidate: the network alone (ms/image at batch 1, best images/s over batch sizes) and
val mAP@0.5 through the serving prediction path (``model.evaluate.evaluate_predictor``, the code
``python -m model.evaluate`` runs). Candidates: eager fp32 (the reference), ONNX Runtime fp32
(today's default), ONNX Runtime int8 (static QDQ, per-channel, calibrated on training images),
OpenVINO fp32 / bf16 / int8 (NNCF post-training quantization), torch bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from model.backends.onnx_runtime import export_onnx
from model.backends.openvino import OpenVinoNetwork
from model.backends.quantize import calibration_inputs
from model.checkpoint import load_weights
from model.data import VOCDetection
from model.evaluation.report import evaluate_predictor
from model.predictor import Predictor

Run = Callable[[Tensor], Tensor]


def ort_int8(onnx: bytes, calibration: list[np.ndarray], threads: int) -> Run:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.items, None)
            return None if batch is None else {"images": batch}

    folder = Path(tempfile.mkdtemp())
    (folder / "fp32.onnx").write_bytes(onnx)
    quant_pre_process(str(folder / "fp32.onnx"), str(folder / "pre.onnx"), skip_symbolic_shape=True)
    quantize_static(
        str(folder / "pre.onnx"),
        str(folder / "int8.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(folder / "int8.onnx"), options, providers=["CPUExecutionProvider"])

    def run(batch: Tensor) -> Tensor:
        (grid,) = session.run(["grid"], {"images": batch.contiguous().numpy()})
        return torch.from_numpy(grid)

    return run


def openvino_int8(onnx: bytes, size: int, calibration: list[np.ndarray], threads: int) -> Run:
    """NNCF quantization in memory, as ``model.quantize`` does it, compiled like the served one."""
    import nncf
    import openvino as ov

    core = ov.Core()
    model = core.read_model(onnx, b"")
    model = nncf.quantize(
        model, nncf.Dataset(calibration), subset_size=len(calibration), preset=nncf.QuantizationPreset.MIXED
    )
    model.reshape({0: ov.PartialShape([-1, 3, size, size])})
    config = {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
    }
    request = core.compile_model(model, "CPU", config).create_infer_request()

    def run(batch: Tensor) -> Tensor:
        result = request.infer({0: batch.contiguous().numpy()}, share_inputs=True)
        return torch.from_numpy(np.array(result[0], dtype=np.float32, copy=True))

    return run


def torch_bf16(network: torch.nn.Module) -> Run:
    network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def run(batch: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return network(batch.contiguous(memory_format=torch.channels_last)).float()  # type: ignore[no-any-return]

    return run


def speed(run: Run, size: int, repeats: int) -> tuple[float, float, int]:
    """(batch-1 median ms, best images/s, its batch size)."""

    def timed(batch: Tensor, n: int) -> float:
        with torch.inference_mode():
            for _ in range(2):
                run(batch)
            times = []
            for _ in range(n):
                start = time.perf_counter()
                run(batch)
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    one = torch.randn(1, 3, size, size)
    batch1 = timed(one, repeats * 3) * 1000
    best, best_batch = 0.0, 1
    for batch_size in (1, 2, 4, 8, 16):
        seconds = timed(torch.randn(batch_size, 3, size, size), repeats)
        if batch_size / seconds > best:
            best, best_batch = batch_size / seconds, batch_size
    return batch1, best, best_batch


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, default=Path(__file__).resolve().parents[2] / "weights")
    parser.add_argument("--data", type=Path, required=True, help="VOCdevkit folder")
    parser.add_argument("--calib-split", default="train")
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N val images only")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", nargs="*", default=None, help="candidate names to run")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    args = parser.parse_args()

    threads = torch.get_num_threads()
    loaded = load_weights(args.weights)
    size = loaded.config.input_size
    reference = Predictor(load_weights(args.weights).network, "cpu", backend="eager")
    onnx = export_onnx(reference.network, size)
    calibration = calibration_inputs(reference, [args.data], args.calib_split, args.calib_images)
    builders: dict[str, Callable[[], Run]] = {
        "eager fp32": lambda: reference.network,
        "onnxruntime fp32 (default)": lambda: (
            Predictor(load_weights(args.weights).network, "cpu", backend="onnxruntime")._run
        ),
        "onnxruntime int8 (QDQ)": lambda: ort_int8(onnx, calibration, threads),
        "openvino fp32": lambda: OpenVinoNetwork(reference.network, size, "f32", threads, onnx=onnx),
        "openvino bf16": lambda: OpenVinoNetwork(reference.network, size, "bf16", threads, onnx=onnx),
        "openvino int8 (NNCF)": lambda: openvino_int8(onnx, size, calibration, threads),
        "torch bf16 autocast": lambda: torch_bf16(load_weights(args.weights).network.eval()),
    }
    val = VOCDetection([args.data], args.val_split)
    rows = []
    print(
        f"{threads} threads, input {size}, calibration: {len(calibration)} {args.calib_split} images",
        flush=True,
    )
    for name, build in builders.items():
        if args.only and not any(part in name for part in args.only):
            continue
        start = time.perf_counter()
        run = build()
        setup = time.perf_counter() - start
        batch1, best, best_batch = speed(run, size, args.repeats)
        predictor = Predictor(load_weights(args.weights).network, "cpu", backend="eager")
        predictor._run = run
        report = evaluate_predictor(predictor, val, progress=False, limit=args.limit)
        row = {
            "candidate": name,
            "setup_s": round(setup, 1),
            "batch1_ms": round(batch1, 1),
            "best_images_per_s": round(best, 1),
            "best_batch": best_batch,
            "map50": round(report.result.map50, 4),
            "val_images": report.images,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = next((r for r in rows if "default" in r["candidate"]), rows[0])
    header = "| candidate | set-up s | batch-1 ms/image | best images/s (batch) | x default | val mAP@0.5 "
    header += "| Δ mAP |"
    print("\n" + header)
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['candidate']} | {r['setup_s']} | {r['batch1_ms']} "
            f"| {r['best_images_per_s']} ({r['best_batch']}) "
            f"| {r['best_images_per_s'] / base['best_images_per_s']:.2f} | {r['map50']:.4f} "
            f"| {r['map50'] - base['map50']:+.4f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
