"""Does the onset of plasticity loss move with model size? The paper's claim, on the control.

    python examples/scaling-control/run.py [OUT] [--sizes nano,L2-d64,L1-d128,micro]
                                           [--seeds 0,1,2] [--tasks 48] [--workers 2]

One `plc plan control` graph — every size and seed on the same Markov-chain tasks, probes and
diagnoses — run by in-process workers (the `plc demo` runner; `make -j2` on the plan's Makefile
gives the same files), then `plc fit-onset` with bootstrap intervals: per run the onset [95 %]
or why there is none, and the rate of loss after it; per size the mean rate over seeds; the
log-log law with the interval of its exponent. Sizes between the presets are custom shapes
(`L<layers>-d<d_model>`). Writes OUT/table.md, OUT/onset.json and the plan's figures.
"""

from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("out", nargs="?", default="scaling-control")
    parser.add_argument("--sizes", default="nano,L2-d64,L1-d128,micro")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tasks", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    sizes = args.sizes.split(",")

    plan = build_plan(
        "control",
        sizes=sizes,
        seeds=[int(s) for s in args.seeds.split(",")],
        tasks=args.tasks,
        data=str(out / "data"),
        out_dir=str(out),
    )
    out.mkdir(parents=True, exist_ok=True)
    write_plan(plan, out / "Makefile", force=True)  # and plan.json, which plc status reads
    t0, cpu0 = time.perf_counter(), os.times()
    run_plan(plan, workers=args.workers, log_dir=out / "logs", execute=run_argv)
    wall = time.perf_counter() - t0
    cpu = sum(os.times()[:4]) - sum(cpu0[:4])  # this process and its finished workers

    metrics = sorted((out / "metrics").glob("probe-*.parquet"))
    # Fewer than three sizes with an onset: the runs, with the reason there is no law.
    res = fit_onset_or_runs(metrics, models=["loglog"], probe_after=None, bootstrap=1000)
    (out / "onset.json").write_text(json.dumps(res.to_dict(), indent=1, default=str))

    lines: list[str] = []
    order = {s: i for i, s in enumerate(sizes)}
    res.runs.sort(key=lambda r: (order.get(r.size, 99), r.run_id))
    runs = res.runs
    lines += run_markdown(res)  # fit-onset's own columns: onset [interval], p, rise, rate
    lines += ["", "| size | runs with an onset | mean onset | mean rate of loss (%/task ± SD) |"]
    lines += ["|---|---|---:|---|"]
    for size in sizes:
        mine = [r for r in runs if r.size == size]
        onsets = [r.onset for r in mine if r.onset is not None]
        rates = [r.rate for r in mine if r.rate is not None]
        mean_onset = f"{np.mean(onsets):.1f}" if onsets else "–"
        spread = f"{np.mean(rates):+.2f} ± {np.std(rates, ddof=1):.2f}" if len(rates) > 1 else "–"
        lines.append(f"| {size} | {len(onsets)} of {len(mine)} | {mean_onset} | {spread} |")
    law = res.law and f"{res.law}; {res.exponent}"
    lines += ["", f"Log-log law of the onset: {law or f'no fit ({res.fits_skipped})'}"]
    # The rate orders by size where the argmin may not (issue 14): its own log-log slope over
    # every run, with the regression's standard error and a t interval.
    rates = rate_law([r.n_params for r in runs], [r.rate for r in runs])
    if rates is not None:
        lines.append(str(rates))
    lines += [
        "",
        f"{len(plan.jobs)} jobs, {args.workers} workers: {wall / 60:.1f} min wall, "
        f"{cpu / 3600:.2f} CPU-hours.",
    ]
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":  # the workers are spawned: they import this file
    main()
