"""Data pipeline throughput: `plc shard` (MB of text/s, tokens/s) and batch sampling (tokens/s).

    python benchmarks/bench_data.py [--mb 16] [--steps 200]

Shard: the nine embedded corpora repeated into one .txt of about --mb MB, tokenized with `byte` and
`qwen3` using 1 and 2 worker processes (the figure includes worker start-up and the Zarr writes).
Sampling: BatchSampler on a 64 Mi-token in-memory store, batches of 64 × 256 and 16 × 2,048
tokens (the same tokens per batch), the int64 batch a training step receives.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from plc.data.sampling import BatchSampler, eval_windows
from plc.data.shard import shard
from plc.data.sources import embedded_languages, open_source
from plc.data.tokenstore import open_store, write_store


def make_text(path: Path, mb: float) -> int:
    docs = [d for lang in embedded_languages() for d in open_source("embedded", lang).documents()]
    text = "\n\n".join(docs) + "\n\n"
    reps = max(1, round(mb * 1e6 / len(text.encode())))
    path.write_text(text * reps, encoding="utf-8")
    return path.stat().st_size


def bench_shard(tmp: Path, mb: float) -> None:
    src = tmp / "corpus.txt"
    size = make_text(src, mb)
    print(f"shard: {size / 1e6:.1f} MB of text (9 languages), 1 run each")
    print(f"{'tokenizer':>10} {'workers':>7} {'MB/s':>8} {'tokens/s':>12} {'tokens':>12} {'s':>6}")
    for tok in ("byte", "qwen3"):
        for workers in (1, 2):
            res = shard("mix", tmp / f"{tok}-{workers}.zarr", source=str(src), tokenizer=tok,
                        workers=workers, force=True)  # fmt: skip
            tokens = res.train_tokens + res.val_tokens
            print(
                f"{tok:>10} {workers:>7} {res.text_bytes / res.seconds / 1e6:>8.2f} "
                f"{tokens / res.seconds:>12,.0f} {tokens:>12,} {res.seconds:>6.2f}"
            )


def bench_sampling(tmp: Path, steps: int) -> None:
    rng = np.random.default_rng(0)
    n = 64 << 20
    ident = {"name": "bench", "vocab_size": 151_669, "eos_id": 0, "fingerprint": "bench"}
    train = rng.integers(0, 151_669, size=n, dtype=np.uint32)
    write_store(tmp / "s.zarr", train, train[: 1 << 20], lang="x", tokenizer=ident, force=True)
    store = open_store(tmp / "s.zarr")
    print(f"sampling: store of {n:,} train tokens (in memory), {steps} batches each")
    print(f"{'seq_len':>8} {'batch':>6} {'tokens/s':>14} {'ms/batch':>9}")
    for seq_len, batch in ((256, 64), (2048, 16)):
        sampler = BatchSampler([store], seq_len, batch, seed=0, task_index=1)
        sampler.batch(0)
        t = time.perf_counter()
        for step in range(steps):
            sampler.batch(step)
        dt = time.perf_counter() - t
        print(
            f"{seq_len:>8} {batch:>6} {steps * batch * seq_len / dt:>14,.0f} {dt / steps * 1e3:>9.2f}"
        )
    t = time.perf_counter()
    eval_windows(store, 256, 2048)
    print(f"eval_windows(256 × 2,048): {(time.perf_counter() - t) * 1e3:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=16, help="MB of text to shard")
    ap.add_argument("--steps", type=int, default=200, help="batches to sample per shape")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        bench_shard(Path(d), args.mb)
        bench_sampling(Path(d), args.steps)


if __name__ == "__main__":
    main()
