"""Which continual-pretraining recipe delays plasticity loss? A study on the transfer control.

    python examples/recipes/run.py [OUT] [--sizes nano,L2-d64] [--seeds 0,1,2] [--tasks 48]
                                   [--methods "none;cosine;…"] [--workers 2] [--analyse-only]

One `plc plan control --shared 0.3 --probe-repeats 1 --diagnose-every 0` graph with one arm per
recipe (`--mitigation`, docs/recipes.md): the baseline (the paper's constant rate after a per-task
warm-up), cosine re-warm/re-decay (floor 0.1), WSD (the last 10 % of each task decays to 0),
replay of 5 % and 25 % of every batch from earlier chains, gradual transitions over the first
half of each task (64 of 128 steps), selective weight reinitialisation and embedding resets
(active forgetting) with their reference defaults — every size and seed on the same chains g01…,
which share one map with the probe chain g00: the probe AUC first falls (tasks teach the map) and
later rises (plasticity loss). The plan runs in-process (`plc demo`'s runner; `make -j2` on the
Makefile written beside the results gives the same files); a rerun continues what is missing.

Then `plc fit-onset --by method` (the noise model, α = 0.05), at the last task every run of the
plan was probed after: per size and arm the runs with an onset, the onset, the rate of loss after
the minimum and the probe AUC at that horizon over the from-scratch probe's, each as a mean over
the seeds with a 95 % t interval, and that AUC's difference from the baseline of the same seed
(the same initialisation, chains and probes: the seed-to-seed spread cancels); the figure (probe
AUC against tasks, one panel per size, the mean over seeds of each arm); OUT/table.md,
OUT/recipes.json, OUT/recipes.png, and OUT/cost.txt with a line per invocation.
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
from plc.plan import Plan, build_plan, write_plan
from plc.runner import run_plan

METHODS = "none;cosine;wsd;replay:0.05;replay:0.25;transition:64;swr;embreset"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="recipes")
    parser.add_argument("--sizes", default="nano,L2-d64")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tasks", type=int, default=48)
    parser.add_argument("--shared", type=float, default=0.3)
    parser.add_argument("--methods", default=METHODS, help="--mitigation arms, ';'-separated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--analyse-only", action="store_true", help="only read what is there")
    args = parser.parse_args()
    out = Path(args.out)
    plan = build_plan(
        "control",
        sizes=args.sizes.split(","),
        seeds=[int(s) for s in args.seeds.split(",")],
        tasks=args.tasks,
        shared=args.shared,
        probe_repeats=1,
        diagnose_every=0,
        mitigations=args.methods.split(";"),
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
        with open(out / "cost.txt", "a") as f:  # one line per invocation: a study run in stages
            f.write(f"--tasks {args.tasks} --sizes {args.sizes}: {cost}\n")
    print(analyse(out, plan, cost))


def _t_interval(values: list[float]) -> str:
    """mean [95 % t interval over the seeds]; the value alone for one seed."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return "–"
    if v.size == 1:
        return f"{v[0]:.3g}"
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return f"{v.mean():.3g} [{v.mean() - half:.3g}, {v.mean() + half:.3g}]"


def _horizon_aucs(metrics: list[Path], horizon: int) -> dict[str, float]:
    """Each run's probe AUC after task `horizon` over its from-scratch probe (< 1: the trained
    model learns the probe chain faster than a fresh one)."""
    import polars as pl

    frame = pl.concat(
        [pl.read_parquet(m).filter(pl.col("step") == 0).head(1) for m in metrics],
        how="diagonal_relaxed",
    )
    auc = {}
    for run in frame["run_id"].unique().to_list():
        mine = frame.filter(pl.col("run_id") == run)
        scratch = mine.filter(pl.col("from_scratch"))["auc"]
        last = mine.filter(~pl.col("from_scratch") & (pl.col("task_index") == horizon))["auc"]
        if len(scratch) and len(last):
            auc[run] = float(last[0] / scratch[0])
    return auc


def analyse(out: Path, plan: Plan, cost: str) -> str:
    """The table of every size and arm of `plan` at the last task all its runs were probed
    after; metric files of runs outside the plan (a size or arm dropped) are not read."""
    from plc.study import fit_onset

    runs = {r.run_id: r for r in plan.runs}
    metrics, last = [], dict.fromkeys(runs, 0)
    for m in sorted((out / "metrics").glob("probe-*.parquet")):
        run, task = re.match(r"probe-(.+)-t(\d+)-", m.name).groups()
        if run in runs:
            metrics.append(m)
            last[run] = max(last[run], int(task))
    horizon = min(last.values())
    metrics = [m for m in metrics if int(re.search(r"-t(\d+)-", m.name).group(1)) <= horizon]
    res = fit_onset(
        metrics, models=[], probe_after=None, by="method", normalize="alone", auc_from="0"
    )
    (out / "recipes.json").write_text(json.dumps(res.to_dict(), indent=1, default=str))
    auc = _horizon_aucs(metrics, horizon)
    onsets = {r.run_id: r for r in res.runs}
    # The baseline of the same size and seed: the same initialisation, chains and probes.
    arms = list(dict.fromkeys(r.method for r in plan.runs))
    base = {(r.size, r.seed): r.run_id for r in plan.runs if r.method == arms[0]}
    lines = [
        f"Horizon: {horizon} tasks (every run probed up to it).",
        "",
        "| size | arm | runs with an onset | onset (mean [95 %]) | rate of loss "
        "(%/task, mean [95 %]) | AUC at the horizon / scratch (mean [95 %]) | "
        "− the baseline's, same seed (mean [95 %]) |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in plan.sizes:
        for arm in arms:
            mine = [r for r in plan.runs if r.size == size and r.method == arm]
            fitted = [onsets[r.run_id] for r in mine if r.run_id in onsets]
            found = [f.onset for f in fitted if f.onset is not None]
            rates = [f.rate for f in fitted]
            aucs = [auc.get(r.run_id) for r in mine]
            paired = [
                auc[r.run_id] - auc[base[size, r.seed]]
                for r in mine
                if r.run_id in auc and auc.get(base[size, r.seed]) is not None
            ]
            label = fitted[0].method if fitted else arm or "none"
            lines.append(
                f"| {size} | {label} | {len(found)} of {len(mine)} "
                f"| {_t_interval(found)} | {_t_interval(rates)} | {_t_interval(aucs)} | "
                f"{'—' if arm == arms[0] else _t_interval(paired)} |"
            )
    _figure(out, metrics, plan.sizes, list(dict.fromkeys(r.method for r in res.runs)), horizon)
    if cost:
        lines += ["", cost]
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


def _figure(out: Path, metrics: list[Path], sizes: list[str], methods: list[str], horizon: int):
    """Probe AUC over the from-scratch probe's against tasks: one panel per size, each method's
    mean over its seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import polars as pl

    frame = pl.concat(
        [pl.read_parquet(m).filter(pl.col("step") == 0).head(1) for m in metrics],
        how="diagonal_relaxed",
    )
    scratch = frame.filter(pl.col("from_scratch")).select("run_id", pl.col("auc").alias("s"))
    rel = (
        frame.filter(~pl.col("from_scratch"))
        .join(scratch, on="run_id")
        .with_columns((pl.col("auc") / pl.col("s")).alias("rel"))
    )
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.2), sharey=True)
    for ax, size in zip(np.atleast_1d(axes), sizes, strict=True):
        for method in methods:
            mine = rel.filter((pl.col("size") == size) & (pl.col("method") == method))
            curve = mine.group_by("task_index").agg(pl.col("rel").mean()).sort("task_index")
            ax.plot(curve["task_index"], curve["rel"], marker=".", label=method)
        ax.set_title(f"{size}: probe AUC / from-scratch AUC (mean of seeds)")
        ax.set_xlabel("task")
        ax.set_xlim(0, horizon + 1)
    np.atleast_1d(axes)[0].set_ylabel("relative probe AUC (lower = learns faster)")
    np.atleast_1d(axes)[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "recipes.png", dpi=110)


if __name__ == "__main__":  # the workers are spawned: they import this file
    main()
