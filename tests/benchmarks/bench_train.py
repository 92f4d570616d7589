"""Training throughput: the whole step against the bare forward+backward of the same network.

    python tests/benchmarks/bench_train.py                       # CPU, input 224, batch 16
    python tests/benchmarks/bench_train.py --device cuda --size 416 --batch 256
    python tests/benchmarks/bench_train.py --device cuda --compile off default reduce-overhead

The whole step is what ``model.train`` runs per batch: batched augmentation on the device
(mosaic on), bf16 autocast and channels_last where on, forward, target assignment, loss,
backward, gradient clipping, AdamW and the EMA update. The ceiling is the same network's
forward+backward on one fixed, already-normalized batch with the same precision settings (no
augmentation, no loss beyond a sum, no optimizer). Images come from a bank of random pictures
with random boxes, so no data set is needed. ``--compile`` adds the whole step under
``model.train --compile`` of each mode (its compile time is printed apart, not counted), and
``--stride8-level`` measures the network with its stride-8 level. Prints one table: images/s of
each and their ratio to the eager ceiling.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from model.config import DetectorConfig
from model.network import build_network
from model.training.augment import AugmentConfig, build_bank
from model.training.ema import ModelEMA
from model.training.optim import make_optimizer
from model.training.setup import Precision
from model.training.trainer import BatchLoss


def timed(fn: Callable[[], None], device: torch.device, seconds: float) -> tuple[float, int]:
    """Run ``fn`` for about ``seconds`` after three warm-up calls; (seconds, calls)."""
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
        if device.type == "cuda" and calls % 5 == 0:
            torch.cuda.synchronize(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, calls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--bank", type=int, default=256, help="random images in the bank")
    parser.add_argument("--neck-channels", type=int, default=256)
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto")
    parser.add_argument(
        "--compile",
        nargs="+",
        choices=("off", "default", "reduce-overhead"),
        default=["off"],
        help="the whole step under each model.train --compile mode",
    )
    parser.add_argument("--stride8-level", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    detector = DetectorConfig(
        input_size=args.size, neck_channels=args.neck_channels, stride8_level=args.stride8_level
    )
    images, boxes, labels = [], [], []
    for _ in range(args.bank):
        height, width = torch.randint(args.size // 2, args.size + 1, (2,)).tolist()
        images.append(torch.randint(0, 256, (3, height, width), dtype=torch.uint8))
        corner = torch.rand(4, 2) * torch.tensor([width, height]) * 0.6
        boxes.append(
            torch.cat([corner, corner + 8 + torch.rand(4, 2) * 0.4 * torch.tensor([width, height])], 1)
        )
        labels.append(torch.randint(0, 20, (4,)))
    bank = build_bank([i.to(device) for i in images], boxes, labels, args.size)
    precision = Precision.choose(device, args.bf16, args.channels_last)
    autocast, memory_format = precision.autocast, precision.memory_format
    network = build_network(detector).to(device).to(memory_format=memory_format)  # type: ignore[call-overload]
    optimizer = make_optimizer(network, 1e-3, 0.05, device)
    ema = ModelEMA(network)
    generator = torch.Generator(device=device).manual_seed(0)
    augment = AugmentConfig()

    def whole_step_of(mode: str) -> Callable[[], None]:
        # What model.train runs per batch, compiled as --compile MODE does.
        loss = BatchLoss(network, bank, detector, precision, generator, compile_mode=mode)

        def whole_step() -> None:
            indices = torch.randint(0, len(bank), (args.batch,), generator=generator, device=device)
            terms = loss(indices, augment)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 10.0)
            optimizer.step()
            ema.update(network)

        return whole_step

    fixed = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(
        memory_format=memory_format
    )

    def bare_step() -> None:
        with autocast:
            out = network(fixed)
        network.zero_grad(set_to_none=True)
        out.float().sum().backward()

    rows = []
    seconds, calls = timed(bare_step, device, args.seconds)
    rows.append(("forward+backward (ceiling)", calls * args.batch / seconds))
    for mode in args.compile:
        step = whole_step_of(mode)
        start = time.perf_counter()
        step()  # compiles under a compile mode
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if mode != "off":
            print(f"compile {mode}: first step {time.perf_counter() - start:.1f} s", flush=True)
        seconds, calls = timed(step, device, args.seconds)
        name = "whole training step" if mode == "off" else f"whole step, compile {mode}"
        rows.append((name, calls * args.batch / seconds))
    ceiling = rows[0][1]
    dev = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu x{torch.get_num_threads()} threads"
    )
    print(
        f"device {dev}, torch {torch.__version__}, input {args.size}, batch {args.batch}, "
        f"bf16 {args.bf16}, channels_last {args.channels_last}, levels {list(detector.strides)}"
    )
    print(f"{'path':<36} {'images/s':>10} {'of ceiling':>10}")
    for name, rate in rows:
        print(f"{name:<36} {rate:>10.1f} {rate / ceiling:>10.2f}")


if __name__ == "__main__":
    main()
