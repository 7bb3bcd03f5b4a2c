"""A study's files: what a walk of its folder finds (checkpoints, metric files, jobs in progress,
its plan), and the plan that metric files belong to (its probe positions and verdict settings).

Whatever ran the study (make, Snakemake, `plc demo`, a shell loop), its state is in these files;
its plan is the plan.json `plc plan` wrote beside the Makefile or Snakefile, read (and checked)
by plc.plan.files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from plc.errors import PlcError
from plc.plan.files import PLAN_FILES, PLAN_JSON, read_plan
from plc.plan.jobs import Plan
from plc.store import parse_metric_name, parse_progress_name

MAX_DEPTH = 4  # <dir>/runs/<size>/metrics/x.parquet: the deepest layout (bin/ before plan.json)
SEARCH_UP = 3  # folders above a metric file where a reader looks for its plan.json
# cN.pt, or a branch cN-NAME.pt: the transfer plan trains c1-<lang>.pt from one c0.pt.
CHECKPOINT_NAME = re.compile(r"^c(\d+)(-[A-Za-z0-9_]+)?\.pt$")


@dataclass
class MetricFile:
    path: Path
    kind: str
    run_id: str
    task_index: int
    lang: str
    suffix: str


@dataclass
class StudyFiles:
    """What a walk of the study folder found."""

    root: Path
    checkpoints: dict[Path, dict[int, Path]] = field(default_factory=dict)  # folder → {N: cN.pt}
    metrics: list[MetricFile] = field(default_factory=list)
    in_progress: list[Path] = field(default_factory=list)
    progress: list[MetricFile] = field(default_factory=list)  # rows saved by tasks in progress
    plan: Path | None = None  # the Makefile or Snakefile, as written
    plan_data: Path | None = None  # its plan.json: what the study plans
    other_tables: list[Path] = field(default_factory=list)  # Parquet/CSV that are not metrics
    nested: list[Path] = field(default_factory=list)  # subfolders with their own plan: studies

    def metric_files(self, kind: str | None = None, run_id: str | None = None) -> list[Path]:
        return [
            m.path
            for m in self.metrics
            if (kind is None or m.kind == kind) and (run_id is None or m.run_id == run_id)
        ]

    def read_plan(self) -> Plan | None:
        """The study's plan, checked (bad input if its plan.json does not fit the schema)."""
        return None if self.plan_data is None else read_plan(self.plan_data)


def find_study_files(directory: str | os.PathLike) -> StudyFiles:
    """Walk a study folder (plan layout, demo layout or shell-script layout alike)."""
    root = Path(directory)
    if not root.is_dir():
        raise PlcError(f"no folder at {root}")
    found = StudyFiles(root)
    for name in PLAN_FILES:
        if (root / name).is_file():
            found.plan = root / name
            break
    if (root / PLAN_JSON).is_file():
        found.plan_data = root / PLAN_JSON
    base_depth = len(root.parts)
    for here, dirs, files in os.walk(root):
        here_path = Path(here)
        depth = len(here_path.parts) - base_depth
        kept = []
        for d in dirs:
            if d.endswith(".partial"):
                found.in_progress.append(here_path / d)
            elif is_plc_plan(here_path / d):
                # e.g. the demo's control/: its runs reuse run ids (nano-s0) of this study's
                found.nested.append(here_path / d)
            elif not (d.startswith(".") or d.endswith(".zarr")) and depth < MAX_DEPTH:
                kept.append(d)
        dirs[:] = sorted(kept)
        for f in sorted(files):
            path = here_path / f
            if m := CHECKPOINT_NAME.match(f):
                ckpts = found.checkpoints.setdefault(here_path, {})
                if m.group(2) is None:  # of several checkpoints of one task, the trunk's
                    ckpts[int(m.group(1))] = path
                else:
                    ckpts.setdefault(int(m.group(1)), path)
            elif m := parse_metric_name(f):
                found.metrics.append(
                    MetricFile(path, m.kind, m.run, m.task_index, m.lang, m.suffix)
                )
            elif m := parse_progress_name(f):
                found.progress.append(
                    MetricFile(path, m.kind, m.run, m.task_index, m.lang, m.suffix)
                )
                found.in_progress.append(path)
            elif f.endswith(".resume") or (f.startswith(".") and f.endswith((".tmp", ".partial"))):
                found.in_progress.append(path)
            elif f.endswith((".parquet", ".csv")) and not f.startswith("."):
                found.other_tables.append(path)
    found.metrics.sort(key=lambda m: (m.run_id, m.task_index, m.kind, m.suffix))
    if not (found.checkpoints or found.metrics or found.in_progress or is_plc_plan(root)):
        raise PlcError(
            f"no plc files in {root} (no checkpoints cN.pt, metric files or plc plan); "
            "point it at a plan's folder"
        )
    return found


def is_plc_plan(folder: Path) -> bool:
    """The folder holds a study's plan: a plan.json, or a Makefile or Snakefile plc wrote."""
    if (folder / PLAN_JSON).is_file():
        return True
    for name in PLAN_FILES:
        plan = folder / name
        if plan.is_file() and "plc" in plan.read_text(errors="replace")[:2000]:
            return True
    return False


def plan_of_metrics(paths: Iterable[str | os.PathLike]) -> Plan | None:
    """The plan whose metrics folder holds these files (the first names it: a file, a glob or
    the folder): a plan.json (or *.plan.json) up to SEARCH_UP folders above it whose `metrics` is
    that folder; None if there is none. A plan.json on the way that does not fit its schema is bad
    input, as for every other reader of plans."""
    first = next(iter(paths), None)
    if first is None:
        return None
    folder = Path(first) if Path(first).is_dir() else Path(first).parent
    folder = folder.resolve()
    for here in [folder, *folder.parents][: SEARCH_UP + 1]:
        for candidate in sorted(here.glob(f"*{PLAN_JSON}")):
            plan = read_plan(candidate)
            if (here / plan.metrics).resolve() == folder:
                return plan
    return None
