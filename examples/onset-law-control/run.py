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
from pathlib import Path

from plc.cli import run_argv
from plc.onset.view import study_markdown
from plc.plan import Plan, build_plan
from plc.study.run import read_study, run_study


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
    if not args.analyse_only:  # read below, at the horizon every run reached
        study = run_study(plan, workers=args.workers, execute=run_argv, read=False)
        cost = study.cost(args.workers) + " (this invocation)"
    print(analyse(plan, out, sizes, args.tasks, cost))


def analyse(plan: Plan, out: Path, sizes: list[str], tasks: int, cost: str) -> str:
    # Only probes up to the task every run reached: an interrupted study is read at one horizon.
    reached: dict[str, int] = {}
    for j in plan.jobs:
        if j.stage == "probe" and Path(j.output).exists():
            reached[j.run_id] = max(reached.get(j.run_id, 0), j.task)
    horizon = min([tasks, *reached.values()])
    _, res = read_study(plan, models=["loglog"], bootstrap=1000, up_to=horizon)
    (out / "onset.json").write_text(json.dumps(res.to_dict(), indent=1, default=str))
    lines = [f"Horizon: {horizon} tasks (every run probed up to it).", ""]
    lines += study_markdown(res, sizes)
    if cost:
        lines += ["", cost]
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


if __name__ == "__main__":  # the workers are spawned: they import this file
    main()
