"""`run_study`: plans written, run and read — what `plc demo` and the examples' runners share.

Each plan is written into its folder (its Makefile or Snakefile and plan.json, so `make` reruns or
extends it with plain `plc` processes), the jobs of all of them run in one pool of workers
(plc.runner: a job whose file exists is skipped, so a rerun continues), and each is then read as
`plc fit-onset` reads it: its runs judged with the plan's settings (plc.study.verdicts) and the
fits of Table V made where they can be (`read_study`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from plc.onset.fit import MODELS
from plc.onset.table import OnsetResult
from plc.plan.files import write_plan
from plc.plan.jobs import Job, Plan
from plc.runner import Execute, JobDone, run_plan, run_subprocess
from plc.study.onsets import fit_judged
from plc.study.verdicts import Judged, judge, verdict_options


@dataclass
class StudyRun:
    """One plan of a run_study: where it was written, and how it reads."""

    plan: Plan
    makefile: str
    judged: Judged | None = None  # None: no probe yet
    onsets: OnsetResult | None = None  # the verdicts with the fits (or why none)


@dataclass
class StudyRuns:
    runs: list[StudyRun]
    done: list[JobDone] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the jobs
    cpu_hours: float = 0.0  # this process's and its finished workers'

    def cost(self, workers: int) -> str:
        jobs = sum(len(r.plan.jobs) for r in self.runs)
        return (
            f"{jobs} jobs, {workers} workers: {self.seconds / 60:.1f} min wall, "
            f"{self.cpu_hours:.2f} CPU-hours."
        )


def run_study(
    plans: Plan | Sequence[Plan],
    *,
    workers: int = 2,
    execute: Execute = run_subprocess,
    log_dir: str | os.PathLike | None = None,
    epilogue: Callable[[Plan], str] | None = None,
    jobs: Callable[[list[Job]], list[Job]] | None = None,
    models: Sequence[str] = ("loglog",),
    bootstrap: int | None = 1000,
    read: bool = True,
    on_start: Callable[[Plan, list[Job]], None] | None = None,
    on_done: Callable[[JobDone], None] | None = None,
) -> StudyRuns:
    """Write each plan (a Makefile in its out_dir, with `epilogue(plan)` appended), run the jobs
    of all of them in one pool (`jobs` picks those to run, by default all), then, if `read`,
    read each (`read_study`: its verdicts, and the fits of `models` with `bootstrap`
    resamples). Logs go to
    `log_dir` (default: the first plan's out_dir/logs). `on_start(plan, jobs)` gets the combined
    plan before the pool starts."""
    plans = [plans] if isinstance(plans, Plan) else list(plans)
    runs = []
    for plan in plans:
        makefile = Path(plan.out_dir) / "Makefile"
        makefile.parent.mkdir(parents=True, exist_ok=True)
        extra = epilogue(plan) if epilogue else ""
        written, _ = write_plan(plan, makefile, force=True, epilogue=extra)
        runs.append(StudyRun(plan, str(written)))
    every = [j for plan in plans for j in plan.jobs]
    combined = replace(plans[0], jobs=jobs(every) if jobs else every)
    if on_start:
        on_start(combined, every)
    t0, cpu0 = time.perf_counter(), os.times()
    done = run_plan(
        combined,
        workers=workers,
        log_dir=log_dir or Path(plans[0].out_dir) / "logs",
        execute=execute,
        on_done=on_done,
    )
    result = StudyRuns(runs, done, time.perf_counter() - t0)
    result.cpu_hours = (sum(os.times()[:4]) - sum(cpu0[:4])) / 3600
    for r in runs if read else []:
        r.judged, r.onsets = read_study(r.plan, models=models, bootstrap=bootstrap)
    return result


def read_study(
    plan: Plan,
    *,
    models: Sequence[str] = MODELS,
    bootstrap: int | None = None,
    up_to: int | None = None,
) -> tuple[Judged | None, OnsetResult | None]:
    """A plan's runs as its own fit-onset job reads them — the probe files its jobs wrote (those
    of tasks up to `up_to`), judged with its settings — and the fits of `models` where they can
    be made (else the verdicts alone, with the reason); (None, None) before the first probe."""
    probes = [
        j.output
        for j in plan.jobs
        if j.stage == "probe" and Path(j.output).exists() and (up_to is None or j.task <= up_to)
    ]
    if not probes:
        return None, None
    judged = judge(probes, verdict_options(plan))
    if not judged.runs:
        return judged, None
    return judged, fit_judged(judged, list(models), bootstrap=bootstrap, or_runs=True)
