"""`plc status`: where a study stands, read from its files alone.

Whatever runs the plan (make, Snakemake, a shell loop), the study's state is in its files:
checkpoints `<folder>/cN.pt` (the last one per folder says the tasks done), metric files (probes,
diagnoses, training throughput), the resumable state a long job keeps beside its output
(`*.resume`), the temporary names of writes in progress (`.<name>.*.tmp`, `.<name>.partial`), and
the plan.json that `plc plan` wrote beside its Makefile or Snakefile, which says what is planned
(plc.study.files finds them). Each run's onset so far is the study's verdict (plc.study.verdicts),
the one every other reader gives.

A job leaves no trace while it runs unless it saves resumable state, so "running" means a recent
in-progress file and "stale" one older than `stale_minutes` (its job died or hangs).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc.errors import PlcError
from plc.onset.estimators import DETECTED
from plc.onset.inputs import read_finite
from plc.onset.table import RunOnset
from plc.onset.view import onset_cell
from plc.plan.jobs import Plan
from plc.protocol import CYCLE
from plc.store import checkpoint_meta, diverged, read_metrics
from plc.study.files import MetricFile, StudyFiles, find_study_files
from plc.study.verdicts import Judged, judge_study, verdict_options

if TYPE_CHECKING:
    import polars as pl

# The job an in-progress file belongs to: a metric file's run, or a checkpoint's number.
IN_PROGRESS_RUN = re.compile(r"^\.?(?:train|probe|diagnose)-(.+?)-t\d+-")
IN_PROGRESS_CHECKPOINT = re.compile(r"^\.?c(\d+)(-[A-Za-z0-9_]+)?\.pt[.]")
WATCHED = ("param_abs_mean", "dormant_pct", "lazy_pct", "collapsed_pct")  # shown per diagnose


@dataclass
class JobFile:
    """A file a job leaves while it works: resumable state, a temporary write, a partial store."""

    path: str
    what: str  # resume, tmp or partial
    minutes: float  # since it was last written
    stale: bool  # older than --stale-minutes: its job died or hangs
    run_id: str | None  # None for study-wide jobs (token stores)


@dataclass
class RunStatus:
    run_id: str  # "" for a planned run that has not started
    size: str
    n_params: int | None
    folder: str | None  # the checkpoint folder
    last_checkpoint: str | None
    tasks_done: int
    tasks_planned: int | None
    last_lang: str
    cycles_done: int
    cycles_planned: int | None
    probes_done: int
    probes_planned: int | None
    auc_change: float | None  # eq. 1 at the latest probe, in %
    auc_change_task: int | None
    onset: int | None  # task index of the onset so far
    onset_note: str  # the verdict as the tables read it: the onset, or none and why
    onset_lo: float | None = None  # the onset's interval, as fit-onset gives it
    onset_hi: float | None = None
    verdict: str = ""  # plc.onset.estimators.VERDICTS; "" before the run has probes
    last_diagnose: int | None = None  # task index
    diagnose: dict[str, float] = field(default_factory=dict)  # WATCHED values at last_diagnose
    tokens_per_s: float | None = None  # median of the latest complete task
    seconds_left: float | None = None
    state: str = ""  # done, running, stale, diverged, pending, not started, or "" (no plan)
    jobs: list[JobFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    diverged_task: int | None = None  # the task whose training diverged (its train metric file)


@dataclass
class StatusResult:
    directory: str
    plan: str | None
    runs: list[RunStatus]
    jobs: list[JobFile]  # in-progress files of no single run (token stores)
    stale_minutes: float
    seconds_left: float | None  # compute left over all runs, one job at a time
    checked_at: float  # Unix time of the reading
    nested: list[str] = field(default_factory=list)  # subfolders that are studies of their own
    notes: list[str] = field(default_factory=list)  # what was left out (non-finite values)


@dataclass
class PlannedWork:
    tasks: dict[str, int]  # checkpoint folder name → last task index
    probes: dict[str, set[str]]  # run id → probe metric file names
    cycle_length: int = len(CYCLE)  # distinct training languages (48 for the control's chains)
    runs: dict[str, tuple[str, str]] = field(default_factory=dict)  # folder name → (run id, size)


def planned_work(plan: Plan) -> PlannedWork:
    """Checkpoints and probes a plan names (its runs, and each job's stage, run id, task and
    output)."""
    tasks: dict[str, int] = {}
    probes: dict[str, set[str]] = {}
    names: dict[str, tuple[str, str]] = {}
    for run in plan.runs:
        folder = Path(run.folder).name
        names[folder] = (run.run_id, run.size)
        tasks[folder] = 0
        probes[run.run_id] = set()
    folder_of = {run.run_id: Path(run.folder).name for run in plan.runs}
    for job in plan.jobs:
        if job.stage == "train":
            # The job's target is its checkpoint, or (lr grid) its train metric file.
            out = Path(job.output)
            folder = out.parent.name if out.suffix == ".pt" else folder_of[job.run_id]
            tasks[folder] = max(tasks.get(folder, 0), job.task or 0)
        elif job.stage == "probe" and job.run_id is not None:
            probes.setdefault(job.run_id, set()).add(Path(job.output).name)
    return PlannedWork(tasks, probes, len(plan.cycle), names)


def _cycle(plan: PlannedWork | None) -> int:
    """Tasks per cycle: the plan's (a custom --cycle, the control's chains), else the paper's."""
    return plan.cycle_length if plan else len(CYCLE)


def _last_write(path: Path) -> float:
    """When a job last wrote to its file, or anywhere inside its folder (a partial store's chunks
    go to subfolders, leaving the top folder's own time at its creation)."""
    latest = path.stat().st_mtime
    if path.is_dir():
        for here, _, names in os.walk(path):
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    latest = max(latest, os.stat(os.path.join(here, name)).st_mtime)
    return latest


def _job_run(path: Path, folder_runs: dict[Path, str]) -> str | None:
    """The run an in-progress file belongs to, from its name or its checkpoint folder."""
    if m := IN_PROGRESS_RUN.match(path.name):
        return m.group(1)
    if IN_PROGRESS_CHECKPOINT.match(path.name):
        return folder_runs.get(path.parent, f"({path.parent.name})")
    return None


# --------------------------------------------------------------------------------- the command


def status(
    directory: str | os.PathLike = ".",
    *,
    stale_minutes: float = 30.0,
    estimator: str | None = None,
    alpha: float | None = None,
    window: int | None = None,
) -> StatusResult:
    """`plc status`: one row per run of the study in `directory`, from its files alone; each run's
    onset so far judged with the study's settings (the flags given, else its plan's)."""
    files = find_study_files(directory)
    plan = files.read_plan()
    options = verdict_options(plan, estimator=estimator, alpha=alpha, window=window)
    return study_status(files, plan, judge_study(files, options), stale_minutes=stale_minutes)


def study_status(
    files: StudyFiles, plan: Plan | None, judged: Judged, *, stale_minutes: float = 30.0
) -> StatusResult:
    """The status of the study whose files `find_study_files` found, its runs judged."""
    if not stale_minutes > 0:
        raise PlcError(f"--stale-minutes must be positive, got {stale_minutes}")
    work = planned_work(plan) if plan is not None else None
    now = time.time()
    notes = list(judged.notes)

    metas: dict[Path, dict[str, Any]] = {}
    problems: dict[Path, str] = {}
    for folder, ckpts in files.checkpoints.items():
        last = ckpts[max(ckpts)]
        try:
            metas[folder] = checkpoint_meta(last)
        except PlcError as e:
            problems[folder] = str(e)
    folder_runs = {f: str(m.get("run_id", f.name)) for f, m in metas.items()}

    run_ids = sorted(set(folder_runs.values()) | {m.run_id for m in files.metrics})
    runs: list[RunStatus] = []
    for run_id in run_ids:
        folders = [f for f, r in folder_runs.items() if r == run_id]
        folder = folders[0] if folders else None
        meta = metas.get(folder, {}) if folder else {}
        runs.append(_run_status(run_id, files, folder, meta, judged, work, notes))
    for folder, error in problems.items():
        runs.append(_unreadable_run(folder, files.checkpoints[folder], error, work))
    if work is not None:  # planned runs with no file yet (by checkpoint folder or by run id)
        seen = {Path(r.folder).name for r in runs if r.folder}
        ids = {r.run_id for r in runs}
        for name, last in sorted(work.tasks.items()):
            if name not in seen and work.runs[name][0] not in ids:
                runs.append(_not_started(name, last, work))

    study_jobs = []
    by_run = {r.run_id: r for r in runs}
    for path in files.in_progress:
        try:
            minutes = (now - _last_write(path)) / 60
        except FileNotFoundError:  # a write that finished since the walk
            continue
        run_id = _job_run(path, folder_runs)
        what = "resume" if path.name.endswith(".resume") else path.suffix.lstrip(".")
        job = JobFile(str(path), what, minutes, minutes > stale_minutes, run_id)
        if run_id in by_run:
            by_run[run_id].jobs.append(job)
        else:
            study_jobs.append(job)
    for r in runs:
        r.state = _state(r)
    left = [r.seconds_left for r in runs if r.state not in ("done", "diverged")]
    return StatusResult(
        directory=str(files.root),
        plan=str(files.plan) if files.plan else None,
        runs=runs,
        jobs=study_jobs,
        stale_minutes=stale_minutes,
        seconds_left=None if None in left else sum(left),
        checked_at=now,
        nested=[str(p) for p in files.nested],
        notes=notes,
    )


def _run_status(
    run_id: str,
    files: StudyFiles,
    folder: Path | None,
    meta: dict[str, Any],
    judged: Judged,
    plan: PlannedWork | None,
    notes: list[str],
) -> RunStatus:
    train = [m for m in files.metrics if m.run_id == run_id and m.kind == "train"]
    diag = [m for m in files.metrics if m.run_id == run_id and m.kind == "diagnose"]
    probe_files = [m for m in files.metrics if m.run_id == run_id and m.kind == "probe"]
    if folder is not None:
        last = max(files.checkpoints[folder])
        tasks_done = int(meta.get("task_index", last))
        history = meta.get("history") or []
        last_lang = str(history[-1].get("lang", "")) if history else ""
        last_ckpt = str(files.checkpoints[folder][last])
    else:  # a metrics folder alone: the latest train file says how far the run got
        tasks_done = max((m.task_index for m in train), default=0)
        last_lang = next((m.lang for m in train if m.task_index == tasks_done), "")
        last_ckpt, history = None, []
    size = str(meta.get("size") or "")
    n_params = meta.get("n_params")
    if (not size or n_params is None) and files.metrics:
        row = _first_row([m.path for m in files.metrics if m.run_id == run_id])
        size, n_params = size or str(row.get("size") or ""), n_params or row.get("n_params")

    tasks_planned = plan.tasks.get(folder.name) if plan and folder else None
    probes_planned = len(plan.probes.get(run_id, ())) if plan and run_id in plan.probes else None
    status = RunStatus(
        run_id=run_id,
        size=size,
        n_params=int(n_params) if n_params is not None else None,
        folder=str(folder) if folder else None,
        last_checkpoint=last_ckpt,
        tasks_done=tasks_done,
        tasks_planned=tasks_planned,
        last_lang=last_lang,
        cycles_done=tasks_done // _cycle(plan),
        cycles_planned=tasks_planned // _cycle(plan) if tasks_planned else None,
        probes_done=len({m.path.name for m in probe_files}),
        probes_planned=probes_planned,
        auc_change=None,
        auc_change_task=None,
        onset=None,
        onset_note="not yet (no probes)",
    )
    for m in train:  # a task after the last checkpoint that diverged left only its record
        after = m.task_index > tasks_done or folder is None and m.task_index == tasks_done
        if after and diverged(read_metrics([m.path])):
            status.diverged_task = m.task_index
    _probe_summary(status, judged, bool(probe_files))
    if diag:
        latest = max(diag, key=lambda m: m.task_index)
        status.last_diagnose = latest.task_index
        status.diagnose = _whole_model(read_finite([latest.path], "diagnose", notes))
    running = [m for m in files.progress if m.run_id == run_id and m.kind == "train"]
    _time_left(status, train, running, history)
    return status


def _first_row(paths: list[Path]) -> dict[str, Any]:
    import polars as pl

    return pl.read_parquet(paths[0], n_rows=1).row(0, named=True) if paths else {}


def _probe_summary(status: RunStatus, judged: Judged, probed: bool) -> None:
    """Latest AUC change (eq. 1) and the onset so far: the study's verdict on the run's probes
    (plc.study.verdicts), so status, fit-onset and the report never disagree."""
    series = next((s for s in judged.series if s.run_id == status.run_id), None)
    if series is None:
        if status.run_id in judged.unusable:
            status.onset_note = f"none ({judged.unusable[status.run_id]})"
        elif probed:
            status.onset_note = "not yet (from-scratch probe only)"
        return
    status.auc_change = series.value[-1]
    status.auc_change_task = series.task_index[-1]
    run: RunOnset = judged.of(status.run_id)
    status.verdict, status.onset_note = run.verdict, onset_cell(run)
    if run.verdict in DETECTED:
        status.onset, (_, status.onset_lo, status.onset_hi) = int(run.onset), run.drawn


def _whole_model(diag: pl.DataFrame) -> dict[str, float]:
    import polars as pl

    if diag.height == 0 or "metric" not in diag.columns:
        return {}
    whole = diag.filter(pl.col("layer").is_null() & pl.col("head").is_null())
    out = {}
    for metric in WATCHED:
        values = whole.filter(pl.col("metric") == metric)["value"]
        if values.len():
            out[metric] = float(values.mean())
    return out


def _time_left(
    status: RunStatus, train: list[MetricFile], running: list[MetricFile], history: list[dict]
) -> None:
    """Training time left at the measured rate: tasks and probes still to run (a probe trains as
    many tokens as a task under every preset), less the steps a task in progress has saved."""
    done = [m for m in train if m.task_index <= status.tasks_done]
    if not done:
        return
    latest = max(done, key=lambda m: m.task_index)
    rows = read_metrics([latest.path])
    if not {"tokens", "tokens_per_s"} <= set(rows.columns):  # a file of another plc: no rate
        return
    rates = [r for r in rows["tokens_per_s"].to_list() if r and math.isfinite(r)]
    if not rates:
        return
    status.tokens_per_s = statistics.median(rates)
    if status.tasks_planned is None or status.probes_planned is None:
        return
    task_tokens = float(history[-1]["tokens"]) if history else float(rows["tokens"].max())
    tasks_left = max(status.tasks_planned - status.tasks_done, 0)
    probes_left = max(status.probes_planned - status.probes_done, 0)
    tokens_left = (tasks_left + probes_left) * task_tokens
    for m in running:  # a task in progress saves its rows with its resumable state
        if m.task_index == status.tasks_done + 1 and tasks_left:
            saved = read_metrics([m.path])
            tokens_left -= float(saved["tokens"].max()) if "tokens" in saved.columns else 0.0
    status.seconds_left = max(tokens_left, 0.0) / status.tokens_per_s


def _unreadable_run(folder: Path, ckpts: dict[int, Path], error: str, plan) -> RunStatus:
    planned = plan.tasks.get(folder.name) if plan else None
    return RunStatus(
        run_id=f"({folder.name})",
        size="",
        n_params=None,
        folder=str(folder),
        last_checkpoint=str(ckpts[max(ckpts)]),
        tasks_done=max(ckpts),
        tasks_planned=planned,
        last_lang="",
        cycles_done=max(ckpts) // _cycle(plan),
        cycles_planned=planned // _cycle(plan) if planned else None,
        probes_done=0,
        probes_planned=None,
        auc_change=None,
        auc_change_task=None,
        onset=None,
        onset_note="",
        last_diagnose=None,
        problems=[error],
    )


def _not_started(folder: str, last: int, plan: PlannedWork) -> RunStatus:
    run_id, size = plan.runs[folder]
    return RunStatus(
        run_id=run_id,
        size=size,
        n_params=None,
        folder=None,
        last_checkpoint=None,
        tasks_done=0,
        tasks_planned=last,
        last_lang="",
        cycles_done=0,
        cycles_planned=last // plan.cycle_length,
        probes_done=0,
        probes_planned=None,
        auc_change=None,
        auc_change_task=None,
        onset=None,
        onset_note="not yet (no probes)",
        state="not started",
    )


def _state(r: RunStatus) -> str:
    if r.state == "not started" or r.problems:
        return r.state or "unreadable"
    if any(j.stale for j in r.jobs):
        return "stale"
    if r.jobs:
        return "running"
    if r.diverged_task is not None:
        return "diverged"
    if r.tasks_planned is None or r.probes_planned is None:
        return ""
    if r.tasks_done >= r.tasks_planned and r.probes_done >= r.probes_planned:
        return "done"
    return "pending"


def format_duration(seconds: float | None) -> str:
    """2 d 3 h, 4 h 05 min, 12 min, 40 s."""
    if seconds is None:
        return ""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    m = s // 60
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m:02d} min"
    return f"{h // 24} d {h % 24} h"


def run_rows(runs: Iterable[RunStatus]) -> list[dict[str, str]]:
    """The status table as text cells (the CLI's table and the report's use the same)."""
    out = []
    for r in runs:
        planned = f"/{r.tasks_planned}" if r.tasks_planned is not None else ""
        cyc = f"/{r.cycles_planned}" if r.cycles_planned is not None else ""
        last = (
            f"{Path(r.last_checkpoint).name} (task {r.tasks_done}{planned}"
            + (f", {r.last_lang})" if r.last_lang else ")")
            if r.last_checkpoint
            else ""
        )
        diag = ""
        if r.last_diagnose is not None:
            parts = []
            if "dormant_pct" in r.diagnose:
                parts.append(f"dormant {r.diagnose['dormant_pct']:.2f} %")
            if "param_abs_mean" in r.diagnose:
                parts.append(f"|θ| {r.diagnose['param_abs_mean']:.4g}")
            diag = f"task {r.last_diagnose}" + (": " + ", ".join(parts) if parts else "")
        out.append(
            {
                "run": r.run_id,
                "size": r.size,
                "last checkpoint": last,
                "cycles": f"{r.cycles_done}{cyc}",
                "probes": f"{r.probes_done}/{'?' if r.probes_planned is None else r.probes_planned}",
                "ΔAUC (eq. 1)": ""
                if r.auc_change is None
                else f"{r.auc_change:+.2f} % (task {r.auc_change_task})",
                "onset so far": r.onset_note,
                "last diagnose": diag,
                "tokens/s": "" if r.tokens_per_s is None else f"{r.tokens_per_s:,.0f}",
                "time left": format_duration(r.seconds_left) if r.seconds_left else "",
                "state": r.state,
            }
        )
    return out
