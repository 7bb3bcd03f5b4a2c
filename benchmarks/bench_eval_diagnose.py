"""Throughput and memory of `plc eval` and `plc diagnose` on one model at one context.

    python benchmarks/bench_eval_diagnose.py [--size 5M] [--context 2048] [--eval-seqs 32]
        [--dormant-seqs 8] [--entropy-seqs 8] [--threads 2]

Byte vocabulary (320 rows), random tokens (throughput does not depend on them). Every command runs
as its own `plc` process, so its peak resident memory (ru_maxrss from wait4) is the command's own;
the baseline is a process that imports torch and builds the model, nothing else. Diagnose times
are extrapolated to the paper's 256 dormant and 512 entropy windows from the per-window rates of
separate dormant+ranks and entropy-only runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from plc.data.tokenizers import ByteTokenizer
from plc.data.tokenstore import write_store
from plc.init import init_checkpoint


def run(args: list[str], threads: int) -> tuple[dict | None, float, float]:
    """(the JSON it printed, wall seconds, peak RSS in MiB) of one child process."""
    env = {**os.environ, "PLC_THREADS": str(threads)}
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=env)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            sys.exit(f"{' '.join(map(str, args))} failed:\n{err.read().decode()}")
    return (json.loads(out) if out.strip() else None), wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="5M")
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--eval-seqs", type=int, default=32)
    ap.add_argument("--dormant-seqs", type=int, default=8)
    ap.add_argument("--entropy-seqs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    plc = [sys.executable, "-m", "plc"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        need = max(a.eval_seqs, a.dormant_seqs, a.entropy_seqs) * (a.context + 1)
        for lang in ("vi", "ru"):
            write_store(tmp / "data" / f"{lang}.zarr", rng.integers(0, 256, a.context + 2),
                        rng.integers(0, 256, need), lang=lang,
                        tokenizer=ByteTokenizer().identity())  # fmt: skip
        ckpt = tmp / "c.pt"
        init_checkpoint(ckpt, size=a.size, tokenizer="byte", context=a.context)
        print(f"{a.size}, context {a.context:,}, byte vocabulary, {a.threads} CPU thread(s)")

        code = (
            "import torch; from plc.store import load_checkpoint; "
            f"load_checkpoint({str(ckpt)!r}).build_model()"
        )
        _, _, base_rss = run([sys.executable, "-c", code], a.threads)
        print(f"baseline (torch + model): peak RSS {base_rss:,.0f} MiB")

        common = ["--data", tmp / "data", "--json", "--device", "cpu"]
        res, wall, rss = run(
            [*plc, "eval", ckpt, "--lang", "vi", "--seqs", str(a.eval_seqs), *common], a.threads
        )
        print(f"eval: {a.eval_seqs} × {a.context:,} tokens, {res['tokens_per_s']:,.0f} tokens/s "
              f"({res['seconds']:.1f} s of {wall:.1f} s wall), peak RSS {rss:,.0f} MiB")  # fmt: skip

        seqs = ["--dormant-seqs", str(a.dormant_seqs), "--entropy-seqs", str(a.entropy_seqs)]
        # The parts as before issue 33's measures; "all parts" has them.
        NEWER = ["--no-features", "--no-perturb", "--no-distance"]
        rates = {}
        for name, flags in (
            ("dormant + ranks", ["--no-entropy", "--no-params", *NEWER]),
            ("entropy", ["--no-dormant", "--no-ranks", "--no-params", *NEWER]),
            ("all parts", []),
        ):
            out = tmp / name.replace(" ", "")
            res, wall, rss = run(
                [*plc, "diagnose", ckpt, "--metrics", out, *seqs, *flags, *common], a.threads
            )
            n = {"dormant + ranks": a.dormant_seqs, "entropy": a.entropy_seqs}.get(name)
            per = f", {res['seconds'] / n:.2f} s/window" if n else ""
            if n:
                rates[name] = res["seconds"] / n
            print(f"diagnose {name}: {res['seconds']:.1f} s ({wall:.1f} s wall){per}, "
                  f"peak RSS {rss:,.0f} MiB")  # fmt: skip
        paper = 256 * rates["dormant + ranks"] + 512 * rates["entropy"]
        print(f"diagnose at the paper's 256 + 512 windows: about {paper / 60:.0f} min")


if __name__ == "__main__":
    main()
