"""A run's probe series: one AUC per probed checkpoint (repeats averaged), filtered by the language
trained before the probe and normalised (eq. 1, or the ratio to the from-scratch AUC); and the
paper's own onset read-out (Table IV): the minimum of a centred moving average, kept as a
descriptive column beside the model-based onset (plc.onset.detect)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from plc.errors import PlcError
from plc.onset.inputs import BASELINE, run_methods
from plc.protocol import CYCLE, ONSET_WINDOW, PAPER_PROBE_AFTER, cycle_of

if TYPE_CHECKING:
    import polars as pl

NORMALIZE = ("first", "alone")
AUC_FROM = ("0", "first")  # the probe curve's area from step 0 (as probe stores it) or after it
END_OF_CYCLE = CYCLE[-1]  # eq. 1's AUC_1 is the first probe after it (App. B probed after ru)
MIN_JITTER_PROBES = 4  # a 3-point trend leaves residuals at n − 2 probes; an SD needs two


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
    _check_one_probe_setup(df)
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


# What makes two probes of a run comparable: the language probed and the evaluation windows.
_SETUP = {"probe_lang": "probe languages", "eval_seed": "evaluation windows (eval seeds)"}


def _check_one_probe_setup(df: pl.DataFrame) -> None:
    """Bad input when one run's probes measure different things: a series of AUCs of two probe
    languages, or of two sets of evaluation windows, has steps that are not plasticity."""
    import polars as pl

    for col, what in _SETUP.items():
        if col not in df.columns:
            continue
        mixed = (
            df.filter(pl.col(col).is_not_null())
            .group_by("run_id")
            .agg(pl.col(col).unique().sort())
            .filter(pl.col(col).list.len() > 1)
        )
        if mixed.height:
            run, values = mixed.row(0)
            raise PlcError(
                f"run {run} mixes probe files of two {what} ({', '.join(map(str, values))}); "
                "pass the files of one probe set-up"
            )


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


def check_series(series: ProbeSeries) -> None:
    """Bad input: a run with a single probe has no series to find an onset in."""
    if series.n_probes < 2:
        where = f"task {series.task_index[0]}" if series.task_index else "none"
        raise PlcError(
            f"run {series.run_id} has a single probe ({where}); an onset needs a series of probes"
        )


def find_onset(series: ProbeSeries, window: int = ONSET_WINDOW) -> ProbeSeries:
    """Smooth the series and set its onset (task index and tokens seen at that probe)."""
    check_series(series)
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


def jitter(values: np.ndarray | Sequence[float]) -> float:
    """The noise unit: SD (n − 1 divisor) of the values around their centred 3-point moving average,
    at the probes with a full window; NaN with fewer than MIN_JITTER_PROBES probes."""
    y = np.asarray(values, dtype=float)
    if y.size < MIN_JITTER_PROBES:
        return float("nan")
    return float(np.std(y[1:-1] - moving_average(y, 3)[1:-1], ddof=1))
