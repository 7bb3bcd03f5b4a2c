"""`plc demo`: the continual protocol end to end on the embedded corpus, at a CPU preset.

It writes the plan's Makefile into the output folder (so `make -C DIR` reruns or extends it with
plain `plc` processes) and runs the same jobs in two worker processes that keep torch imported.
At this scale the probe's AUC moves by about ±2 % from cycle to cycle by chance alone: the demo
shows the protocol's mechanics, not evidence of plasticity loss.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from plc.plan import Job, Plan, build_plan, write_plan
from plc.runner import Execute, JobDone, run_plan, run_subprocess

# Relative cost of a job, for the progress bar's ETA (a task's training is 1).
WEIGHTS = {"train": 1.0, "probe": 1.2, "diagnose": 0.6, "analysis": 0.5, "data": 0.3, "init": 0.3}

CAVEAT = (
    "At laptop scale the probe AUC moves by several percent from probe to probe, much of it from "
    "which language was trained just before the probe (App. B) and the rest by chance (about "
    "±2 % with tiny models over 60 cycles): this run shows the protocol's mechanics, not "
    "evidence of plasticity loss. The paper's onsets need 5B-token tasks, models of millions of "
    "parameters and dozens of cycles (examples/paper)."
)


@dataclass
class DemoResult:
    out_dir: str
    makefile: str
    seconds: float
    jobs: int
    ran: int
    skipped: int
    sizes: list[str]
    cycles: int
    preset: str
    onsets: list[dict] = field(default_factory=list)  # size, n_params, probes, onset, onset_tokens
    law: str | None = None  # the log-log fit (eq. 2 form), when it could be fitted
    fits: list[dict] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    report: str | None = None  # the study as one HTML page (plc report)
    control_report: str | None = None  # the positive control's page (a study of its own)
    removed: list[str] = field(default_factory=list)  # checkpoints removed (no --keep-checkpoints)
    control: dict | None = None  # the positive control's result (see _control)
    caveat: str = CAVEAT


def demo(
    out: str | os.PathLike = "demo",
    *,
    preset: str = "cpu",
    sizes: list[str] | None = None,
    cycles: int | None = None,
    probe_after: list[str] | None = None,
    seed: int = 0,
    workers: int = 2,
    control: list[str] | None = None,
    keep_checkpoints: bool = False,
    execute: Execute = run_subprocess,
    on_start: Callable[[Plan, float], None] | None = None,
    on_done: Callable[[JobDone, float], None] | None = None,
) -> DemoResult:
    """Plan and run the continual protocol (sizes and cycles default to the preset's).

    Beside it runs the positive control (`plc plan control`, Markov-chain tasks in which small
    models certainly lose plasticity) for the `control` sizes (default nano; [] for none), in
    OUT/control, so the demo shows plc detecting plasticity loss where it is there.

    `execute` runs one job's `plc` command (a fresh process each by default; the command line
    runs them inside its worker processes). `on_start(plan, total_work)` and
    `on_done(job, work)` report progress (work in units of one training task).

    Unless `keep_checkpoints`, only each run's last checkpoint stays (the report's provenance and
    a longer run start from it); the others are removed at the end, and the Makefiles name them
    secondary, so neither `make` nor a rerun retrains them while what was made from them stands."""
    out = Path(out)
    plan = build_plan(
        "continual",
        sizes=sizes,
        cycles=cycles,
        preset=preset,
        probe_after=probe_after,  # None: the protocol's default (plc.protocol)
        diagnose_every=1,
        data=str(out / "data"),
        out_dir=str(out),
        seeds=[seed],
    )
    makefile, _ = write_plan(
        plan, out / "Makefile", force=True, epilogue=_secondary_rule(plan, keep_checkpoints)
    )
    sizes_control = ["nano"] if control is None else list(control)
    jobs = list(plan.jobs)
    if sizes_control:
        positive = build_plan(
            "control",
            sizes=sizes_control,
            seeds=[seed],
            data=str(out / "control" / "data"),
            out_dir=str(out / "control"),
        )
        write_plan(
            positive,
            out / "control" / "Makefile",
            force=True,
            epilogue=_secondary_rule(positive, keep_checkpoints),
        )
        jobs += positive.jobs
    secondary = set() if keep_checkpoints else _intermediate_checkpoints(jobs)
    # one pool for both graphs: the workers stay busy
    both = replace(plan, jobs=_to_run(jobs, secondary))
    if on_start:
        on_start(both, sum(WEIGHTS[j.stage] for j in jobs))

    t0 = time.perf_counter()
    done = run_plan(
        both,
        workers=workers,
        log_dir=out / "logs",
        execute=execute,
        on_done=(lambda d: on_done(d, WEIGHTS[d.job.stage])) if on_done else None,
    )
    res = DemoResult(
        out_dir=str(out),
        makefile=str(makefile),
        seconds=time.perf_counter() - t0,
        jobs=len(jobs),
        ran=sum(not d.skipped for d in done),
        skipped=len(jobs) - sum(not d.skipped for d in done),
        sizes=plan.sizes,
        cycles=plan.cycles,
        preset=preset,
        figures=[
            j.output for j in plan.jobs if j.stage == "analysis" and j.output.endswith(".png")
        ],
    )
    res.removed = [t for t in sorted(secondary) if Path(t).exists()]
    for t in res.removed:
        Path(t).unlink()
    _summarise(res, out / "onset.parquet")
    if sizes_control:
        res.control = _control(sorted((out / "control" / "metrics").glob("probe-*.parquet")))
    from plc.report import report

    res.report = report(out, out / "report.html", force=True).path
    if sizes_control:
        res.control_report = report(
            out / "control", out / "control" / "report.html", force=True
        ).path
    return res


def _intermediate_checkpoints(jobs: list[Job]) -> set[str]:
    """The checkpoints a later task trains from: all but each run's last."""
    return {d for j in jobs if j.stage == "train" for d in j.inputs if d.endswith(".pt")}


def _secondary_rule(plan: Plan, keep_checkpoints: bool) -> str:
    """Make's rule for the checkpoints the demo removes: secondary files are remade only when
    something that needs them must be (the same rule as `_to_run`)."""
    if keep_checkpoints:
        return ""
    runs = plan.out_dir.rstrip("/") + "/"
    names = sorted(_intermediate_checkpoints(plan.jobs))
    names = ["$(RUNS)/" + n[len(runs) :] if n.startswith(runs) else n for n in names]
    return (
        "\n# plc demo keeps each run's last checkpoint only (--keep-checkpoints keeps all): make"
        "\n# retrains the others only where something made from them is missing.\n"
        f".SECONDARY: {' '.join(names)}\n"
    )


def _to_run(jobs: list[Job], secondary: set[str]) -> list[Job]:
    """The jobs to run: those whose target is missing, except a missing secondary checkpoint that
    no job to run needs (Make's rule), so a rerun does not retrain the removed checkpoints."""
    must = {j.output for j in jobs if j.output not in secondary and not Path(j.output).exists()}
    while True:
        needed = {d for j in jobs if j.output in must for d in j.inputs} & secondary
        new = {d for d in needed if not Path(d).exists()} - must
        if not new:
            return [j for j in jobs if j.output in must]
        must |= new


def _control(probe_files: list[Path]) -> dict:
    """The positive control's verdict per run as fit-onset gives it on every probe (eq. 1 against
    the first probe): the onset with its p-value and interval, or why there is none; beside it the
    AUC change at the last probe, in % and in noise SDs of the series."""
    from plc.onset import ALPHA, assess_onset, probe_series, read_probes

    runs = []
    for s in probe_series(read_probes(probe_files), "first", None):
        ev = assess_onset(s)
        runs.append(
            {
                "run_id": s.run_id,
                "size": s.size,
                "probes": len(s.value),
                "last_task": s.task_index[-1],
                "rise_pct": s.value[-1],
                "noise_sd_pct": ev.noise_sd,
                "rho": ev.rho,
                "detected": ev.detected,
                "onset": float(ev.minimum_task) if ev.detected else None,
                "at_start": ev.at_start,
                "p_value": ev.p_value,
                "onset_lo": ev.onset_lo,
                "onset_hi": ev.onset_hi,
                "minimum_task": ev.minimum_task,
                "no_onset": ev.no_onset,
            }
        )
    return {"alpha": ALPHA, "runs": runs}


def _summarise(res: DemoResult, onset_table: Path) -> None:
    """Onset per size and the log-log law, from the onset table the plan's fit-onset wrote."""
    import polars as pl

    from plc.onset import fit_onset_or_runs

    if not onset_table.exists():  # one probe per run: no onset to find
        return
    res.onsets = pl.read_parquet(onset_table).to_dicts()
    # The exponent's interval: refits on runs resampled with their onset distributions.
    fitted = fit_onset_or_runs([onset_table], models=["loglog"], bootstrap=1000)
    res.fits = fitted.to_dict()["fits"]
    if fitted.law is None:
        res.law = f"(no fit: {fitted.fits_skipped})"
    else:
        res.law = f"{fitted.law}; {fitted.exponent}"
