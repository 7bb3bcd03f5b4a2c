"""Checkpoints and metric files: the one place that knows their formats.

Checkpoint (`cN.pt`): a dict of tensors and plain Python values only, so it loads with
`torch.load(weights_only=True)` and a stranger's file cannot run code:
    {"format": "plc-checkpoint", "version": 1, "config": {...}, "model": state_dict, "meta": {...}}
Metrics: long-format Parquet, one file per command run,
    <dir>/<kind>-<run>-t<task_index>-<lang>[-<suffix>].parquet
<run> the run id, followed by the method's tag where the checkpoint was trained with a method the
run id does not already name (`metric_run`), so variants trained from one checkpoint never share a
file; with the columns of COMMON_COLUMNS on every row.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc import __version__
from plc.errors import PlcError, writing
from plc.hf.config import HFConfig, is_hf_config
from plc.presets import PRESETS
from plc.protocol import cycle_of

if TYPE_CHECKING:
    import polars as pl
    import torch

    from plc.model import GPTConfig, LanguageModel

CHECKPOINT_FORMAT = "plc-checkpoint"
CHECKPOINT_VERSION = 1
COMMON_COLUMNS = ["kind", "run_id", "size", "n_params", "task_index", "cycle", "lang"]
# What each kind of metric file must hold beside them, and the type of every column FORMATS.md
# names: a file edited by hand or written by another program is refused naming file and column.
KIND_COLUMNS = {
    "train": ("step", "loss"),
    "probe": ("step", "auc"),
    "diagnose": ("metric", "value"),
}
DIVERGED = "diverged"  # train-task's `status` on every row of a task that diverged ("ok" else)
COLUMN_TYPES = {
    **dict.fromkeys(("kind", "run_id", "size", "lang", "probe_lang", "method", "metric"), str),
    "status": str,
    **dict.fromkeys(("n_params", "task_index", "cycle", "step", "tokens", "tokens_seen"), int),
    **dict.fromkeys(("probe_seed", "eval_seed", "layer", "head"), int),
    **dict.fromkeys(("loss", "lr", "grad_norm", "tokens_per_s", "val_loss", "auc", "value"), float),
    "from_scratch": bool,
}


# ---------------------------------------------------------------------------------------- files


# What --force may replace, by the kind of output a command writes: only plc's own files of that
# kind, never a folder or a stranger's file that happens to have the name.
OUTPUT_KINDS = {
    "checkpoint": "plc checkpoint",
    "train": "plc train metric file",
    "probe": "plc probe metric file",
    "diagnose": "plc diagnose metric file",
    "diagnose-units": "plc diagnose units store",
}


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, force: bool = False, kind: str | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside `path`; put it at `path` only if the block completes.

    A crash or kill inside the block leaves the final name untouched (no half-written file).
    Without `force` the file is linked into place, which fails if `path` exists by then: a file
    another process wrote while this one worked is never replaced (the check and the rename are
    one step). With it, `path` is replaced if it is a `kind` of output this command may replace
    (`check_output`).
    """
    path = check_output(path, force, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its private 0600 would survive the rename, and nobody else in the group could
    # read a study. Created as open() creates any file, the umask gives the mode.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        with writing(path):  # a full disk's error names no file: name the one being written
            yield tmp
            if force:
                os.replace(tmp, path)
            else:
                _put_new(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _put_new(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path` unless `path` exists, in one step."""
    try:
        try:
            os.link(tmp, path)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            # A file system without hard links: claim the name, then rename over the claim.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            os.replace(tmp, path)
    except FileExistsError:
        raise PlcError(
            f"{path} was written by another process while this one ran; it is kept: write "
            "elsewhere, or pass --force to replace it"
        ) from None


def check_output(path: str | os.PathLike, force: bool, kind: str | None = None) -> Path:
    """Refuse early (before hours of work) to overwrite an existing output without --force.

    The file may be another run's (a variant from the same checkpoint): the message says where
    else to write before it says how to replace it. With --force, an output of `kind`
    (OUTPUT_KINDS) is replaced only if it is one (`is_output`); any other output only if it is
    not a folder."""
    path = Path(path)
    if not os.path.lexists(path):
        return path
    if not force:
        raise PlcError(
            f"{path} exists; write elsewhere (another --out or --metrics), or pass --force "
            "only to replace this same run's earlier output"
        )
    if kind is None and path.is_dir():
        raise PlcError(f"{path} is a folder; --force replaces a file, never a folder")
    if kind is not None and not is_output(path, kind):
        raise PlcError(
            f"{path} is not a {OUTPUT_KINDS[kind]}; --force replaces only those: move it away "
            "or write elsewhere"
        )
    return path


def is_output(path: str | os.PathLike, kind: str) -> bool:
    """Whether `path` is an output of `kind` (OUTPUT_KINDS) that plc wrote."""
    path = Path(path)
    if kind == "diagnose-units":
        try:
            attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        except (OSError, ValueError, AttributeError):
            return False
        return path.is_dir() and attrs.get("kind") == kind
    if not path.is_file():
        return False
    if kind == "checkpoint":
        try:
            _read_checkpoint(path, mmap=True)
        except PlcError:
            return False
        return True
    import polars as pl

    try:
        kinds = pl.read_parquet(path, columns=["kind"], n_rows=1)["kind"].to_list()
    except Exception:  # not Parquet, or no kind column: not a metric file of plc's
        return False
    return kinds == [kind]


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of output `path` (the file `<path>.lock`) while the block runs: a second
    process writing the same output refuses at once (PlcError), before any work. The lock is the
    operating system's (flock), so a killed holder leaves none behind."""
    import fcntl

    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PlcError(
                f"{path} is being written by another process (it holds {lock.name}); wait for "
                "it to finish, or write elsewhere"
            ) from None
        # The holder before may have removed the file after it was opened here: lock the file
        # that is at the name now.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


# ----------------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    config: GPTConfig | HFConfig  # plc's GPT, or a Hugging Face causal LM (plc.hf)
    model: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    # A continued run's optimizer (`train-task --continue`): {"optimizer": AdamW state_dict,
    # "schedule_step": steps of the run so far, "warmup_steps": the run's one warm-up}. Tensors
    # and plain values only, like everything else in the file.
    optimizer: dict[str, Any] | None = None
    path: str | None = None  # the file it was read from, for errors about its content

    @property
    def task_index(self) -> int:
        return int(self.meta.get("task_index", 0))

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id", "run"))

    @property
    def size(self) -> str:
        return str(self.meta.get("size", ""))

    @property
    def preset(self) -> str | None:
        """The protocol preset the run was initialised with (`plc init --preset`), if any."""
        return self.meta.get("preset")

    @property
    def method(self) -> str:
        """The remedy the run trained its last task with ('none'): its metric rows' method."""
        history = self.meta.get("history") or []
        return (history_method(history[-1]) if history else "") or "none"

    @property
    def last_lang(self) -> str:
        """Language of the last task trained ('' for a fresh init)."""
        history = self.meta.get("history") or []
        return history[-1]["lang"] if history else ""

    def nonfinite(self) -> list[str]:
        """The weights holding a NaN or an infinity (a diverged run's): none in a checkpoint plc
        writes."""
        import torch

        return [
            k
            for k, v in self.model.items()
            if v.is_floating_point() and not torch.isfinite(v).all()
        ]

    def build_model(self, device: str | torch.device = "cpu") -> LanguageModel:
        """The model under study in fp32: plc's GPT, or the Hugging Face model's adapter."""
        if isinstance(self.config, HFConfig):
            from plc.hf.adapter import build

            return build(self.config, self.model).to(device)
        from plc.model import GPT

        model = GPT(self.config)
        try:
            model.load_state_dict(self.model)
        except RuntimeError as e:  # torch's list of every missing and mismatched tensor
            first = str(e).strip().splitlines()[-1].strip()[:200]
            raise PlcError(
                f"{self.path or 'the checkpoint'}: its weights do not match its config "
                f"(n_layer {self.config.n_layer}, d_model {self.config.d_model}: {first}); "
                "it was changed after plc wrote it"
            ) from None
        return model.to(device)

    def row_context(self) -> dict[str, Any]:
        """The columns every metric row about this checkpoint carries."""
        return {
            "run_id": self.run_id,
            "size": self.size,
            "n_params": int(self.meta.get("n_params", self.config.n_params)),
            "task_index": self.task_index,
            "cycle": cycle_of(self.task_index),
            "lang": self.last_lang,
        }


def history_method(entry: dict[str, Any]) -> str:
    """What a checkpoint-history entry did beyond plain training ('' if nothing): its study arm
    (`method_label`), or the method of a `plc intervene`."""
    if "intervention" in entry:
        return f"intervene {entry['intervention']}"
    remedies = str((entry.get("mitigations") or {}).get("label", "none"))
    label = method_label(remedies, entry.get("weight_decay"), entry.get("preset"))
    return "" if label == "none" else label


def method_label(remedies: str, weight_decay: float | None, preset: str | None) -> str:
    """A task's arm of a study, as metric rows and `--by method` name it: the remedies' label
    (plc.mitigations), led by the weight decay where it is not the preset's — the paper's first
    remedy, and `plc plan --mitigation wd:λ`'s run-id tag ('wd0.1'); 'none' for the baseline."""
    parts = [] if remedies == "none" else [remedies]
    default = PRESETS[preset].weight_decay if preset in PRESETS else None
    if default is not None and any(p.startswith("l2init") for p in remedies.split("+")):
        default = 0.0  # L2-init replaces the decay towards 0 (TrainOptions.default_weight_decay)
    if weight_decay is not None and default is not None and weight_decay != default:
        parts.insert(0, f"wd{weight_decay:g}")
    return "+".join(parts) or "none"


def new_meta(
    config: GPTConfig | HFConfig,
    *,
    run_id: str,
    seed: int,
    size: str,
    tokenizer: dict[str, Any] | None,
    preset: str | None = None,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "seed": seed,
        "size": size,
        "preset": preset,
        "n_params": config.n_params,
        "task_index": 0,
        "tokens_seen": 0,
        "tokenizer": tokenizer,
        "history": [],
        "plc_version": __version__,
    }


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint, force: bool = False) -> Path:
    """Write `ckpt` at `path` atomically (`atomic_path`: a new file, or with `force` in place of
    a plc checkpoint); never one with non-finite weights."""
    import torch

    bad = ckpt.nonfinite()
    if bad:
        raise PlcError(
            f"not writing {path}: {len(bad)} weight tensors are not finite ({bad[0]}, …)"
        )
    state = {k: v.detach().cpu() for k, v in ckpt.model.items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": ckpt.config.to_dict(),
        "model": state,
        "meta": ckpt.meta,
    }
    if ckpt.optimizer is not None:
        payload["optimizer"] = ckpt.optimizer
    # Through a file object the zip's inner folder is "archive", not the random temporary name,
    # so equal checkpoints are equal bytes (a resumed run's output can be compared with cmp).
    with atomic_path(path, force, "checkpoint") as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, finite: bool = False) -> Checkpoint:
    """The checkpoint at `path`; with `finite`, one whose weights are all finite (what a command
    that measures or trains it needs: a NaN would become its result)."""
    payload = _read_checkpoint(Path(path), mmap=False)
    ckpt = Checkpoint(
        config_from_dict(payload["config"]),
        payload["model"],
        payload["meta"],
        payload.get("optimizer"),
        str(path),
    )
    bad = ckpt.nonfinite() if finite else []
    if bad:
        raise PlcError(
            f"{path} has non-finite weights ({bad[0]}{', …' if len(bad) > 1 else ''}): it is not "
            "a model to measure or train; take the run's last finite checkpoint"
        )
    return ckpt


def config_from_dict(d: dict[str, Any]) -> GPTConfig | HFConfig:
    """A checkpoint's config: a Hugging Face model's (HFConfig) or plc's GPT's."""
    if is_hf_config(d):
        return HFConfig.from_dict(d)
    from plc.sizes import GPTConfig

    return GPTConfig.from_dict(d)


def checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint without reading its tensors (memory-mapped: a 314M model's
    file costs milliseconds, as a tiny one's)."""
    return _read_checkpoint(Path(path), mmap=True)["meta"]


def _read_checkpoint(path: Path, mmap: bool) -> dict[str, Any]:
    import pickle

    import torch

    if not path.is_file():
        raise PlcError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise PlcError(f"{path} is not a safe plc checkpoint (refused to unpickle: {first})") from e
    except Exception as e:  # truncated zip, text file, …
        import zipfile

        detail = f"{type(e).__name__}: {e}" if zipfile.is_zipfile(path) else "not a PyTorch file"
        raise PlcError(f"{path} is not a plc checkpoint ({detail})") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise PlcError(f"{path} is not a plc checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise PlcError(f"{path} has checkpoint version {payload.get('version')}; this plc reads 1")
    return payload


def check_tokenizer(ckpt: Checkpoint, store_tokenizer: dict[str, Any], what: str) -> None:
    """Refuse data made with another tokenizer than the checkpoint's (checked wherever both meet)."""
    mine = ckpt.meta.get("tokenizer")
    theirs = store_tokenizer or {}
    if mine and mine.get("fingerprint") != theirs.get("fingerprint"):
        raise PlcError(
            f"{what} was tokenized with {theirs.get('name')!r} but the checkpoint expects "
            f"{mine.get('name')!r} (vocabulary fingerprints differ)"
        )
    if int(theirs.get("vocab_size", 0)) > ckpt.config.vocab_size:
        raise PlcError(
            f"{what} has vocabulary {theirs.get('vocab_size')} > the model's {ckpt.config.vocab_size}"
        )


# --------------------------------------------------------------------------------------- metrics


# A train metric file's `status`: a finished task, or the record of one that diverged (its last
# row is the step that diverged). Files written before the column existed read as "ok".
TRAIN_STATUS = ("ok", DIVERGED)
# The Parquet key-value entry that names the command run a metric file belongs to (`metric_owner`).
OWNER_KEY = "plc_owner"

# Column types of each metric kind (FORMATS.md); the common columns lead every kind.
_COMMON_TYPES = {
    "kind": "String",
    "run_id": "String",
    "size": "String",
    "n_params": "Int64",
    "task_index": "Int64",
    "cycle": "Int64",
    "lang": "String",
}
_KIND_TYPES = {
    "train": {
        "step": "Int64",
        "tokens": "Int64",
        "loss": "Float64",
        "lr": "Float64",
        "grad_norm": "Float64",
        "tokens_per_s": "Float64",
        "method": "String",  # the task's study arm (store.method_label): 'none', 'wd0.1', 'cbp0.0001'…
        "val_loss": "Float64",  # --val-every: measured after this step; null elsewhere
        "status": "String",  # TRAIN_STATUS: 'diverged' on every row of a diverged task's record
    },
    "probe": {
        "probe_lang": "String",
        "step": "Int64",
        "val_loss": "Float64",
        "auc": "Float64",
        "tokens_seen": "Int64",
        "from_scratch": "Boolean",
        "probe_seed": "Int64",
        "method": "String",  # the remedies of the probed run's last task ('none')
        "eval_seed": "Int64",
        "window_starts": "List[Int64]",  # on the step-0 row of each probe seed; null elsewhere
        "entropy_rate": "Float64",  # the probe store's loss floor (markov:), else null
    },
    "diagnose": {
        "metric": "String",
        "layer": "Int64",
        "head": "Int64",
        "value": "Float64",
        "method": "String",  # as for probes
        "eval_seed": "Int64",
    },
}


def metric_schema(kind: str) -> dict[str, Any]:
    """The polars schema of a metric file of `kind`."""
    import polars as pl

    def dtype(name: str):
        if name.startswith("List["):
            return pl.List(getattr(pl, name[5:-1]))
        return getattr(pl, name)

    return {c: dtype(t) for c, t in {**_COMMON_TYPES, **_KIND_TYPES[kind]}.items()}


def metric_frame(kind: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows of one metric file as a frame with the column types of FORMATS.md."""
    import polars as pl

    return pl.DataFrame(rows, schema=metric_schema(kind))


def method_tag(label: str) -> str:
    """A method label (`method_label`) as file names and plan run ids spell it: 'cbp0.0001',
    'sp0.8,0.01@task' → 'sp0.8_0.01', 'redo0.025@100' → 'redo0.025_100', 'intervene redo' →
    'intervene_redo'."""
    return label.replace("@task", "").replace(",", "_").replace("@", "_").replace(" ", "_")


def metric_run(run_id: str, method: str = "none") -> str:
    """The run part of a metric file's name: the run id, followed by the method's tag unless the
    run id already names it (a plan's do: nano-s0-cbp0.0001, nano-s0-wd0.01-cbp0.0001)."""
    if method in ("", "none"):
        return run_id
    tag = method_tag(method)
    parts = run_id.split("-")
    return run_id if all(t in parts for t in tag.split("+")) else f"{run_id}-{tag}"


def metric_path(
    directory: str | os.PathLike,
    kind: str,
    run_id: str,
    task_index: int,
    lang: str,
    suffix: str | None = None,
    method: str = "none",
) -> Path:
    """The metric file of a command run on the checkpoint of `run_id` after `task_index` (`lang`
    its last task), trained with `method` (its label: Checkpoint.method, `method_label`)."""
    name = f"{kind}-{metric_run(run_id, method)}-t{task_index}-{lang or 'init'}"
    if suffix:
        name += f"-{suffix}"
    return Path(directory) / f"{name}.parquet"


METRIC_NAME = re.compile(r"^(train|probe|diagnose)-(.+?)-t(\d+)-([^-.]+)(?:-([^.]+))?\.parquet$")


@dataclass(frozen=True)
class MetricName:
    kind: str
    run: str  # the run id, with the method's tag where the file name carries it (`metric_run`)
    task_index: int
    lang: str  # 'init' for a fresh checkpoint
    suffix: str


def parse_metric_name(name: str) -> MetricName | None:
    """What `metric_path` wrote into a file name; None for any other name."""
    m = METRIC_NAME.match(name)
    if m is None:
        return None
    kind, run, task, lang, suffix = m.groups()
    return MetricName(kind, run, int(task), lang, suffix or "")


def progress_path(path: str | os.PathLike) -> Path:
    """Where a task in progress keeps the rows it has saved (beside its resumable state) until it
    writes its metric file: a hidden name no reader of metric files takes, so a file under the
    final name always holds a finished task (make and Snakemake count a target that exists as
    done, and an lr-grid job's target is its train metric file)."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def parse_progress_name(name: str) -> MetricName | None:
    """The metric name behind a `progress_path` name; None for any other name."""
    if name.startswith(".") and name.endswith(".partial"):
        return parse_metric_name(name[1 : -len(".partial")])
    return None


def write_metrics(
    path: str | os.PathLike,
    rows: Iterable[dict[str, Any]] | pl.DataFrame,
    force: bool = False,
    owner: str | None = None,
) -> Path:
    """Write one metric file atomically (`atomic_path`: a new file, or with `force` in place of a
    metric file of the same kind); every row must carry the common columns. `owner` names the
    command run that wrote it (`metric_owner`), so that its rerun can finish what it began."""
    import polars as pl

    df = (
        rows
        if isinstance(rows, pl.DataFrame)
        else pl.DataFrame(list(rows), infer_schema_length=None)
    )
    missing = [c for c in COMMON_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"metric rows lack columns {missing}")
    kind = df["kind"][0] if df.height else None
    with atomic_path(path, force, kind if kind in OUTPUT_KINDS else None) as tmp:
        df.write_parquet(tmp, metadata=None if owner is None else {OWNER_KEY: owner})
    return Path(path)


def metric_owner(path: str | os.PathLike) -> str | None:
    """The `owner` a metric file was written with, or None (none given, or not a metric file)."""
    import polars as pl

    try:
        return pl.read_parquet_metadata(path).get(OWNER_KEY)
    except Exception:  # not Parquet: nobody's result that plc knows
        return None


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Paths as given, with glob patterns expanded (a quoted `metrics/*.parquet` works too)."""
    paths: list[Path] = []
    for item in inputs:
        text = str(item)
        if Path(text).exists():
            paths.append(Path(text))
        elif glob.has_magic(text):
            paths.extend(Path(p) for p in sorted(glob.glob(text)))
        else:
            raise PlcError(f"no input file at {text}")
    if not paths:
        raise PlcError("no input files match " + " ".join(map(str, inputs)))
    return paths


def _check_columns(path: Path, df: pl.DataFrame) -> None:
    """Refuse a metric file without the columns of its kind, or with a column of another type."""
    import polars as pl

    for kind in df["kind"].unique().drop_nulls().to_list():
        need = COMMON_COLUMNS + list(KIND_COLUMNS.get(kind, ()))
        missing = [c for c in need if c not in df.columns]
        if missing:
            command = "train-task" if kind == "train" else kind
            raise PlcError(
                f"{path} has no column {missing[0]!r} (a {kind} metric file has "
                f"{', '.join(need)}); write it again with plc {command}"
            )
    for name, want in COLUMN_TYPES.items():
        dtype = df.schema.get(name)
        if dtype is None or dtype == pl.Null:
            continue
        ok = {
            str: dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum),
            int: dtype.is_integer(),
            float: dtype.is_numeric(),
            bool: dtype == pl.Boolean,
        }[want]
        if not ok:
            noun = {str: "text", int: "integers", float: "numbers", bool: "true/false"}[want]
            raise PlcError(f"{path}: column {name!r} holds {dtype}, not {noun}")


def diverged(rows: pl.DataFrame) -> bool:
    """Whether metric rows record a task that diverged (files without `status` are "ok")."""
    return "status" in rows.columns and bool((rows["status"] == DIVERGED).any())


def read_metrics(paths: Iterable[str | os.PathLike], kind: str | None = None) -> pl.DataFrame:
    """Rows of `kind` from any mix of metric files (other kinds are skipped)."""
    import polars as pl

    frames = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise PlcError(f"no metric file at {p}")
        try:
            df = pl.read_parquet(p)
        except Exception as e:
            raise PlcError(f"{p} is not a Parquet metric file ({type(e).__name__})") from e
        if "kind" not in df.columns:
            raise PlcError(f"{p} is not a plc metric file (no 'kind' column)")
        _check_columns(p, df)
        if kind is not None:
            df = df.filter(pl.col("kind") == kind)
        if df.height and df["kind"][0] == "train":
            ok = pl.lit(TRAIN_STATUS[0])
            df = df.with_columns(
                status=pl.col("status").fill_null(ok) if "status" in df.columns else ok
            )
        if df.height:
            frames.append(df)
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames, how="diagonal_relaxed")
