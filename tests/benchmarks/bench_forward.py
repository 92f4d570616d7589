"""Forward-pass cost of the network alone: ms per image at a given input size and batch sizes.

    python tests/benchmarks/bench_forward.py [--size 416] [--batch 1 8] [--device cpu]

Random init is enough: the cost does not depend on the weights. Prints eager fp32 and, on CPU,
the service's traced+frozen ``jit`` backend side by side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from model.config import DetectorConfig
from model.network import build_network
from model.predictor import Predictor, resolve_device


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--neck-channels", type=int, default=256, help="0: the stride-32 network without neck"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    network = build_network(DetectorConfig(input_size=args.size, neck_channels=args.neck_channels))
    backends = ["eager", "jit", "onnxruntime"] if device.type == "cpu" else ["eager"]
    predictors = {name: Predictor(network, device, backend=name) for name in backends}  # type: ignore[arg-type]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.size}")
    print("| batch | backend | ms / batch | ms / image |\n|---|---|---|---|")
    for batch_size in args.batch:
        batch = torch.randn(
            batch_size, 3, args.size, args.size, device=device, dtype=predictors["eager"].dtype
        )
        for name, predictor in predictors.items():
            for _ in range(3):
                predictor.forward(batch)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                predictor.forward(batch)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            ms = statistics.median(times) * 1000
            print(f"| {batch_size} | {name} | {ms:.1f} | {ms / batch_size:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
