"""Does the onset of plasticity loss move with model size? Eq. 2 on the transfer control.

    python examples/onset-law-control/run.py [OUT] [--sizes nano,L2-d64,L3-d64,L1-d128]
                                             [--seeds 0,1,2,3,4] [--tasks 48] [--workers 2]
                                             [--shared 0.3] [--analyse-only]

One `plc plan control --shared 0.3 --probe-repeats 1 --diagnose-every 0` graph — every size and
seed on the same chains g01…, which share one map G with the probe chain g00, so training first
helps the probe (the AUC falls) and plasticity loss later shows as a rise: an onset inside the
run — run by in-process workers (the `plc demo` runner; `make -j2` on the plan's Makefile gives
the same files). The workers advance every run in turn, so a run stopped early leaves all runs at
about the same task; a rerun with a larger --tasks continues them (chains and probes keep their
names below 100 tasks). Then `plc fit-onset --probe-after all` with bootstrap intervals: per run
the onset [95 %] or why there is none, and the rate of loss after it; per size the pooled onset;
the log-log law with the interval of its exponent; the rate's own log-log slope beside it.
Writes OUT/table.md, OUT/onset.json and the plan's figures. One probe seed per checkpoint and no
diagnostics: the checkpoint-to-checkpoint jitter dominates the probe seeds' spread
(shared/reference/positive-control.md), and the CPU goes to seeds and tasks instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from plc.cli import run_argv
from plc.onset import fit_onset_or_runs
from plc.onset.fit import rate_law
from plc.onset.view import run_markdown
from plc.plan import build_plan, write_plan
from plc.runner import run_plan


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="onset-law-control")
    parser.add_argument("--sizes", default="nano,L2-d64,L3-d64,L1-d128")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--tasks", type=int, default=48)
    parser.add_argument("--shared", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--analyse-only", action="store_true", help="only fit what is there")
    args = parser.parse_args()
    out = Path(args.out)
    sizes = args.sizes.split(",")

    plan = build_plan(
        "control",
        sizes=sizes,
        seeds=[int(s) for s in args.seeds.split(",")],
        tasks=args.tasks,
        shared=args.shared,
        probe_repeats=1,
        diagnose_every=0,
        data=str(out / "data"),
        out_dir=str(out),
    )
    cost = ""
    if not args.analyse_only:
        write_plan(plan, out / "Makefile", force=True)  # and plan.json, which plc status reads
        t0, cpu0 = time.perf_counter(), os.times()
        run_plan(plan, workers=args.workers, log_dir=out / "logs", execute=run_argv)
        wall = time.perf_counter() - t0
        cpu = sum(os.times()[:4]) - sum(cpu0[:4])  # this process and its finished workers
        cost = (
            f"{len(plan.jobs)} jobs, {args.workers} workers: {wall / 60:.1f} min wall, "
            f"{cpu / 3600:.2f} CPU-hours (this invocation)."
        )
    print(analyse(out, sizes, args.tasks, cost))


def analyse(out: Path, sizes: list[str], tasks: int, cost: str) -> str:
    # Only probes up to the task every run reached: an interrupted study is read at one horizon.
    metrics = sorted((out / "metrics").glob("probe-*.parquet"))
    last: dict[str, int] = {}
    for m in metrics:
        run, task = re.match(r"probe-(.+)-t(\d+)-", m.name).groups()
        last[run] = max(last.get(run, 0), int(task))
    horizon = min([tasks, *last.values()])
    metrics = [m for m in metrics if int(re.search(r"-t(\d+)-", m.name).group(1)) <= horizon]
    # Fewer than three sizes with an onset: the runs, with the reason there is no law.
    res = fit_onset_or_runs(metrics, models=["loglog"], probe_after=None, bootstrap=1000)
    (out / "onset.json").write_text(json.dumps(res.to_dict(), indent=1, default=str))

    lines = [
        f"Horizon: {horizon} tasks (every run probed up to it).",
        "",
    ]
    order = {s: i for i, s in enumerate(sizes)}
    res.runs.sort(key=lambda r: (order.get(r.size, 99), r.run_id))
    runs = res.runs
    lines += run_markdown(res)  # fit-onset's own columns: onset [interval], p, rise, rate
    lines += [
        "",
        "| size | runs with an onset | mean onset ± SD | mean rate of loss (%/task ± SD) |",
    ]
    lines += ["|---|---|---:|---|"]
    for size in sizes:
        mine = [r for r in runs if r.size == size]
        onsets = [r.onset for r in mine if r.onset is not None]
        rates = [r.rate for r in mine if r.rate is not None]
        mean_onset = (
            f"{np.mean(onsets):.1f} ± {np.std(onsets, ddof=1):.1f}"
            if len(onsets) > 1
            else (f"{onsets[0]:g}" if onsets else "–")
        )
        spread = f"{np.mean(rates):+.2f} ± {np.std(rates, ddof=1):.2f}" if len(rates) > 1 else "–"
        lines.append(f"| {size} | {len(onsets)} of {len(mine)} | {mean_onset} | {spread} |")
    law = res.law and f"{res.law}; {res.exponent}"
    lines += ["", f"Log-log law of the onset: {law or f'no fit ({res.fits_skipped})'}"]
    # The rate of loss after the onset, beside it: its own log-log slope over every run, with the
    # regression's standard error and a t interval.
    rates = rate_law([r.n_params for r in runs], [r.rate for r in runs])
    if rates is not None:
        lines.append(str(rates))
    if cost:
        lines += ["", cost]
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


if __name__ == "__main__":  # the workers are spawned: they import this file
    main()
