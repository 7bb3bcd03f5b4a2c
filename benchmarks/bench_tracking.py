"""Overhead of live TensorBoard tracking (plc.tracking.TensorBoardTracker) on cpu-preset tasks.

    python benchmarks/bench_tracking.py [--sizes nano,micro,mini] [--reps 5] [--threads 1]

Per model size: a cpu-preset task (32 steps of 16 × 64 tokens, byte vocabulary) through
plc.train.train_loop, alternately without a tracker and with `TensorBoardTracker.step` as the
loop's on_step (the figure is the median task time of each over --reps tasks after one warm-up);
and the cost of 32 `tracker.step` calls alone (median of 200 repeats) as a fraction of the median
untracked task, which is the overhead free of the run-to-run noise of a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from plc.model import GPT
from plc.presets import get_preset
from plc.sizes import SHAPES, GPTConfig, padded_vocab
from plc.tracking import TensorBoardTracker
from plc.train import train_loop


class RandomTokens:
    """Batches of random byte-vocabulary tokens, a pure function of the step."""

    def __init__(self, batch_size: int, seq_len: int):
        self.batch_size, self.seq_len = batch_size, seq_len

    def batch(self, step: int) -> np.ndarray:
        rng = np.random.default_rng(step)
        return rng.integers(0, 256, (self.batch_size, self.seq_len + 1), dtype=np.int64)


def task_seconds(model: GPT, sampler: RandomTokens, steps: int, on_step=None) -> float:
    t = time.perf_counter()
    train_loop(model, sampler, steps, 1e-3, warmup_steps=1, on_step=on_step)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="nano,micro,mini")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = get_preset("cpu")
    sampler = RandomTokens(p.batch_size, p.seq_len)
    print(
        f"cpu preset: {p.steps} steps of {p.batch_size} × {p.seq_len} tokens, {args.threads} thread(s)"
    )
    print("size   step ms  task s (plain)  task s (tracked)  32 tracker.step ms  overhead")
    with tempfile.TemporaryDirectory() as tb:
        for size in args.sizes.split(","):
            layers, d, heads = SHAPES[size]
            model = GPT(GPTConfig(layers, d, heads, padded_vocab(257), p.context))
            tracker = TensorBoardTracker(tb, size, 1, "train")
            task_seconds(model, sampler, p.steps)  # warm-up
            plain, tracked = [], []
            for _ in range(args.reps):
                plain.append(task_seconds(model, sampler, p.steps))
                tracked.append(task_seconds(model, sampler, p.steps, tracker.step))
            row = {"step": 0, "tokens": 1024, "loss": 3.1, "lr": 1e-3, "grad_norm": 0.5,
                   "tokens_per_s": 3e4}  # fmt: skip
            calls = []
            for _ in range(200):
                t = time.perf_counter()
                for i in range(p.steps):
                    tracker.step({**row, "step": i})
                calls.append(time.perf_counter() - t)
            tracker.close()
            task = statistics.median(plain)
            cost = statistics.median(calls)
            print(
                f"{size:6} {1e3 * task / p.steps:7.1f}  {task:14.3f}  "
                f"{statistics.median(tracked):16.3f}  {1e3 * cost:18.3f}  {100 * cost / task:7.2f} %"
            )


if __name__ == "__main__":
    main()
