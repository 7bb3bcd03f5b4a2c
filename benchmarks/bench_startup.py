"""CLI start-up: wall-clock seconds of light `plc` commands, each in a fresh Python process.

    python benchmarks/bench_startup.py [--repeat 5] [--json]

Commands: `plc --help`, `plc sizes`, `plc fit-onset --help`, `plc plot --help`, and for scale a
bare `python -c pass`. The figure is the fastest of --repeat runs (the least disturbed by other
processes). The goal is 0.5 s or less on a quiet machine; tests/test_cli.py checks the cause of a
fast start (no heavy library imported) rather than the time, which a busy machine inflates.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

COMMANDS = (["--help"], ["sizes"], ["fit-onset", "--help"], ["plot", "--help"])


def fastest(argv: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per command; the fastest counts")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = ap.parse_args()
    rows = {"python -c pass": fastest([sys.executable, "-c", "pass"], args.repeat)}
    for cmd in COMMANDS:
        rows["plc " + " ".join(cmd)] = fastest([sys.executable, "-m", "plc", *cmd], args.repeat)
    if args.json:
        print(json.dumps({"seconds": rows, "repeat": args.repeat}))
        return
    print(f"fastest of {args.repeat} runs, fresh process each")
    print(f"{'command':<22} {'s':>6}")
    for name, seconds in rows.items():
        print(f"{name:<22} {seconds:>6.3f}")


if __name__ == "__main__":
    main()
