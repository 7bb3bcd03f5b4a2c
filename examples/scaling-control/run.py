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
from pathlib import Path

from plc.cli import run_argv
from plc.onset.view import study_markdown
from plc.plan import build_plan
from plc.study.run import run_study


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
    # Written with its plan.json (which plc status reads), run, and read as its fit-onset does,
    # with bootstrap intervals; fewer than three sizes with an onset: the runs, and why no law.
    study = run_study(plan, workers=args.workers, execute=run_argv)
    res = study.runs[0].onsets
    (out / "onset.json").write_text(json.dumps(res.to_dict(), indent=1, default=str))
    text = "\n".join([*study_markdown(res, sizes), "", study.cost(args.workers)]) + "\n"
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":  # the workers are spawned: they import this file
    main()
