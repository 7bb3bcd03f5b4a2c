"""`plc demo`: the continual protocol end to end on the embedded corpus, at a CPU preset.

It writes the plan's Makefile into the output folder (so `make -C DIR` reruns or extends it with
plain `plc` processes) and runs the same jobs in two worker processes that keep torch imported.
At this scale the probe's AUC moves by about ±2 % from cycle to cycle by chance alone: the demo
shows the protocol's mechanics, not evidence of plasticity loss.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from plc.onset.table import RunOnset
from plc.plan import Job, Plan, build_plan
from plc.plan.make import PLAIN, make_path
from plc.runner import Execute, JobDone, run_subprocess
from plc.study.run import StudyRun, run_study

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
class ControlRun:
    """A run of the positive control: its verdict, and the AUC change at its last probe."""

    run: RunOnset
    last_task: int
    rise_pct: float  # eq. 1 at the last probe, against the first probe


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
    onsets: list[RunOnset] = field(default_factory=list)  # the study's verdict per run
    law: str | None = None  # the log-log fit (eq. 2 form), or why there is none
    fits: list[dict] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    report: str | None = None  # the study as one HTML page (plc report)
    control_report: str | None = None  # the positive control's page (a study of its own)
    removed: list[str] = field(default_factory=list)  # checkpoints removed (no --keep-checkpoints)
    control: list[ControlRun] = field(default_factory=list)  # the positive control's runs
    notes: list[str] = field(default_factory=list)  # what the readings left out
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
    estimator: str | None = None,
    alpha: float | None = None,
    execute: Execute = run_subprocess,
    on_start: Callable[[Plan, float], None] | None = None,
    on_done: Callable[[JobDone, float], None] | None = None,
) -> DemoResult:
    """Plan and run the continual protocol (sizes and cycles default to the preset's).

    Beside it runs the positive control (`plc plan control`, Markov-chain tasks in which small
    models certainly lose plasticity) for the `control` sizes (default nano; [] for none), in
    OUT/control, so the demo shows plc detecting plasticity loss where it is there. `estimator`
    and `alpha` judge both studies' runs (their plans record them; default: the protocol's).

    `execute` runs one job's `plc` command (a fresh process each by default; the command line
    runs them inside its worker processes). `on_start(plan, total_work)` and
    `on_done(job, work)` report progress (work in units of one training task).

    Unless `keep_checkpoints`, only each run's last checkpoint stays (the report's provenance and
    a longer run start from it); the others are removed at the end, and the Makefiles name them
    secondary, so neither `make` nor a rerun retrains them while what was made from them stands."""
    out = Path(out)
    judging = {k: v for k, v in (("estimator", estimator), ("alpha", alpha)) if v is not None}
    plans = [
        build_plan(
            "continual",
            sizes=sizes,
            cycles=cycles,
            preset=preset,
            probe_after=probe_after,  # None: the protocol's default (plc.protocol)
            diagnose_every=1,
            data=str(out / "data"),
            out_dir=str(out),
            seeds=[seed],
            **judging,
        )
    ]
    sizes_control = ["nano"] if control is None else list(control)
    if sizes_control:
        plans.append(
            build_plan(
                "control",
                sizes=sizes_control,
                seeds=[seed],
                data=str(out / "control" / "data"),
                out_dir=str(out / "control"),
                **judging,
            )
        )
    every = [j for plan in plans for j in plan.jobs]
    secondary = set() if keep_checkpoints else _intermediate_checkpoints(every)
    study = run_study(  # one pool for both graphs: the workers stay busy
        plans,
        workers=workers,
        execute=execute,
        log_dir=out / "logs",
        epilogue=lambda plan: _secondary_rule(plan, keep_checkpoints),
        jobs=lambda jobs: _to_run(jobs, secondary),
        on_start=(lambda plan, _: on_start(plan, sum(WEIGHTS[j.stage] for j in every)))
        if on_start
        else None,
        on_done=(lambda d: on_done(d, WEIGHTS[d.job.stage])) if on_done else None,
    )
    main = study.runs[0]
    res = DemoResult(
        out_dir=str(out),
        makefile=main.makefile,
        seconds=study.seconds,
        jobs=len(every),
        ran=sum(not d.skipped for d in study.done),
        skipped=len(every) - sum(not d.skipped for d in study.done),
        sizes=main.plan.sizes,
        cycles=main.plan.cycles,
        preset=preset,
        figures=[
            j.output for j in main.plan.jobs if j.stage == "analysis" and j.output.endswith(".png")
        ],
    )
    res.removed = [t for t in sorted(secondary) if Path(t).exists()]
    for t in res.removed:
        Path(t).unlink()
    _summarise(res, main)
    if sizes_control:
        res.control = _control(study.runs[1])
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
    # $(RUNS) is defined only where the folder is a plain word (plc.plan.make); else spelled out.
    short = PLAIN.fullmatch(plan.out_dir) is not None
    names = [
        "$(RUNS)/" + n[len(runs) :] if short and n.startswith(runs) else make_path(n) for n in names
    ]
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


def _summarise(res: DemoResult, main: StudyRun) -> None:
    """The study's verdict per run and the log-log law with its exponent's interval (the fits
    refitted on runs resampled with their onset distributions)."""
    if main.judged is not None:
        res.notes += main.judged.notes
    if main.onsets is None:  # no probes: no onset to find
        return
    res.onsets = main.onsets.runs
    res.fits = main.onsets.to_dict()["fits"]
    if main.onsets.law is None:
        res.law = f"(no fit: {main.onsets.fits_skipped})"
    else:
        res.law = f"{main.onsets.law}; {main.onsets.exponent}"


def _control(control: StudyRun) -> list[ControlRun]:
    """The positive control's verdict per run (the study's, on every probe, eq. 1 against the
    first probe) with the AUC change at its last probe."""
    if control.judged is None:
        return []
    return [
        ControlRun(control.judged.of(s.run_id), s.task_index[-1], s.value[-1])
        for s in control.judged.series
    ]
