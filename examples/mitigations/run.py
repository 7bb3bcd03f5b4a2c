"""The remedies of §V-B on the positive control: which one keeps a small model plastic?

    python examples/mitigations/run.py [OUT] [--sizes nano,micro] [--tasks 24] [--methods …]
    python examples/mitigations/run.py OUT --problem continual [--cycles 3] …

One `plc plan control --mitigation …` graph — the same Markov-chain tasks, probes and diagnoses
for every method — run by two in-process workers (the `plc demo` runner), then a table per size:
probe AUC at the last probe relative to the baseline's, the onset (or why there is none), the
rise in jitter units, mean |θ|, dormant %, lazy/collapsed heads, and the training loss cost.
Writes OUT/table.md. `--problem continual` runs the same methods on the real-language protocol
(the cpu preset, the embedded corpus, probes after zh, de and ru as the demo), where at this scale
no run loses plasticity: there a method can only show its cost.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from plc.cli import run_argv
from plc.onset.view import onset_cell
from plc.plan import build_plan
from plc.protocol import PAPER_PROBE_AFTER
from plc.store import read_metrics
from plc.study.run import run_study

METHODS = ["none", "wd:0.1", "clip:1", "l2init:0.1", "sp:0.8,0.01", "cbp:0.0001", "redo:0.025"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="mitigations")
    parser.add_argument("--sizes", default="nano,micro")
    parser.add_argument("--problem", choices=["control", "continual"], default="control")
    parser.add_argument("--tasks", type=int, default=24, help="control: Markov-chain tasks")
    parser.add_argument("--cycles", type=int, default=3, help="continual: cycles of eight")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", default=";".join(METHODS), help=";-separated, e.g. none;cbp")
    args = parser.parse_args()
    out = Path(args.out)

    length = (
        {"tasks": args.tasks}
        if args.problem == "control"
        else {"cycles": args.cycles, "probe_after": list(PAPER_PROBE_AFTER), "diagnose_every": 1}
    )
    plan = build_plan(
        args.problem,
        sizes=args.sizes.split(","),
        mitigations=args.methods.split(";"),
        data=str(out / "data"),
        out_dir=str(out),
        **length,
    )
    # Written with its plan.json (which plc status reads), run, and its runs judged as its
    # fit-onset job judges them (no fits: the comparison is per size).
    study = run_study(plan, workers=args.workers, execute=run_argv, models=[], bootstrap=None)
    seconds = study.seconds

    sizes = args.sizes.split(",")  # the runs of this call only (OUT may hold others)
    metrics = sorted(
        p for p in (out / "metrics").glob("*.parquet") if p.name.split("-")[1] in sizes
    )
    onsets = {r.run_id: r for r in study.runs[0].onsets.runs}
    probes = read_metrics(metrics, "probe").filter(~pl.col("from_scratch"))
    diag = read_metrics(metrics, "diagnose").filter(pl.col("layer").is_null())
    train = read_metrics(metrics, "train")
    last_task = probes["task_index"].max()

    rows = []
    for run_id in sorted(onsets, key=lambda r: (sizes.index(r.split("-")[0]), r.count("-"), r)):
        r = onsets[run_id]
        run = probes.filter(pl.col("run_id") == run_id)
        # One AUC per (checkpoint, probe seed); the checkpoint's is their mean.
        per_ckpt = run.group_by("task_index", "probe_seed").agg(pl.col("auc").first())
        per_ckpt = per_ckpt.group_by("task_index").agg(pl.col("auc").mean())
        auc = per_ckpt.filter(pl.col("task_index") == last_task)["auc"][0]
        d = diag.filter((pl.col("run_id") == run_id) & (pl.col("task_index") == last_task))
        value = {m: d.filter(pl.col("metric") == m)["value"].mean() for m in d["metric"].unique()}
        t = train.filter(pl.col("run_id") == run_id)
        # The loss at the end of each task, averaged over the run's last quarter of tasks.
        ends = t.group_by("task_index").agg(pl.col("loss").last()).sort("task_index")
        late = ends.filter(pl.col("task_index") > ends.height * 3 // 4)["loss"].mean()
        rows.append(
            {
                "run": run_id,
                "size": r.size,
                # The run id's tag names the method as `--mitigation` spelt it (sp0.8_0.01).
                "method": run_id.split("-", 2)[2] if run_id.count("-") >= 2 else "baseline",
                "auc_last": auc,
                "auc_mean": per_ckpt["auc"].mean(),
                "onset": "none" if r.onset is None else onset_cell(r),
                "no_onset": r.no_onset or "",
                "rise_jitter": r.rise_jitter,
                "rate": r.rate,
                "rate_se": r.rate_se,
                "param_abs_mean": value.get("param_abs_mean"),
                "dormant_pct": value.get("dormant_pct"),
                "lazy_pct": value.get("lazy_pct"),
                "collapsed_pct": value.get("collapsed_pct"),
                "late_task_loss": late,
            }
        )
    table = pl.DataFrame(rows)
    base = {r["size"]: r for r in rows if r["method"] == "baseline"}
    lines = [
        f"| size | method | AUC at task {last_task} vs baseline | mean AUC vs baseline | "
        "onset [95 %] | rise / jitter | rate (%/task ± SE) | mean abs θ | dormant % | "
        "lazy / collapsed % | late task loss (Δ) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        onset = r["onset"] if r["onset"] != "none" else f"none ({r['no_onset']})"
        b = base[r["size"]]

        def num(value, spec: str) -> str:  # a measure a run does not have (too few probes): –
            return "–" if value is None else format(value, spec)

        lines.append(
            f"| {r['size']} | {r['method']} | {100 * (r['auc_last'] / b['auc_last'] - 1):+.1f} % | "
            f"{100 * (r['auc_mean'] / b['auc_mean'] - 1):+.1f} % | "
            f"{onset} | {num(r['rise_jitter'], '.1f')} | "
            f"{num(r['rate'], '+.2f')} ± {num(r['rate_se'], '.2f')} | "
            f"{num(r['param_abs_mean'], '.3f')} | {num(r['dormant_pct'], '.1f')} | "
            f"{num(r['lazy_pct'], '.0f')} / {num(r['collapsed_pct'], '.0f')} | "
            f"{r['late_task_loss']:.3f} ({r['late_task_loss'] - b['late_task_loss']:+.3f}) |"
        )
    text = (
        "\n".join(lines) + f"\n\n{len(plan.jobs)} jobs; this call ran for {seconds / 60:.1f} min.\n"
    )
    (out / "table.md").write_text(text)
    table.write_csv(out / "table.csv")
    print(text)


if __name__ == "__main__":  # the workers are spawned: they import this file
    main()
