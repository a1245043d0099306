"""The built-in trainer's throughput against a bare PyTorch loop, and a small sweep's wall time.

Part 1: the same model (same initial weights), the same in-memory batches, the same optimiser
(AdamW) and the same number of steps, once through ``stexture.training.fit`` (learning-rate
schedule, non-finite-loss check, deterministic algorithms, best-weights copy; no validation
loader) and once through the four-line loop ``loss = CE(model(x), y); zero_grad; backward;
step``. Rounds alternate the order of the two so that load on a shared machine hits both
alike; the table gives the median images/s and the trainer's overhead (goal: at most 10%),
and, as a second reading that suffers less from other processes on a busy machine, the
median CPU time of this process.

Part 2: the wall time of a stated sweep: k in {0, 1}, one seed, the vanilla baseline and the
k=0/k=1 ensemble (3 trainings + 1 evaluation), small model, 64 px, 3 epochs, batch 32, on
hand-made shards (4 classes x 64 training / 16 validation images, 64 px; tests/shardfactory).

Run from the repository root::

    python benchmarks/bench_trainer.py              # both parts
    python benchmarks/bench_trainer.py --quick      # fewer steps and rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import machine_line, print_table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from shardfactory import make_shard_dir  # noqa: E402  (the tests' hand-made shards)

from stexture import sweep  # noqa: E402
from stexture.training import SweepConfig, TrainConfig, build_model, fit  # noqa: E402


def make_batches(steps: int, batch_size: int, image_size: int, num_classes: int
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):
        x = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
        labels = torch.randint(0, num_classes, (batch_size,), generator=generator)
        batches.append((x, F.one_hot(labels, num_classes).float()))
    return batches


def fresh_model(name: str, num_classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes)


def bare_loop(model: torch.nn.Module, batches: list, lr: float) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    model.train()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def trainer_loop(model: torch.nn.Module, batches: list, lr: float) -> None:
    fit(model, batches, None, TrainConfig(epochs=1, lr=lr, patience=None))


def timed_run(loop, model_name: str, batches: list, num_classes: int) -> tuple[float, float]:
    """(images/s of wall time, CPU seconds of this process) of one run of ``loop``."""
    model = fresh_model(model_name, num_classes)
    start, cpu_start = time.perf_counter(), time.process_time()
    loop(model, batches, 1e-3)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return sum(len(x) for x, _ in batches) / wall, cpu


def compare_loops(model_name: str, steps: int, batch_size: int, image_size: int,
                  rounds: int) -> None:
    num_classes = 10
    batches = make_batches(steps, batch_size, image_size, num_classes)
    loops = {"bare PyTorch loop": bare_loop, "stexture fit": trainer_loop}
    for loop in loops.values():  # warm-up: allocator, oneDNN primitives
        timed_run(loop, model_name, batches[:2], num_classes)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in loops}
    for r in range(rounds):
        order = list(loops) if r % 2 == 0 else list(reversed(loops))
        for name in order:
            runs[name].append(timed_run(loops[name], model_name, batches, num_classes))
    bare = statistics.median(rate for rate, _ in runs["bare PyTorch loop"])
    bare_cpu = statistics.median(cpu for _, cpu in runs["bare PyTorch loop"])
    rows = []
    for name in loops:
        rate = statistics.median(rate for rate, _ in runs[name])
        cpu = statistics.median(cpu for _, cpu in runs[name])
        rows.append((name, f"{rate:.1f}", f"{bare / rate - 1:+.1%}", f"{cpu:.2f}",
                     f"{cpu / bare_cpu - 1:+.1%}"))
    print(f"\nTraining throughput: model {model_name}, {image_size} px, batch {batch_size}, "
          f"{steps} steps, AdamW, median of {rounds} rounds, {torch.get_num_threads()} "
          "torch thread(s)")
    print_table(["loop", "images/s", "wall time over bare loop", "CPU s",
                 "CPU time over bare loop"], rows)


def time_small_sweep(epochs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shard_dir(Path(tmp) / "shards", classes=("a", "b", "c", "d"),
                                per_class=64, val_per_class=16, size=64, shard_size=64)
        start = time.perf_counter()
        config = SweepConfig(k_values=[0.0, 1.0], seeds=1, epochs=epochs, model="small",
                             image_size=64, batch_size=32)
        summary = sweep(shards, config, out=Path(tmp) / "runs", device="cpu", log=None)
        seconds = time.perf_counter() - start
    print(f"\nSweep wall time: k in {{0, 1}} x 1 seed + vanilla + ensemble, small model, 64 px, "
          f"{epochs} epochs, batch 32, 4 classes x 64 train / 16 val images: {seconds:.1f} s "
          f"(best k {summary['best']['k']:g}, clean acc {summary['best']['clean_acc_mean']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch intra-op threads")
    parser.add_argument("--model", default="small", choices=("small", "resnet18"))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-sweep", action="store_true", help="only the throughput part")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    compare_loops(args.model, steps=10 if args.quick else 40, batch_size=args.batch_size,
                  image_size=args.image_size, rounds=3 if args.quick else 5)
    if not args.skip_sweep:
        time_small_sweep(epochs=2 if args.quick else 3)


if __name__ == "__main__":
    main()
