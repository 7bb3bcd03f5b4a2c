"""Onset of plasticity loss and its scaling law (§V-A, Appendix B, Tables IV–V, eq. 1–2).

From `probe` metric rows, per run: one AUC per probe, normalised either by eq. 1
(100·(AUC_k/AUC_1 − 1), `first`) or by the AUC of training the probe language alone from scratch
(`alone`); optionally only the probes taken after some languages (App. B: zh, de, ru); a centred
moving average; the onset is the task index at the minimum of the smoothed series (Table IV).
Then the four fits of Table V on (n_params, onset) points. Which estimator and which space each
figure of Table V uses was worked out by reproducing the table (docs/estimators.md):
- linear, linear-log, log-log: ordinary least squares in the model's own space (log-log on ln T);
  coefficient standard errors are the classical OLS ones in that space;
- exponential: nonlinear least squares in T-space (scipy curve_fit, Levenberg–Marquardt, started at
  a = mean T, b = 0), standard errors from its Gauss–Newton covariance;
- R², in-sample RMSE and leave-one-out RMSE always in T-space (tasks), log-log back-transformed by
  exp() without bias correction; each leave-one-out fold refits the model with the same estimator.

How sure an onset is (docs/estimators.md): the noise unit is the jitter, the SD of the normalised
AUC around its 3-point moving average (checkpoint-to-checkpoint noise, far larger than the spread
between probe repeats of one checkpoint). Each run's onset gets a distribution by resampling its
leverage-adjusted residuals around that trend (and its probe repeats, where there are several); a
run whose smoothed minimum is its first or last smoothed point, or rises less than `min_rise`
jitter units after it, has no onset detected and is left out of the fits. `--bootstrap` refits the
models on resampled runs, each drawing its onset from its distribution.

A study of remedies (`plc plan --mitigation`) labels every metric row with its method; `--by
method` fits, bootstraps and predicts each method's runs apart. Rows and onset tables without a
method (older files) are the baseline, 'none'.
"""

from __future__ import annotations

import glob
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from plc.errors import PlcError
from plc.protocol import CYCLE, MIN_FIT_POINTS, PAPER_PROBE_AFTER, cycle_of

if TYPE_CHECKING:
    import polars as pl

MODELS = ("linear", "linlog", "exp", "loglog")
FORMULAS = {
    "linear": "T = a + b·P",
    "linlog": "T = a + b·ln P",
    "exp": "T = a·e^(b·P)",
    "loglog": "ln T = a + b·ln P",
}
PAPER_TASK_TOKENS = 5_000_000_000  # §IV-A: each task instance is 5B tokens
NORMALIZE = ("first", "alone")
AUC_FROM = ("0", "first")  # the probe curve's area from step 0 (as probe stores it) or after it
END_OF_CYCLE = CYCLE[-1]  # eq. 1's AUC_1 is the first probe after it (App. B probed after ru)
MIN_RISE = 3.0  # jitter units the smoothed AUC must rise after its minimum to call it an onset
MIN_JITTER_PROBES = 4  # a 3-point trend leaves residuals at n − 2 probes; an SD needs two
RUN_RESAMPLES = 1000  # residual resamples per run: 0.1 % resolution of the onset's mass
MIN_BOOTSTRAP = 100
RESAMPLE = ("cases", "within-size")
BY = ("method",)  # what fits and figures may be grouped by
BASELINE = "none"  # the method label of a run trained without remedies (plc.mitigations)
NOISE_UNIT = (
    "jitter: SD of the normalised AUC around its 3-point moving average "
    "(checkpoint-to-checkpoint noise)"
)


# ------------------------------------------------------------------------------------- inputs


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
    "detected",
    "no_onset",
    "onset_lo",
    "onset_hi",
    "mass_task",
    "mass_p",
    "jitter",
    "rise_jitter",
    "rate",
    "rate_se",
)


def _table_schema() -> dict[str, Any]:
    import polars as pl

    types = {c: pl.String for c in ("run_id", "size", "seed", "method", "no_onset")}
    types |= {"n_probes": pl.Int64, "onset_tokens": pl.Int64, "minimum_task": pl.Int64}
    types |= {"detected": pl.Boolean, "mass_task": pl.List(pl.Int64)}
    types["mass_p"] = pl.List(pl.Float64)
    return {c: types.get(c, pl.Float64) for c in TABLE_COLUMNS}


def _onset_table(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    import polars as pl

    schema = _table_schema()
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


def read_probes(metric_files: Sequence[Path]) -> pl.DataFrame:
    """The probe rows of any mix of metric files; bad input if there are none."""
    import polars as pl

    from plc.store import read_metrics

    if not metric_files:
        return pl.DataFrame()
    df = read_metrics(metric_files, "probe")
    if df.height == 0:
        kinds = sorted(set(read_metrics(metric_files)["kind"].unique().to_list()))
        raise PlcError(
            "no probe rows in the input metric files (they hold "
            + (", ".join(kinds) or "no rows")
            + "); run plc probe first"
        )
    missing = [c for c in ("run_id", "n_params", "task_index", "auc") if c not in df.columns]
    if missing:
        raise PlcError(f"the probe metrics lack columns {missing}; are they plc probe files?")
    return df


# ------------------------------------------------------------------------------ probe series


@dataclass
class ProbeSeries:
    """One run's probes in task order, normalised; `smoothed` and the onset once found."""

    run_id: str
    size: str
    n_params: int
    normalize: str
    task_index: list[int]
    lang: list[str]
    auc: list[float]  # mean over the probe repeats of each checkpoint
    tokens_seen: list[int]
    value: list[float]  # normalised AUC (eq. 1 in %, or the ratio to the from-scratch AUC)
    baseline_auc: float  # AUC_1 (first) or the from-scratch AUC (alone)
    cycle: list[int] = field(default_factory=list)
    repeats: list[list[float]] = field(default_factory=list)  # normalised value of each repeat
    baseline_task: int | None = None  # the probe eq. 1 divides by (None for --normalize alone)
    method: str = BASELINE  # the remedies the run trained with (plc.mitigations label)
    smoothed: list[float | None] = field(default_factory=list)
    onset: int | None = None  # task index at the smoothed minimum
    onset_tokens: int | None = None

    @property
    def n_probes(self) -> int:
        return len(self.task_index)

    @property
    def n_repeats(self) -> int:
        """Probe repeats per checkpoint (the most any checkpoint has)."""
        return max((len(r) for r in self.repeats), default=1)


def parse_probe_after(text: str | None) -> tuple[str, ...] | None:
    """`zh,de,ru` → the languages; `all` (or nothing) → no filter."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    langs = tuple(x.strip() for x in text.split(",") if x.strip())
    if not langs:
        raise PlcError(f"--probe-after {text!r} names no language")
    return langs


# One probe = one curve: a run's checkpoint, probed from it or from scratch, with one probe seed.
_CURVE = ["run_id", "from_scratch", "task_index", "probe_seed"]


def _curve_auc(df: pl.DataFrame) -> pl.DataFrame:
    """AUC of each probe curve without its step-0 evaluation (`--auc-from first`), with the
    definition of plc.probe.auc: trapezoids over the steps, divided by the steps spanned."""
    import polars as pl

    missing = [c for c in ("step", "val_loss") if c not in df.columns]
    if missing:
        raise PlcError(
            f"--auc-from first needs the probe curves, but the probe rows lack {missing}"
        )
    # Files of one checkpoint without probe seeds share a curve key: their losses are averaged per
    # step first, which gives the mean of their AUCs (the area is linear in the losses).
    curve = (
        df.filter(pl.col("step") != 0)
        .group_by(*_CURVE, "step")
        .agg(pl.col("val_loss").mean())
        .sort(*_CURVE, "step")
        .with_columns(
            pl.col("step").diff().over(_CURVE).alias("width"),
            ((pl.col("val_loss") + pl.col("val_loss").shift(1)) / 2).over(_CURVE).alias("mid"),
        )
        .group_by(_CURVE)
        .agg(
            (
                (pl.col("width") * pl.col("mid")).sum()
                / (pl.col("step").max() - pl.col("step").min())
            ).alias("auc"),
            pl.len().alias("points"),
        )
    )
    short = curve.filter(pl.col("points") < 2)
    if short.height:
        r = short.row(0, named=True)
        raise PlcError(
            f"run {r['run_id']}, task {r['task_index']}: its probe curve has fewer than two "
            "evaluations after step 0, so --auc-from first has no area (use --auc-from 0)"
        )
    return curve.drop("points")


def probe_series(
    probes: pl.DataFrame,
    normalize: str = "first",
    probe_after: Sequence[str] | None = PAPER_PROBE_AFTER,
    auc_from: str = "0",
    end_of_cycle: str = END_OF_CYCLE,
) -> list[ProbeSeries]:
    """Per run: one AUC per probed checkpoint (repeats averaged), filtered and normalised.

    Eq. 1's AUC_1 is the first probe taken after `end_of_cycle` (the cycle's last language), so a
    dense second stage of probes (App. B) leaves it where a probe-after-ru first stage put it; a
    run with no such probe divides by its first probe left after filtering.
    """
    import polars as pl

    if normalize not in NORMALIZE:
        raise PlcError(f"--normalize must be one of {', '.join(NORMALIZE)}, not {normalize!r}")
    if auc_from not in AUC_FROM:
        raise PlcError(f"--auc-from must be 0 or first, not {auc_from!r}")
    df = probes
    if "from_scratch" not in df.columns:
        df = df.with_columns(pl.lit(False).alias("from_scratch"))
    for col, default in (("size", ""), ("lang", ""), ("tokens_seen", 0), ("probe_seed", None)):
        if col not in df.columns:
            df = df.with_columns(pl.lit(default).alias(col))
    if "cycle" not in df.columns:
        df = df.with_columns(pl.col("task_index").map_elements(cycle_of, pl.Int64).alias("cycle"))
    # A probe file repeats its AUC on every evaluation row. Files of one checkpoint without a
    # probe seed count as one repeat (their AUCs averaged); rows with a probe seed are repeats.
    df = df.with_columns(
        pl.col("from_scratch").fill_null(False),
        pl.col("probe_seed").cast(pl.Int64).fill_null(-1),
    )
    per_repeat = df.group_by(_CURVE).agg(
        pl.col("size").first(),
        pl.col("n_params").first(),
        pl.col("lang").first(),
        pl.col("cycle").first(),
        pl.col("auc").mean(),
        pl.col("tokens_seen").first(),
    )
    if auc_from == "first":
        per_repeat = per_repeat.drop("auc").join(_curve_auc(df), on=_CURVE)
    per_probe = (
        per_repeat.sort(*_CURVE)
        .group_by("run_id", "from_scratch", "task_index")
        .agg(
            pl.col("size").first(),
            pl.col("n_params").first(),
            pl.col("lang").first(),
            pl.col("cycle").first(),
            pl.col("auc").mean(),
            pl.col("auc").alias("repeat_auc"),
            pl.col("tokens_seen").first(),
        )
        .sort("run_id", "task_index")
    )
    methods = run_methods(df)
    out = []
    for (run_id,), rows in per_probe.group_by("run_id", maintain_order=True):
        scratch = rows.filter(pl.col("from_scratch"))
        every = rows.filter(~pl.col("from_scratch"))
        cont = every
        if probe_after is not None:
            kept = cont.filter(pl.col("lang").is_in(list(probe_after)))
            if kept.height == 0:
                after = sorted(set(cont["lang"].to_list())) or ["none"]
                raise PlcError(
                    f"run {run_id} has no probes after {','.join(probe_after)} (its probes follow "
                    f"{', '.join(after)}); pass --probe-after all or other languages"
                )
            cont = kept
        if cont.height == 0:
            raise PlcError(f"run {run_id} has only a from-scratch probe; probe its checkpoints too")
        auc = cont["auc"].to_list()
        baseline_task = None
        if normalize == "alone":
            if scratch.height == 0:
                raise PlcError(
                    f"run {run_id} has no from-scratch probe for --normalize alone "
                    "(probe the untrained checkpoint with plc probe --from-scratch)"
                )
            base = float(scratch["auc"].mean())
        else:
            ends = every.filter(pl.col("lang") == end_of_cycle)
            first = ends if ends.height else cont
            base, baseline_task = float(first["auc"][0]), int(first["task_index"][0])
        row = cont.row(0, named=True)
        out.append(
            ProbeSeries(
                run_id=str(run_id),
                size=str(row["size"] or ""),
                n_params=int(row["n_params"]),
                normalize=normalize,
                task_index=[int(t) for t in cont["task_index"]],
                lang=[str(x or "") for x in cont["lang"]],
                auc=[float(a) for a in auc],
                tokens_seen=[int(t or 0) for t in cont["tokens_seen"]],
                value=[_normalised(a, base, normalize) for a in auc],
                baseline_auc=base,
                cycle=[int(c) for c in cont["cycle"]],
                repeats=[
                    [_normalised(a, base, normalize) for a in reps] for reps in cont["repeat_auc"]
                ],
                baseline_task=baseline_task,
                method=methods.get(str(run_id), BASELINE),
            )
        )
    out.sort(key=lambda s: (s.n_params, s.run_id))
    return out


def _normalised(auc: float, base: float, normalize: str) -> float:
    """Eq. 1 (% change from AUC_1) or the ratio to the from-scratch AUC."""
    return auc / base if normalize == "alone" else 100.0 * (auc / base - 1.0)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Centred moving average over full windows only: the (window−1)/2 points at each end have
    no complete window and are NaN, so an onset is never read off a half-empty window."""
    if window < 1 or window % 2 == 0:
        raise PlcError(f"--window must be a positive odd number (a centred window), not {window}")
    x = np.asarray(values, dtype=float)
    out = np.full(x.shape, np.nan)
    if x.size >= window:
        half = window // 2
        windows = np.lib.stride_tricks.sliding_window_view(x, window)
        out[half : x.size - half] = windows.mean(axis=1)
    return out


def onset_position(smoothed: Sequence[float]) -> int:
    """Index of the minimum of a smoothed series, ignoring NaN ends. Ties (equal up to rounding
    of the window sums) go to the earliest probe: the first task at which the curve stops falling."""
    y = np.asarray(smoothed, dtype=float)
    ok = ~np.isnan(y)
    if not ok.any():
        raise ValueError("no smoothed value")
    lowest = np.nanmin(y)
    tied = ok & np.isclose(y, lowest, rtol=1e-12, atol=1e-12)
    return int(np.flatnonzero(tied)[0])


def find_onset(series: ProbeSeries, window: int = 3) -> ProbeSeries:
    """Smooth the series and set its onset (task index and tokens seen at that probe)."""
    if series.n_probes < 2:
        where = f"task {series.task_index[0]}" if series.task_index else "none"
        raise PlcError(
            f"run {series.run_id} has a single probe ({where}); an onset needs a series of probes"
        )
    if series.n_probes < window:
        raise PlcError(
            f"run {series.run_id} has {series.n_probes} probes; a centred moving average of "
            f"window {window} needs at least {window} (or pass a smaller --window)"
        )
    smoothed = moving_average(series.value, window)
    i = onset_position(smoothed)
    series.smoothed = [None if math.isnan(v) else float(v) for v in smoothed]
    series.onset = series.task_index[i]
    series.onset_tokens = series.tokens_seen[i]
    return series


# ----------------------------------------------------------------------- how sure an onset is


def trend3(values: np.ndarray | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The trend a run's residuals are resampled around, and each point's leverage: a centred
    3-point moving average with 2-point averages at the two ends (leverage 1/3 inside, 1/2 there)."""
    y = np.asarray(values, dtype=float)
    f = y.copy()
    f[1:-1] = (y[:-2] + y[1:-1] + y[2:]) / 3
    f[0] = (y[0] + y[1]) / 2
    f[-1] = (y[-2] + y[-1]) / 2
    leverage = np.full(y.size, 1 / 3)
    leverage[[0, -1]] = 1 / 2
    return f, leverage


def jitter(values: np.ndarray | Sequence[float]) -> float:
    """The noise unit: SD (n − 1 divisor) of the values around their centred 3-point moving average,
    at the probes with a full window; NaN with fewer than MIN_JITTER_PROBES probes."""
    y = np.asarray(values, dtype=float)
    if y.size < MIN_JITTER_PROBES:
        return float("nan")
    return float(np.std(y[1:-1] - moving_average(y, 3)[1:-1], ddof=1))


def _minima(samples: np.ndarray, window: int) -> np.ndarray:
    """Position of the minimum of each row's centred moving average (full windows only)."""
    if window == 1:
        return samples.argmin(axis=1)
    total = np.cumsum(samples, axis=1)
    sums = total[:, window - 1 :].copy()  # the window sums: same order as the means
    sums[:, 1:] -= total[:, :-window]
    return sums.argmin(axis=1) + window // 2


def resample_minima(
    values: Sequence[float],
    repeats: Sequence[Sequence[float]],
    window: int,
    resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Positions of the smoothed minimum in `resamples` resampled series.

    Each resampled series is the trend (trend3) plus residuals drawn with replacement one by one
    after dividing by sqrt(1 − leverage), so that they have the noise's variance, not the smaller
    variance of residuals around a trend that contains them. Blocks of residuals would carry over
    the negative correlation the 3-point trend puts between neighbours, which hides noise from the
    moving average: in simulation (docs/estimators.md) intervals from single draws covered the
    true onset best, with independent and with autocorrelated noise alike. Where a checkpoint has
    several probe repeats, their resampled mean moves its point too.
    """
    y = np.asarray(values, dtype=float)
    trend, leverage = trend3(y)
    residual = (y - trend) / np.sqrt(1 - leverage)
    residual -= residual.mean()
    samples = trend + residual[rng.integers(0, y.size, size=(resamples, y.size))]
    for i, reps in enumerate(repeats):
        if len(reps) > 1:
            r = np.asarray(reps, dtype=float)
            samples[:, i] += r[rng.integers(0, r.size, size=(resamples, r.size))].mean(1) - r.mean()
    return _minima(samples, window)


@dataclass
class OnsetEvidence:
    """Whether a run shows an onset, and how sure its position is."""

    minimum_task: int  # task index at the smoothed minimum
    detected: bool
    no_onset: str | None  # why not, when not detected
    jitter: float | None  # the noise unit, in the normalised AUC's units
    rise: float | None  # last smoothed value − smoothed minimum, same units
    rise_jitter: float | None  # rise / jitter
    onset_lo: float | None  # percentile interval of the smoothed minimum's task
    onset_hi: float | None
    onset_mass: dict[int, float] | None  # share of resamples with their minimum at each task
    rate: float | None  # OLS slope of the AUC change from the minimum on, % per task
    rate_se: float | None


def _rate(tasks: np.ndarray, values: np.ndarray) -> tuple[float | None, float | None]:
    """OLS slope of values on tasks and its classical standard error (None where undefined)."""
    if tasks.size < 2 or np.ptp(tasks) == 0:
        return None, None
    x = tasks - tasks.mean()
    slope = float((x * (values - values.mean())).sum() / (x * x).sum())
    if tasks.size < 3:
        return slope, None
    resid = values - values.mean() - slope * x
    return slope, float(np.sqrt((resid**2).sum() / (tasks.size - 2) / (x * x).sum()))


def assess_onset(
    series: ProbeSeries,
    window: int = 3,
    ci: float = 0.95,
    min_rise: float = MIN_RISE,
    seed: int = 0,
    resamples: int = RUN_RESAMPLES,
) -> OnsetEvidence:
    """Find the run's smoothed minimum and judge it: edge minimum or a rise within `min_rise`
    jitter units → no onset detected; the minimum's distribution over resampled series; the rate
    of loss (slope of the AUC change after the minimum, % per task: eq. 1, or 100 × the ratio to
    the from-scratch AUC)."""
    import zlib

    find_onset(series, window)
    y = np.asarray(series.value, dtype=float)
    tasks = np.asarray(series.task_index, dtype=float)
    smooth = np.array([np.nan if v is None else v for v in series.smoothed])
    full = np.flatnonzero(~np.isnan(smooth))
    i = series.task_index.index(series.onset)
    noise = jitter(y)
    rise = float(smooth[full[-1]] - smooth[i])
    if math.isnan(noise):
        rise_units = None
    else:
        rise_units = rise / noise if noise > 0 else (math.inf if rise > 0 else 0.0)
    if rise_units is None:
        reason = (
            f"too few probes ({series.n_probes}) to measure the jitter (needs {MIN_JITTER_PROBES})"
        )
    elif i == full[0]:
        reason = (
            f"edge minimum: the smoothed minimum is the first smoothed point (task {series.onset}),"
            " so the AUC may rise from the start; the onset is there or earlier"
        )
    elif i == full[-1]:
        reason = (
            f"edge minimum: the smoothed minimum is the last smoothed point (task {series.onset});"
            " the AUC is still falling"
        )
    elif rise_units < min_rise:
        reason = (
            f"rise within noise: {rise_units:.1f} jitter units after the minimum "
            f"(threshold {min_rise:g})"
        )
    else:
        reason = None
    lo = hi = mass = None
    if rise_units is not None:
        rng = np.random.default_rng([seed, zlib.crc32(series.run_id.encode())])
        picked = tasks[resample_minima(y, series.repeats, window, resamples, rng)]
        lo, hi = np.quantile(picked, [(1 - ci) / 2, (1 + ci) / 2], method="inverted_cdf")
        at, count = np.unique(picked, return_counts=True)
        mass = {int(t): float(c) / resamples for t, c in zip(at, count, strict=True)}
    scale = 100.0 if series.normalize == "alone" else 1.0
    rate, rate_se = _rate(tasks[i:], scale * y[i:])
    return OnsetEvidence(
        minimum_task=int(series.onset),
        detected=reason is None,
        no_onset=reason,
        jitter=None if math.isnan(noise) else noise,
        rise=rise,
        rise_jitter=rise_units,
        onset_lo=None if lo is None else float(lo),
        onset_hi=None if hi is None else float(hi),
        onset_mass=mass,
        rate=rate,
        rate_se=rate_se,
    )


# ------------------------------------------------------------------------------------- fits


@dataclass
class Fit:
    """One functional form fitted to (P, T); every error figure in tasks (T-space)."""

    model: str
    formula: str
    a: float
    a_se: float
    b: float
    b_se: float
    r2: float
    rmse: float
    loo_rmse: float
    n_points: int
    law: str
    a_ci: list[float] | None = None  # percentile interval from --bootstrap
    b_ci: list[float] | None = None

    def predict(self, n_params: np.ndarray | Sequence[float] | float) -> np.ndarray:
        return _predict(self.model, self.a, self.b, np.asarray(n_params, dtype=float))


def _predict(model: str, a: float, b: float, p: np.ndarray) -> np.ndarray:
    if model == "linear":
        return a + b * p
    if model == "linlog":
        return a + b * np.log(p)
    if model == "exp":
        return a * np.exp(b * p)
    return np.exp(a + b * np.log(p))


def _exp_curve(p: np.ndarray, a: float, b: float) -> np.ndarray:
    return a * np.exp(b * p)


def _estimate(
    model: str, p: np.ndarray, t: np.ndarray, start: tuple[float, float]
) -> tuple[float, float, float, float]:
    """Coefficients (a, b) and their standard errors with the estimator Table V used; `start` is
    where the exponential's optimiser begins (the same for the full fit and every fold)."""
    from scipy.optimize import curve_fit
    from scipy.stats import linregress

    if model == "exp":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # inf covariance on 2-point leave-one-out folds
                (a, b), cov = curve_fit(_exp_curve, p, t, p0=start, maxfev=10_000)
        except (RuntimeError, ValueError, OverflowError) as e:
            raise PlcError(
                f"the exponential fit did not converge ({str(e).splitlines()[0]}); "
                "choose another --model"
            ) from e
        se = np.sqrt(np.diag(cov))
        return float(a), float(b), float(se[0]), float(se[1])
    x = p if model == "linear" else np.log(p)
    y = np.log(t) if model == "loglog" else t
    r = linregress(x, y)
    return float(r.intercept), float(r.slope), float(r.intercept_stderr), float(r.stderr)


def _law(model: str, a: float, b: float) -> str:
    if model == "loglog":  # eq. 2
        return f"T = {_num(math.exp(a), 2)}·P^{b:.4f}"
    if model == "linear":
        return f"T = {_num(a)} {'+' if b >= 0 else '−'} {_num(abs(b))}·P"
    if model == "linlog":
        return f"T = {_num(a)} {'+' if b >= 0 else '−'} {_num(abs(b))}·ln P"
    return f"T = {_num(a)}·e^({_num(b)}·P)"


def _num(x: float, digits: int = 4) -> str:
    """`digits` significant digits, with a short exponent: 1.3e-5, 3.594e-7, 26.96."""
    text = f"{x:.{digits}g}"
    if "e" in text:
        mant, exp = text.split("e")
        text = f"{mant}e{int(exp)}"
    return text


def check_points(model: str, p: np.ndarray, t: np.ndarray) -> None:
    """Bad input for a fit: too few points, no spread in P, non-positive values under a log."""
    if p.size < MIN_FIT_POINTS:
        raise PlcError(
            f"a fit needs at least {MIN_FIT_POINTS} (n_params, onset) points, one per run or table "
            f"row; got {p.size}"
        )
    if np.unique(p).size < 2:
        raise PlcError("every point has the same n_params; a fit needs at least two model sizes")
    if model in ("linlog", "loglog") and (p <= 0).any():
        raise PlcError(f"the {model} fit takes ln P, but some n_params are ≤ 0")
    if model == "loglog" and (t <= 0).any():
        raise PlcError("the loglog fit takes ln T, but some onsets are ≤ 0")


def fit_model(model: str, n_params: Sequence[float], onset: Sequence[float]) -> Fit:
    """Fit one of MODELS with the coefficient SEs, R², RMSE and leave-one-out RMSE of Table V."""
    if model not in MODELS:
        raise PlcError(f"unknown model {model!r}; choose from {', '.join(MODELS)} or all")
    p = np.asarray(n_params, dtype=float)
    t = np.asarray(onset, dtype=float)
    check_points(model, p, t)
    # The exponential starts flat at the mean onset of ALL points, in every leave-one-out fold
    # too: Table V's out-of-sample RMSE (588.914) is the one these starts give (docs/estimators.md).
    start = (float(t.mean()), 0.0)
    a, b, a_se, b_se = _estimate(model, p, t, start)
    fitted = _predict(model, a, b, p)
    sse = float(((t - fitted) ** 2).sum())
    sst = float(((t - t.mean()) ** 2).sum())
    held_out = np.empty_like(t)
    for i in range(t.size):
        keep = np.arange(t.size) != i
        if np.unique(p[keep]).size < 2:
            raise PlcError(
                f"leaving out n_params={p[i]:,.0f} leaves a single model size to fit; "
                "leave-one-out needs runs of at least three sizes or two of each"
            )
        ai, bi, _, _ = _estimate(model, p[keep], t[keep], start)
        held_out[i] = _predict(model, ai, bi, p[i : i + 1])[0]
    return Fit(
        model=model,
        formula=FORMULAS[model],
        a=a,
        a_se=a_se,
        b=b,
        b_se=b_se,
        r2=1.0 - sse / sst if sst > 0 else float("nan"),
        rmse=math.sqrt(sse / t.size),
        loo_rmse=float(np.sqrt(((held_out - t) ** 2).mean())),
        n_points=int(t.size),
        law=_law(model, a, b),
    )


def parse_models(text: str) -> list[str]:
    """`all` → the four models; `none` → onsets only; otherwise a comma-separated subset."""
    if text.strip().lower() == "all":
        return list(MODELS)
    if text.strip().lower() == "none":
        return []
    models = [m.strip().lower() for m in text.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise PlcError(f"unknown --model {text!r}; choose from {', '.join(MODELS)} or all")
    return models


def parse_numbers(text: str | None, what: str) -> list[float]:
    """`1e9,7e9` or `1B,7B` or `314M` → floats."""
    if not text:
        return []
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
    out = []
    for item in text.split(","):
        s = item.strip().replace("_", "")
        try:
            out.append(
                float(s[:-1]) * scale[s[-1].lower()] if s and s[-1].lower() in scale else float(s)
            )
        except ValueError as e:
            raise PlcError(f"{what}: {item.strip()!r} is not a number (e.g. 1e9 or 1B)") from e
    if any(v <= 0 for v in out):
        raise PlcError(f"{what} must be positive")
    return out


def format_onset(task: float, lo: float | None, hi: float | None) -> str:
    """`6 [4, 10]`: a task index (an onset, or a smoothed minimum) with its interval, if any."""
    return f"{task:g}" + ("" if lo is None or hi is None else f" [{lo:g}, {hi:g}]")


def format_count(x: float) -> str:
    """Tokens or parameters in short form: 1.8T, 5B, 314.8M, 950."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.4g}{unit}" if abs(x) < 1e15 else f"{x:.3g}"
    return f"{x:.4g}"


# ----------------------------------------------------------------------------- the command


@dataclass
class RunOnset:
    """One run's onset: from its probes (with the evidence for it) or from an onset table's row."""

    run_id: str | None
    size: str
    n_params: int
    n_probes: int | None
    onset: float | None  # None: no onset detected
    onset_tokens: int | None
    seed: str | None = None
    method: str = BASELINE  # the remedies the run trained with (plc.mitigations label)
    minimum_task: int | None = None  # the smoothed minimum, an onset or not
    detected: bool = True
    no_onset: str | None = None
    onset_lo: float | None = None
    onset_hi: float | None = None
    onset_mass: dict[int, float] | None = None
    jitter: float | None = None
    rise: float | None = None
    rise_jitter: float | None = None
    rate: float | None = None
    rate_se: float | None = None
    probe_repeats: int | None = None
    baseline_task: int | None = None
    fitted: bool = False  # one of the fits' points

    @property
    def fit_value(self) -> float | None:
        """The onset a fit uses: the detected one, else (when no-onset runs are kept) the minimum."""
        return self.onset if self.onset is not None else self.minimum_task

    def distribution(self) -> tuple[np.ndarray, np.ndarray]:
        """Tasks and probabilities the bootstrap draws this run's onset from."""
        if self.onset_mass:
            tasks = np.array(list(self.onset_mass), dtype=float)
            p = np.array(list(self.onset_mass.values()), dtype=float)
            return tasks, p / p.sum()
        return np.array([self.fit_value], dtype=float), np.ones(1)


@dataclass
class Prediction:
    model: str
    n_params: float
    onset_tasks: float
    onset_tokens: float
    onset_tasks_ci: list[float] | None = None
    onset_tokens_ci: list[float] | None = None


@dataclass
class BootstrapSummary:
    """How the fits' intervals were made."""

    resamples: int
    ci: float
    seed: int
    resample: str  # cases: runs drawn from all runs; within-size: each size's runs
    used: int  # resamples with at least two sizes (the others cannot be fitted)
    failed: dict[str, int]  # per model: resamples it could not be fitted to


@dataclass
class DenseSuggestion:
    """Cycles to probe densely in a second stage (App. B), around a run's current minimum."""

    run_id: str
    size: str
    minimum_task: int
    cycle: int
    first_cycle: int
    last_cycle: int


def _law_of(fits: Sequence[Fit]) -> str | None:
    return next((f.law for f in fits if f.model == "loglog"), None)


def _exponent_of(fits: Sequence[Fit]) -> str | None:
    f = next((f for f in fits if f.model == "loglog" and f.b_ci is not None), None)
    return None if f is None else f"b = {f.b:.2f} [{f.b_ci[0]:.2f}, {f.b_ci[1]:.2f}]"


@dataclass
class GroupFits:
    """The fits to one group's runs alone (`by="method"`: the runs of one method)."""

    method: str | None  # None: every run, ungrouped
    runs: list[str]  # the points fitted (run ids, or sizes for table rows without one)
    fits: list[Fit]
    fits_skipped: str | None = None  # why this group has no fit (too few points, one size…)
    bootstrap: BootstrapSummary | None = None
    predictions: list[Prediction] = field(default_factory=list)

    @property
    def law(self) -> str | None:
        return _law_of(self.fits)

    @property
    def exponent(self) -> str | None:
        return _exponent_of(self.fits)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "law": self.law, "exponent": self.exponent}


@dataclass
class OnsetResult:
    runs: list[RunOnset]
    fits: list[Fit]
    predictions: list[Prediction]
    task_tokens: float
    task_tokens_source: str
    normalize: str
    probe_after: list[str] | None
    window: int
    auc_from: str = "0"
    ci: float = 0.95
    min_rise: float = MIN_RISE
    noise: str = NOISE_UNIT
    run_resamples: int = RUN_RESAMPLES
    excluded: list[str] = field(default_factory=list)  # runs left out of the fits: no onset
    fits_skipped: str | None = None  # why no fit was made after leaving those out
    bootstrap: BootstrapSummary | None = None
    dense: list[DenseSuggestion] = field(default_factory=list)
    dense_cycles: str | None = None  # one range covering every run's suggestion
    out: str | None = None
    by: str | None = None  # "method": the fits are per group, in `groups`, not in `fits`
    groups: list[GroupFits] = field(default_factory=list)

    @property
    def law(self) -> str | None:
        """The log-log law in the form of eq. 2, when that model was fitted."""
        return _law_of(self.fits)

    @property
    def exponent(self) -> str | None:
        """The log-log exponent with its bootstrap interval: `b = 0.83 [0.61, 1.05]`."""
        return _exponent_of(self.fits)

    @property
    def methods(self) -> list[str]:
        """The runs' methods, the baseline first."""
        return method_order(r.method for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = {**asdict(self), "law": self.law, "exponent": self.exponent}
        out["groups"] = [g.to_dict() for g in self.groups]
        return out


def collect_onsets(
    inputs: Iterable[str | Path],
    normalize: str = "first",
    probe_after: Sequence[str] | None = PAPER_PROBE_AFTER,
    window: int = 3,
    *,
    auc_from: str = "0",
    ci: float = 0.95,
    min_rise: float = MIN_RISE,
    seed: int = 0,
) -> tuple[list[RunOnset], list[ProbeSeries]]:
    """Every run's onset (None where none is detected) and the evidence for it from metric
    files, plus the rows of any onset tables among the inputs."""
    metric_files, table = split_inputs(expand_inputs(inputs))
    series = (
        probe_series(read_probes(metric_files), normalize, probe_after, auc_from)
        if metric_files
        else []
    )
    runs = []
    for s in series:
        ev = assess_onset(s, window, ci, min_rise, seed)
        runs.append(
            RunOnset(
                run_id=s.run_id,
                size=s.size,
                n_params=s.n_params,
                n_probes=s.n_probes,
                onset=float(ev.minimum_task) if ev.detected else None,
                onset_tokens=s.onset_tokens if ev.detected else None,
                method=s.method,
                minimum_task=ev.minimum_task,
                detected=ev.detected,
                no_onset=ev.no_onset,
                onset_lo=ev.onset_lo,
                onset_hi=ev.onset_hi,
                onset_mass=ev.onset_mass,
                jitter=ev.jitter,
                rise=ev.rise,
                rise_jitter=ev.rise_jitter,
                rate=ev.rate,
                rate_se=ev.rate_se,
                probe_repeats=s.n_repeats,
                baseline_task=s.baseline_task,
            )
        )
    if table is not None:
        for r in table.iter_rows(named=True):
            mass = (
                dict(zip(r["mass_task"], r["mass_p"], strict=True))
                if r["mass_task"] and r["mass_p"]
                else None
            )
            runs.append(
                RunOnset(
                    run_id=r["run_id"],
                    size=r["size"],
                    n_params=int(r["n_params"]),
                    n_probes=r["n_probes"],
                    onset=r["onset"] if r["detected"] else None,
                    onset_tokens=r["onset_tokens"] if r["detected"] else None,
                    seed=r["seed"],
                    method=r["method"],
                    minimum_task=r["minimum_task"],
                    detected=r["detected"],
                    no_onset=r["no_onset"],
                    onset_lo=r["onset_lo"],
                    onset_hi=r["onset_hi"],
                    onset_mass=mass,
                    jitter=r["jitter"],
                    rise_jitter=r["rise_jitter"],
                    rate=r["rate"],
                    rate_se=r["rate_se"],
                )
            )
    runs.sort(key=lambda r: (r.n_params, r.run_id or "", r.seed or ""))
    return runs, series


def _task_tokens(series: Sequence[ProbeSeries]) -> float | None:
    """Tokens per task seen in the probed checkpoints (median of tokens_seen / task_index)."""
    ratios = [
        tok / task
        for s in series
        for task, tok in zip(s.task_index, s.tokens_seen, strict=True)
        if task > 0 and tok > 0
    ]
    return float(np.median(ratios)) if ratios else None


def check_interval_options(ci: float, bootstrap: int | None, resample: str) -> None:
    """Bad input for the interval options, before any file is read."""
    if not 0 < ci < 1:
        raise PlcError(f"--ci is a level between 0 and 1 (e.g. 0.95), not {ci:g}")
    if bootstrap is not None and bootstrap < MIN_BOOTSTRAP:
        raise PlcError(
            f"--bootstrap {bootstrap} is too few: a percentile interval is read from the "
            f"resamples beyond each of its ends, so it needs at least {MIN_BOOTSTRAP} "
            "(1000 or more for stable ends)"
        )
    if resample not in RESAMPLE:
        raise PlcError(f"--resample must be {' or '.join(RESAMPLE)}, not {resample!r}")


def _ols_rows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intercepts and slopes of one least-squares line per row."""
    xm, ym = x.mean(axis=1, keepdims=True), y.mean(axis=1, keepdims=True)
    slope = ((x - xm) * (y - ym)).sum(axis=1) / ((x - xm) ** 2).sum(axis=1)
    return ym[:, 0] - slope * xm[:, 0], slope


def bootstrap_fits(
    runs: Sequence[RunOnset],
    models: Sequence[str],
    resamples: int,
    ci: float = 0.95,
    seed: int = 0,
    resample: str = "cases",
    predict: Sequence[float] = (),
) -> tuple[dict[str, dict[str, Any]], BootstrapSummary]:
    """Percentile intervals of each model's a, b and predictions at `predict` over fits to
    resampled runs: runs drawn with replacement from all runs (`cases`: sizes × seeds) or from
    each size's runs (`within-size`), each drawing its onset from its onset distribution.

    Returns {model: {"a": [lo, hi], "b": [lo, hi], "predict": [[lo, hi], …]}} (None where no
    resample could be fitted) and a summary.
    The estimators are the point fits' (OLS in the model's space; the exponential by nonlinear
    least squares started flat at the resample's mean onset).
    """
    from scipy.optimize import curve_fit

    p = np.array([r.n_params for r in runs], dtype=float)
    m = p.size
    rng = np.random.default_rng(seed)
    if resample == "cases":
        pick = rng.integers(0, m, size=(resamples, m))
    else:
        pick = np.empty((resamples, m), dtype=int)
        for size in np.unique(p):
            members = np.flatnonzero(p == size)
            pick[:, members] = rng.choice(members, size=(resamples, members.size))
    t = np.empty(pick.shape)
    for j, run in enumerate(runs):
        where = pick == j
        tasks, prob = run.distribution()
        t[where] = rng.choice(tasks, size=int(where.sum()), p=prob)
    x = p[pick]
    usable = np.ptp(x, axis=1) > 0
    x, t = x[usable], t[usable]
    where_at = np.asarray(predict, dtype=float)
    level = [(1 - ci) / 2, (1 + ci) / 2]
    out: dict[str, dict[str, Any]] = {}
    failed: dict[str, int] = {}
    for model in models:
        ok = np.ones(t.shape[0], dtype=bool)
        if model == "exp":
            a = np.full(t.shape[0], np.nan)
            b = np.full(t.shape[0], np.nan)
            for k in range(t.shape[0]):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        (a[k], b[k]), _ = curve_fit(
                            _exp_curve, x[k], t[k], p0=(t[k].mean(), 0.0), maxfev=10_000
                        )
                except (RuntimeError, ValueError, OverflowError):
                    pass
            ok = np.isfinite(a) & np.isfinite(b)
        elif model == "loglog":
            ok = (t > 0).all(axis=1)
            a, b = np.full(t.shape[0], np.nan), np.full(t.shape[0], np.nan)
            a[ok], b[ok] = _ols_rows(np.log(x[ok]), np.log(t[ok]))
        else:
            a, b = _ols_rows(x if model == "linear" else np.log(x), t)
        failed[model] = int((~ok).sum())
        a, b = a[ok], b[ok]
        if a.size == 0:  # e.g. every resample holds an onset ≤ 0 under the log-log model's log
            out[model] = {"a": None, "b": None, "predict": [None] * where_at.size}
            continue
        pred = _predict(model, a[:, None], b[:, None], where_at[None, :])
        out[model] = {
            "a": np.quantile(a, level).tolist(),
            "b": np.quantile(b, level).tolist(),
            "predict": np.quantile(pred, level, axis=0).T.tolist() if where_at.size else [],
        }
    summary = BootstrapSummary(resamples, ci, seed, resample, int(usable.sum()), failed)
    return out, summary


def suggest_dense(series: Sequence[ProbeSeries], cycles: int) -> list[DenseSuggestion]:
    """Per run: the cycles within `cycles` of its smoothed minimum's cycle (App. B's second stage
    probes after zh, de and ru there), inside the cycles it has probes for."""
    if cycles < 0:
        raise PlcError(f"--suggest-dense takes a number of cycles ≥ 0, not {cycles}")
    out = []
    for s in series:
        c = s.cycle[s.task_index.index(s.onset)]
        out.append(
            DenseSuggestion(
                run_id=s.run_id,
                size=s.size,
                minimum_task=int(s.onset),
                cycle=c,
                first_cycle=max(min(s.cycle), c - cycles, 1),
                last_cycle=min(max(s.cycle), c + cycles),
            )
        )
    return out


def split_by_method(runs: Sequence[RunOnset]) -> dict[str, list[RunOnset]]:
    """The runs of each method, the baseline first."""
    return {m: [r for r in runs if r.method == m] for m in method_order(r.method for r in runs)}


def _check_within_size(points: Sequence[RunOnset]) -> None:
    sizes = {r.n_params for r in points}
    if len(sizes) == len(points) and not any(len(r.distribution()[0]) > 1 for r in points):
        raise PlcError(
            "--resample within-size resamples each size's runs, but every size here has one "
            "run and no onset distribution; add runs (seeds) per size or use --resample cases"
        )


def fit_groups(
    points: Sequence[RunOnset],
    left_out: Sequence[RunOnset],
    models: Sequence[str],
    by: str | None = None,
) -> list[GroupFits]:
    """The fits of `models` to the points' (n_params, fit_value): to all of them, or with
    `by="method"` to each method's alone, the baseline first. A group that cannot be fitted (too
    few points, a single size…) keeps the reason. Bad input when no group can be fitted and no run
    was left out of the fits: ungrouped (or with one method), exactly the error of fitting every
    point; `left_out` are the runs with no onset detected, counted in a group's reason."""
    check_by(by)
    if by is None:
        groups = {None: (list(points), list(left_out))}
    else:
        kept, out = split_by_method(points), split_by_method(left_out)
        groups = {m: (kept.get(m, []), out.get(m, [])) for m in method_order([*kept, *out])}
    fitted, errors = [], []
    for method, (mine, theirs) in groups.items():
        try:
            fits = [
                fit_model(m, [r.n_params for r in mine], [r.fit_value for r in mine])
                for m in models
            ]
            skipped = None
        except PlcError as e:
            errors.append((method, e))
            fits = []
            skipped = str(e)
            if theirs:
                skipped += f" (after leaving out {len(theirs)} runs with no onset detected)"
        fitted.append(GroupFits(method, [r.run_id or r.size for r in mine], fits, skipped))
    if errors and len(errors) == len(groups) and not left_out:
        if len(errors) == 1:
            raise errors[0][1]
        raise PlcError(
            "no method's runs can be fitted: " + "; ".join(f"{m}: {e}" for m, e in errors)
        )
    return fitted


def _predictions(
    fits: Sequence[Fit],
    predict: Sequence[float],
    tokens: float,
    intervals: dict[str, dict[str, Any]] | None,
) -> list[Prediction]:
    """Each fit's onset at the sizes to predict, in tasks and tokens, with bootstrap intervals."""
    out = []
    for f in fits:
        ranges = intervals[f.model]["predict"] if intervals else [None] * len(predict)
        for pp, tt, rr in zip(
            predict, f.predict(np.asarray(predict, dtype=float)), ranges, strict=True
        ):
            out.append(
                Prediction(
                    f.model,
                    float(pp),
                    float(tt),
                    float(tt) * tokens,
                    onset_tasks_ci=rr,
                    onset_tokens_ci=None if rr is None else [v * tokens for v in rr],
                )
            )
    return out


def fit_onset(
    inputs: Iterable[str | Path],
    models: Sequence[str] = MODELS,
    normalize: str = "first",
    probe_after: Sequence[str] | None = PAPER_PROBE_AFTER,
    window: int = 3,
    predict: Sequence[float] = (),
    task_tokens: float | None = None,
    out: str | Path | None = None,
    force: bool = False,
    *,
    auc_from: str = "0",
    ci: float = 0.95,
    min_rise: float = MIN_RISE,
    keep_no_onset: bool = False,
    bootstrap: int | None = None,
    resample: str = "cases",
    seed: int = 0,
    suggest: int | None = None,
    by: str | None = None,
) -> OnsetResult:
    """`plc fit-onset`: onsets per run with their intervals (runs with no onset detected are
    reported and, unless `keep_no_onset`, left out of the fits), the fits of Table V with
    bootstrap intervals when `bootstrap` resamples are asked for, predictions; optionally the
    onset table as Parquet (fit-onset and plot onset read it back) and, with `suggest`, the
    cycles around each run's minimum to probe densely. `by="method"` fits (and bootstraps, and
    predicts) each method's runs apart; the result's `groups` hold those fits."""
    from plc.store import check_output

    check_by(by)
    check_interval_options(ci, bootstrap, resample)
    if bootstrap is not None and not models:
        raise PlcError("--bootstrap refits the models, but --model none fits nothing")
    if min_rise < 0:
        raise PlcError(f"--min-rise is a number of jitter units ≥ 0, not {min_rise:g}")
    if out is not None:
        check_output(out, force)
    runs, series = collect_onsets(
        inputs,
        normalize,
        probe_after,
        window,
        auc_from=auc_from,
        ci=ci,
        min_rise=min_rise,
        seed=seed,
    )
    dense = []
    if suggest is not None:
        if not series:
            raise PlcError("--suggest-dense reads probe metric files; an onset table has no probes")
        dense = suggest_dense(series, suggest)
    points = [r for r in runs if r.fit_value is not None and (r.detected or keep_no_onset)]
    for r in points:
        r.fitted = True
    left_out = [r for r in runs if not r.fitted]
    members = {None: points} if by is None else split_by_method(points)
    if bootstrap is not None and resample == "within-size":
        for group in members.values():
            _check_within_size(group)
    groups = fit_groups(points, left_out, models, by)
    if task_tokens is not None:
        tokens, source = float(task_tokens), "--task-tokens"
    elif (seen := _task_tokens(series)) is not None:
        tokens, source = seen, "from the probe metrics"
    else:
        tokens, source = float(PAPER_TASK_TOKENS), "the paper's, §IV-A"
    for g in groups:
        intervals = None
        if bootstrap is not None and g.fits:
            intervals, g.bootstrap = bootstrap_fits(
                members[g.method], [f.model for f in g.fits], bootstrap, ci, seed, resample, predict
            )
            for f in g.fits:
                f.a_ci, f.b_ci = intervals[f.model]["a"], intervals[f.model]["b"]
        g.predictions = _predictions(g.fits, predict, tokens, intervals)
    whole = groups[0] if by is None else GroupFits(None, [], [])
    result = OnsetResult(
        runs=runs,
        fits=whole.fits,
        predictions=whole.predictions,
        task_tokens=tokens,
        task_tokens_source=source,
        normalize=normalize,
        probe_after=list(probe_after) if probe_after is not None else None,
        window=window,
        auc_from=auc_from,
        ci=ci,
        min_rise=min_rise,
        excluded=[r.run_id or r.size for r in left_out],
        fits_skipped=whole.fits_skipped,
        bootstrap=whole.bootstrap,
        dense=dense,
        dense_cycles=(
            f"{min(d.first_cycle for d in dense)}-{max(d.last_cycle for d in dense)}"
            if dense
            else None
        ),
        by=by,
        groups=[] if by is None else groups,
    )
    if out is not None:
        result.out = str(write_onset_table(out, runs, force))
    return result


def write_onset_table(path: str | Path, runs: Sequence[RunOnset], force: bool = False) -> Path:
    """One row per run with every column of TABLE_COLUMNS (the onset mass as two lists)."""
    import polars as pl

    from plc.store import atomic_path

    values: dict[str, list] = {c: [] for c in TABLE_COLUMNS}
    for r in runs:
        row = {c: getattr(r, c, None) for c in TABLE_COLUMNS}
        row["mass_task"] = list(r.onset_mass) if r.onset_mass else None
        row["mass_p"] = list(r.onset_mass.values()) if r.onset_mass else None
        for c in TABLE_COLUMNS:
            values[c].append(row[c])
    df = pl.DataFrame(values, schema={**_table_schema(), "n_params": pl.Int64})
    with atomic_path(path, force) as tmp:
        df.write_parquet(tmp)
    return Path(path)
