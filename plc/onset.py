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
from plc.protocol import MIN_FIT_POINTS, PAPER_PROBE_AFTER

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


def _onset_table(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    import polars as pl

    try:
        out = df.select(
            pl.col("n_params").cast(pl.Float64),
            pl.col("onset").cast(pl.Float64),
            (
                pl.col("size").cast(pl.String) if "size" in df.columns else pl.lit(None, pl.String)
            ).alias("size"),
            (
                pl.col("run_id").cast(pl.String)
                if "run_id" in df.columns
                else pl.lit(None, pl.String)
            ).alias("run_id"),
        )
    except Exception as e:
        raise PlcError(f"{path}: n_params and onset must be numbers") from e
    if out.height == 0:
        raise PlcError(f"{path} is an empty onset table")
    if out["n_params"].null_count() or out["onset"].null_count():
        raise PlcError(f"{path} has empty n_params or onset cells")
    return out.with_columns(
        pl.col("size").fill_null(pl.col("n_params").map_elements(_size_name, pl.String))
    )


def _size_name(n: float) -> str:
    return f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n:,.0f}"


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
    auc: list[float]
    tokens_seen: list[int]
    value: list[float]  # normalised AUC (eq. 1 in %, or the ratio to the from-scratch AUC)
    baseline_auc: float  # AUC_1 (first) or the from-scratch AUC (alone)
    smoothed: list[float | None] = field(default_factory=list)
    onset: int | None = None  # task index
    onset_tokens: int | None = None

    @property
    def n_probes(self) -> int:
        return len(self.task_index)


def parse_probe_after(text: str | None) -> tuple[str, ...] | None:
    """`zh,de,ru` → the languages; `all` (or nothing) → no filter."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    langs = tuple(x.strip() for x in text.split(",") if x.strip())
    if not langs:
        raise PlcError(f"--probe-after {text!r} names no language")
    return langs


def probe_series(
    probes: pl.DataFrame,
    normalize: str = "first",
    probe_after: Sequence[str] | None = PAPER_PROBE_AFTER,
) -> list[ProbeSeries]:
    """Per run: one AUC per probed checkpoint (repeats averaged), filtered and normalised."""
    import polars as pl

    if normalize not in NORMALIZE:
        raise PlcError(f"--normalize must be one of {', '.join(NORMALIZE)}, not {normalize!r}")
    df = probes
    if "from_scratch" not in df.columns:
        df = df.with_columns(pl.lit(False).alias("from_scratch"))
    for col, default in (("size", ""), ("lang", ""), ("tokens_seen", 0)):
        if col not in df.columns:
            df = df.with_columns(pl.lit(default).alias(col))
    # A probe file repeats its AUC on every evaluation row; repeated probes of one checkpoint
    # (files with a suffix) are averaged.
    per_probe = (
        df.with_columns(pl.col("from_scratch").fill_null(False))
        .group_by("run_id", "from_scratch", "task_index")
        .agg(
            pl.col("size").first(),
            pl.col("n_params").first(),
            pl.col("lang").first(),
            pl.col("auc").mean(),
            pl.col("tokens_seen").first(),
        )
        .sort("run_id", "task_index")
    )
    out = []
    for (run_id,), rows in per_probe.group_by("run_id", maintain_order=True):
        scratch = rows.filter(pl.col("from_scratch"))
        cont = rows.filter(~pl.col("from_scratch"))
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
        if normalize == "alone":
            if scratch.height == 0:
                raise PlcError(
                    f"run {run_id} has no from-scratch probe for --normalize alone "
                    "(probe the untrained checkpoint with plc probe --from-scratch)"
                )
            base = float(scratch["auc"].mean())
            value = [a / base for a in auc]
        else:
            base = float(auc[0])
            value = [100.0 * (a / base - 1.0) for a in auc]
        first = cont.row(0, named=True)
        out.append(
            ProbeSeries(
                run_id=str(run_id),
                size=str(first["size"] or ""),
                n_params=int(first["n_params"]),
                normalize=normalize,
                task_index=[int(t) for t in cont["task_index"]],
                lang=[str(x or "") for x in cont["lang"]],
                auc=[float(a) for a in auc],
                tokens_seen=[int(t or 0) for t in cont["tokens_seen"]],
                value=value,
                baseline_auc=base,
            )
        )
    out.sort(key=lambda s: (s.n_params, s.run_id))
    return out


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


def format_count(x: float) -> str:
    """Tokens or parameters in short form: 1.8T, 5B, 314.8M, 950."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.4g}{unit}" if abs(x) < 1e15 else f"{x:.3g}"
    return f"{x:.4g}"


# ----------------------------------------------------------------------------- the command


@dataclass
class RunOnset:
    run_id: str | None
    size: str
    n_params: int
    n_probes: int | None
    onset: float
    onset_tokens: int | None


@dataclass
class Prediction:
    model: str
    n_params: float
    onset_tasks: float
    onset_tokens: float


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
    out: str | None = None

    @property
    def law(self) -> str | None:
        """The log-log law in the form of eq. 2, when that model was fitted."""
        return next((f.law for f in self.fits if f.model == "loglog"), None)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "law": self.law}


def collect_onsets(
    inputs: Iterable[str | Path],
    normalize: str = "first",
    probe_after: Sequence[str] | None = PAPER_PROBE_AFTER,
    window: int = 3,
) -> tuple[list[RunOnset], list[ProbeSeries]]:
    """Onsets per run from metric files, plus the rows of any onset tables among the inputs."""
    metric_files, table = split_inputs(expand_inputs(inputs))
    series = (
        [
            find_onset(s, window)
            for s in probe_series(read_probes(metric_files), normalize, probe_after)
        ]
        if metric_files
        else []
    )
    runs = [
        RunOnset(s.run_id, s.size, s.n_params, s.n_probes, float(s.onset), s.onset_tokens)
        for s in series
    ]
    if table is not None:
        runs += [
            RunOnset(r["run_id"], r["size"], int(r["n_params"]), None, float(r["onset"]), None)
            for r in table.iter_rows(named=True)
        ]
    runs.sort(key=lambda r: (r.n_params, r.run_id or ""))
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
) -> OnsetResult:
    """`plc fit-onset`: onsets per run, the fits of Table V, predictions; optionally the onset
    table as Parquet (fit-onset and plot onset read it back)."""
    from plc.store import check_output

    if out is not None:
        check_output(out, force)
    runs, series = collect_onsets(inputs, normalize, probe_after, window)
    p = np.array([r.n_params for r in runs], dtype=float)
    t = np.array([r.onset for r in runs], dtype=float)
    fits = [fit_model(m, p, t) for m in models]
    if task_tokens is not None:
        tokens, source = float(task_tokens), "--task-tokens"
    elif (seen := _task_tokens(series)) is not None:
        tokens, source = seen, "from the probe metrics"
    else:
        tokens, source = float(PAPER_TASK_TOKENS), "the paper's, §IV-A"
    predictions = [
        Prediction(f.model, float(pp), float(tt), float(tt) * tokens)
        for f in fits
        for pp, tt in zip(predict, f.predict(np.asarray(predict, dtype=float)), strict=True)
    ]
    result = OnsetResult(
        runs=runs,
        fits=fits,
        predictions=predictions,
        task_tokens=tokens,
        task_tokens_source=source,
        normalize=normalize,
        probe_after=list(probe_after) if probe_after is not None else None,
        window=window,
    )
    if out is not None:
        result.out = str(write_onset_table(out, runs, force))
    return result


def write_onset_table(path: str | Path, runs: Sequence[RunOnset], force: bool = False) -> Path:
    import polars as pl

    from plc.store import atomic_path

    df = pl.DataFrame(
        {
            "run_id": [r.run_id for r in runs],
            "size": [r.size for r in runs],
            "n_params": [r.n_params for r in runs],
            "n_probes": [r.n_probes for r in runs],
            "onset": [r.onset for r in runs],
            "onset_tokens": [r.onset_tokens for r in runs],
        },
        schema={
            "run_id": pl.String,
            "size": pl.String,
            "n_params": pl.Int64,
            "n_probes": pl.Int64,
            "onset": pl.Float64,
            "onset_tokens": pl.Int64,
        },
    )
    with atomic_path(path, force) as tmp:
        df.write_parquet(tmp)
    return Path(path)
