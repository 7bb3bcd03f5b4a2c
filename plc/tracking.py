"""Metrics in TensorBoard: live from a training job, or converted from finished metric files.

Parquet stays the record; TensorBoard (and W&B through its TensorBoard sync) is a view of it.
Both paths write the same tags, so a study converted afterwards reads like one tracked live.

Layout: one TensorBoard run per plc run, `<dir>/<run_id>/`; every process writes its own event
file there (TensorBoard merges them), so parallel jobs of one run never share a file. Tags:

- `train/loss`, `train/lr`, `train/grad_norm`, `train/tokens_per_s` at the run's global step (the
  steps of all earlier tasks plus the step in this task, 0-based), and `train/task` (the task
  index) at the first step of each task;
- `probe-<lang>/t008-ru/val_loss` at the probe step: one curve per probed checkpoint (task 8,
  trained last on ru), `probe-<lang>/scratch/val_loss` for the from-scratch baseline;
  `probe-<lang>/auc` at the probed task index, `probe-<lang>/auc_scratch` at 0; live only:
  `probe-<lang>/t008-ru/loss`, the probe's training loss per step;
- `diagnose/<metric>` (whole model), `diagnose-layers/<metric>/layer03` and
  `diagnose-heads/<metric>/layer03/head05` at the diagnosed task index.

TensorBoard stores scalars as float32: the numbers are the Parquet numbers to 7 digits.
The writer is tensorboard's own event-file writer (no torch, one event per step for all its
values); tensorboard is an optional extra, `pip install 'plc[track]'`.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plc.errors import PlcError
from plc.store import expand_inputs, parse_metric_name, read_metrics

ENV = "PLC_TENSORBOARD"
EXTRA = "pip install 'plc[track]'"
TRAIN_TAGS = ("loss", "lr", "grad_norm", "tokens_per_s")
FLUSH_SECS = 30  # a live run shows up in TensorBoard within half a minute
EVENT_PREFIX = "events.out.tfevents."


def _require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise PlcError(f"TensorBoard output needs the tensorboard package: {EXTRA}") from None


class _EventWriter:
    """One event file: each call writes one event holding several scalars of one step."""

    def __init__(self, directory: Path):
        _require_tensorboard()
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(str(directory), flush_secs=FLUSH_SECS)
        self.count = 0

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(
            value=[Summary.Value(tag=t, simple_value=float(v)) for t, v in values.items()]
        )
        self._writer.add_event(Event(step=int(step), wall_time=time.time(), summary=summary))
        self.count += len(values)

    def close(self) -> None:
        self._writer.close()


# ---------------------------------------------------------------------------------------- tags


def probe_name(task_index: int, lang: str, from_scratch: bool) -> str:
    """`t008-ru` for the probe of task 8's checkpoint (trained last on ru), `scratch` for App. B's."""
    return "scratch" if from_scratch else f"t{task_index:03d}-{lang or 'init'}"


def diagnose_tag(metric: str, layer: int | None, head: int | None) -> str:
    if head is not None:
        return f"diagnose-heads/{metric}/layer{layer:02d}/head{head:02d}"
    if layer is not None:
        return f"diagnose-layers/{metric}/layer{layer:02d}"
    return f"diagnose/{metric}"


def _train_values(row: Mapping[str, Any]) -> dict[str, float]:
    return {f"train/{k}": row[k] for k in TRAIN_TAGS if row.get(k) is not None}


def _diagnose_values(rows: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    """Diagnose rows as {task index: {tag: value}}."""
    out: dict[int, dict[str, float]] = {}
    for r in rows:
        tag = diagnose_tag(r["metric"], r.get("layer"), r.get("head"))
        out.setdefault(int(r["task_index"]), {})[tag] = r["value"]
    return out


# ------------------------------------------------------------------------------ live tracking


def tensorboard_dir(flag: str | os.PathLike | None) -> Path | None:
    """The folder of `--tensorboard DIR`, else of $PLC_TENSORBOARD, else None (no tracking)."""
    if flag is not None and str(flag) != "":
        return Path(flag)
    env = os.environ.get(ENV, "")
    return Path(env) if env else None


def check_writable(directory: str | os.PathLike) -> Path:
    """Create the folder if needed and prove a file can be written there (before hours of work)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".plc-write-test-"):
            pass
    except OSError as e:
        raise PlcError(
            f"TensorBoard folder {directory} is not writable ({e.strerror or type(e).__name__})"
        ) from None
    return directory


class TensorBoardTracker:
    """Live TensorBoard scalars of one job: a train task, a probe or a diagnose.

    `step(row)` takes the loop's per-step row (step, loss, lr, grad_norm, tokens_per_s);
    `eval(step, val_loss)` a probe evaluation; `auc(value)` the probe's AUC at its end;
    `diagnose(rows)` the metric rows of a diagnose. `step_offset`: steps of the run's earlier
    tasks (the sum of `steps` in the input checkpoint's history), so a run's steps line up.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        run_id: str,
        task_index: int,
        kind: str,
        *,
        lang: str = "",
        step_offset: int = 0,
        probe_lang: str = "vi",
        from_scratch: bool = False,
    ):
        if kind not in ("train", "probe", "diagnose"):
            raise ValueError(f"kind must be train, probe or diagnose, not {kind!r}")
        self.kind, self.task_index, self.step_offset = kind, task_index, step_offset
        self.group = f"probe-{probe_lang}"
        self.probe = f"{self.group}/{probe_name(task_index, lang, from_scratch)}"
        self.from_scratch = from_scratch
        self._writer = _EventWriter(check_writable(Path(directory) / run_id))
        self._first = True

    def step(self, row: Mapping[str, Any], total: int | None = None) -> None:
        """One training step (`total` is accepted so this can be the loop's on_step as is)."""
        if self.kind == "probe":
            self._writer.scalars(int(row["step"]), {f"{self.probe}/loss": row["loss"]})
            return
        values = _train_values(row)
        if self._first:
            values["train/task"] = self.task_index
            self._first = False
        self._writer.scalars(self.step_offset + int(row["step"]), values)

    def eval(self, step: int, val_loss: float) -> None:
        self._writer.scalars(step, {f"{self.probe}/val_loss": val_loss})

    def auc(self, value: float) -> None:
        tag = f"{self.group}/auc_scratch" if self.from_scratch else f"{self.group}/auc"
        self._writer.scalars(self.task_index, {tag: value})

    def diagnose(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for task, values in _diagnose_values(rows).items():
            self._writer.scalars(task, values)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoardTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_tracker(
    flag: str | os.PathLike | None, run_id: str, task_index: int, kind: str, **options: Any
) -> TensorBoardTracker | None:
    """A tracker when `--tensorboard` or $PLC_TENSORBOARD names a folder, else None. Fails at once
    (one line) without tensorboard or a writable folder."""
    directory = tensorboard_dir(flag)
    if directory is None:
        return None
    return TensorBoardTracker(directory, run_id, task_index, kind, **options)


# ------------------------------------------------------------------- plc metrics tensorboard


@dataclass
class TensorBoardResult:
    out: str
    runs: list[str]
    metric_files: int
    scalars: int  # values written
    event_files: list[str]


def metric_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Metric files from files, globs and folders (a folder: its plc metric files)."""
    paths: list[Path] = []
    for p in expand_inputs(inputs):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if parse_metric_name(f.name))
            if not found:
                raise PlcError(f"no plc metric files in {p}")
            paths.extend(found)
        else:
            paths.append(p)
    return paths


def metrics_to_tensorboard(
    inputs: Iterable[str | os.PathLike], out: str | os.PathLike, *, force: bool = False
) -> TensorBoardResult:
    """`plc metrics tensorboard`: write finished metric files as TensorBoard event files, one
    TensorBoard run per plc run. An existing run folder with event files is replaced only with
    `force`; each run's event file is written under a temporary name and moved in when whole."""
    import polars as pl

    _require_tensorboard()
    paths = metric_inputs(inputs)
    by_run: dict[str, list[tuple[Path, pl.DataFrame]]] = {}
    for p in paths:
        df = read_metrics([p])
        if df.height == 0:
            continue
        for (run_id,), rows in df.group_by("run_id", maintain_order=True):
            by_run.setdefault(str(run_id), []).append((p, rows))
    if not by_run:
        raise PlcError("the metric files hold no rows")
    out = Path(out)
    for run_id in by_run:
        old = _event_files(out / run_id)
        if old and not force:
            raise PlcError(
                f"{out / run_id} already holds TensorBoard event files; pass --force to replace them"
            )
    check_writable(out)

    written: list[str] = []
    scalars = 0
    for run_id, frames in sorted(by_run.items()):
        with tempfile.TemporaryDirectory(prefix=f".{run_id}.", dir=out) as tmp:
            writer = _EventWriter(Path(tmp))
            try:
                _write_run(writer, [f for _, f in frames])
            finally:
                writer.close()
            scalars += writer.count
            target = out / run_id
            target.mkdir(parents=True, exist_ok=True)
            for old in _event_files(target):
                old.unlink()
            for new in _event_files(Path(tmp)):
                os.replace(new, target / new.name)
                written.append(str(target / new.name))
    return TensorBoardResult(str(out), sorted(by_run), len(paths), scalars, written)


def _event_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(EVENT_PREFIX + "*")) if directory.is_dir() else []


def _write_run(writer: _EventWriter, frames: list) -> None:
    """Every row of one run's metric files, as the live tracker would have written them."""
    import polars as pl

    by_kind: dict[str, list] = {}
    for f in frames:
        by_kind.setdefault(f["kind"][0], []).append(f)
    train = sorted(by_kind.get("train", []), key=lambda f: int(f["task_index"][0]))
    offsets = step_offsets({int(f["task_index"][0]): int(f["step"].max()) + 1 for f in train})
    for f in train:
        task = int(f["task_index"][0])
        for i, row in enumerate(f.sort("step").iter_rows(named=True)):
            values = _train_values(row)
            if i == 0:
                values["train/task"] = task
            writer.scalars(offsets[task] + int(row["step"]), values)
    for f in by_kind.get("probe", []):
        first = f.row(0, named=True)
        scratch = bool(first.get("from_scratch"))
        group = f"probe-{first.get('probe_lang') or 'vi'}"
        name = f"{group}/{probe_name(int(first['task_index']), first['lang'], scratch)}"
        for row in f.sort("step").iter_rows(named=True):
            writer.scalars(int(row["step"]), {f"{name}/val_loss": row["val_loss"]})
        tag = f"{group}/auc_scratch" if scratch else f"{group}/auc"
        writer.scalars(int(first["task_index"]), {tag: first["auc"]})
    diag = by_kind.get("diagnose", [])
    if diag:
        rows = pl.concat(diag, how="diagonal_relaxed").iter_rows(named=True)
        for task, values in sorted(_diagnose_values(rows).items()):
            writer.scalars(task, values)


def step_offsets(steps: Mapping[int, int]) -> dict[int, int]:
    """Global step at which each task starts: the steps of the earlier tasks, a task whose file
    is absent counted at the median steps per task (the same as live when all are present)."""
    if not steps:
        return {}
    typical = int(statistics.median(steps.values()))
    offsets, total = {}, 0
    for task in range(1, max(steps) + 1):
        if task in steps:
            offsets[task] = total
        total += steps.get(task, typical)
    return offsets
