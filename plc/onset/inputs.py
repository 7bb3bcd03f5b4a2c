"""Reading fit-onset's inputs: metric files apart from onset tables, the probe rows, each run's
method, and onset tables (CSV or Parquet with n_params and onset columns) back into rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc.errors import PlcError
from plc.store import expand_inputs, read_metrics

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "BASELINE",
    "BY",
    "TABLE_COLUMNS",
    "check_by",
    "expand_inputs",
    "method_order",
    "read_finite",
    "read_probes",
    "run_methods",
    "split_inputs",
]

BY = ("method",)  # what fits and figures may be grouped by
BASELINE = "none"  # the method label of a run trained without remedies (plc.mitigations)


def _is_onset_table_columns(columns: Sequence[str]) -> bool:
    return "kind" not in columns and {"n_params", "onset"} <= set(columns)


def split_inputs(paths: Sequence[Path]) -> tuple[list[Path], pl.DataFrame | None]:
    """Metric files apart from onset tables (CSV, or Parquet with n_params and onset columns)."""
    import polars as pl

    metric_files: list[Path] = []
    tables: list[pl.DataFrame] = []
    for p in paths:
        if p.is_dir():
            raise PlcError(f"{p} is a folder; pass its files (e.g. {p}/*.parquet)")
        if p.suffix.lower() == ".csv":
            try:
                df = pl.read_csv(p)
            except Exception as e:
                raise PlcError(f"{p} is not a readable CSV ({type(e).__name__})") from e
            if not _is_onset_table_columns(df.columns):
                raise PlcError(f"{p} is not an onset table (it needs n_params and onset columns)")
            tables.append(_onset_table(df, p))
            continue
        try:
            columns = pl.read_parquet_schema(p).keys()
        except Exception as e:
            raise PlcError(f"{p} is neither a Parquet metric file nor a CSV onset table") from e
        if _is_onset_table_columns(list(columns)):
            tables.append(_onset_table(pl.read_parquet(p), p))
        elif "kind" in columns:
            metric_files.append(p)
        else:
            raise PlcError(
                f"{p} is neither a plc metric file (no 'kind' column) nor an onset table "
                "(n_params and onset columns)"
            )
    return metric_files, (pl.concat(tables, how="diagonal_relaxed") if tables else None)


# Columns an onset table may carry beyond n_params and onset (fit-onset --out writes them all).
TABLE_COLUMNS = (
    "run_id",
    "size",
    "seed",
    "method",
    "n_params",
    "n_probes",
    "onset",
    "onset_tokens",
    "minimum_task",
    "smoothed_minimum",
    "detected",
    "at_start",
    "p_value",
    "no_onset",
    "onset_lo",
    "onset_hi",
    "mass_task",
    "mass_p",
    "noise_sd",
    "rho",
    "rise_sd",
    "jitter",
    "rise_jitter",
    "rate",
    "rate_se",
    "verdict",
    "falling_p",
    "horizon",
)


def table_schema() -> dict[str, Any]:
    import polars as pl

    types = {c: pl.String for c in ("run_id", "size", "seed", "method", "no_onset", "verdict")}
    for c in ("n_probes", "onset_tokens", "minimum_task", "smoothed_minimum", "horizon"):
        types[c] = pl.Int64
    types |= {"detected": pl.Boolean, "at_start": pl.Boolean, "mass_task": pl.List(pl.Int64)}
    types["mass_p"] = pl.List(pl.Float64)
    return {c: types.get(c, pl.Float64) for c in TABLE_COLUMNS}


def _onset_table(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    import polars as pl

    schema = table_schema()
    try:
        out = df.select(
            (pl.col(c) if c in df.columns else pl.lit(None)).cast(t).alias(c)
            for c, t in schema.items()
        )
    except Exception as e:
        raise PlcError(f"{path}: n_params and onset must be numbers") from e
    if out.height == 0:
        raise PlcError(f"{path} is an empty onset table")
    # A row without an onset is allowed only where the table says no onset was detected there.
    out = out.with_columns(pl.col("detected").fill_null(True))
    if out["n_params"].null_count() or out.filter(pl.col("detected"))["onset"].null_count():
        raise PlcError(f"{path} has empty n_params or onset cells")
    return out.with_columns(
        pl.col("size").fill_null(pl.col("n_params").map_elements(_size_name, pl.String)),
        pl.col("method").fill_null(BASELINE),
    )


def _size_name(n: float) -> str:
    return f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n:,.0f}"


def check_by(by: str | None) -> None:
    """Bad input for `--by`, before any file is read."""
    if by is not None and by not in BY:
        raise PlcError(f"--by takes {' or '.join(BY)}, not {by!r}")


def method_order(methods: Iterable[str]) -> list[str]:
    """Distinct methods, the baseline first (every comparison is against it), then by name."""
    distinct = set(methods)
    return [BASELINE] * (BASELINE in distinct) + sorted(distinct - {BASELINE})


def run_methods(rows: pl.DataFrame) -> dict[str, str]:
    """Each run's method: the label on its latest row that is not a from-scratch probe (those
    probe a never-trained copy, labelled 'none' whatever the run trained with). Files from before
    metric rows carried a method, and empty cells, are the baseline: no remedy was applied then."""
    import polars as pl

    df = rows
    if "from_scratch" in df.columns:
        df = df.filter(~pl.col("from_scratch").fill_null(False))
    if "method" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.String).alias("method"))
    last = df.sort("task_index").group_by("run_id").agg(pl.col("method").last().fill_null(BASELINE))
    return dict(zip(last["run_id"].to_list(), last["method"].to_list(), strict=True))


def read_probes(metric_files: Sequence[Path], notes: list[str] | None = None) -> pl.DataFrame:
    """The probe rows of any mix of metric files; bad input if there are none. A probe curve whose
    AUC is not a finite number is left out, and named (file, run, task) in `notes`."""
    import polars as pl

    if not metric_files:
        return pl.DataFrame()
    df = read_finite(metric_files, "probe", notes)
    if df.height == 0:
        every = read_metrics(metric_files)
        kinds = sorted(set(every["kind"].unique().to_list())) if every.height else []
        if "probe" in kinds:
            raise PlcError("no probe in the input metric files has a finite AUC")
        raise PlcError(
            "no probe rows in the input metric files (they hold "
            + (", ".join(kinds) or "no rows")
            + "); run plc probe first"
        )
    missing = [c for c in ("run_id", "n_params", "task_index", "auc") if c not in df.columns]
    if missing:
        raise PlcError(f"the probe metrics lack columns {missing}; are they plc probe files?")
    return df


# The number each kind's rows stand for: a row without a finite one measures nothing.
MEASURED = {"probe": "auc", "diagnose": "value"}


def read_finite(paths: Sequence[Path], kind: str, notes: list[str] | None = None) -> pl.DataFrame:
    """Rows of `kind` from metric files, less those whose AUC (probes: the whole curve, which
    shares it) or diagnose value is null, NaN or infinite: each file with such rows is named in
    `notes` with its run, task and what was left out, so no reading changes silently."""
    import polars as pl

    column = MEASURED[kind]
    frames = []
    for path in paths:
        df = read_metrics([path], kind)
        if df.height == 0 or column not in df.columns:
            frames.append(df)
            continue
        value = pl.col(column).cast(pl.Float64, strict=False)
        bad = df.filter(value.is_null() | ~value.is_finite())
        if bad.height:
            if kind == "probe":  # a curve is one measurement: its AUC is on every row
                curve = [c for c in ("run_id", "task_index", "probe_seed") if c in df.columns]
                df = df.join(bad.select(curve).unique(), on=curve, how="anti", nulls_equal=True)
                what = "its AUC is " + _shown(bad[column])
            else:
                df = df.filter(value.is_not_null() & value.is_finite())
                metrics = sorted(set(bad["metric"].to_list())) if "metric" in bad.columns else []
                what = f"{bad.height} {kind} value(s) " + _shown(bad[column])
                what += f" ({', '.join(map(str, metrics))})" if metrics else ""
            if notes is not None:
                runs = sorted(set(map(str, bad["run_id"].to_list())))
                tasks = sorted(set(bad["task_index"].to_list()))
                notes.append(
                    f"left out {Path(path).name} (run {', '.join(runs)}, task "
                    f"{', '.join(map(str, tasks))}): {what}"
                )
        frames.append(df)
    frames = [f for f in frames if f.height]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def _shown(values: pl.Series) -> str:
    """`NaN`, `null`, `inf`: what the left-out numbers were."""
    import math

    kinds = set()
    for v in values.to_list():
        kinds.add("null" if v is None else "NaN" if math.isnan(v) else "infinite")
    return " or ".join(sorted(kinds))
