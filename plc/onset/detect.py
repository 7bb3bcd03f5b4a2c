"""Is there an onset, where, and how sure: the test and the interval under the noise model.

Per run (plc.onset.noise has the model): the best non-increasing trend (the null, "no rise after
the minimum") and the best trend with a rise after its minimum (the alternative, whose minimum is
the onset τ̂) by profile likelihood over the knot, ρ and σ. The statistic is their log-likelihood
ratio. Its null distribution comes from a parametric bootstrap of the fitted null (its trend plus
AR(1) noise), each sample refitted exactly as the data; p-value = (1 + #{LR* ≥ LR}) / (B + 1).
The onset's interval: percentiles of τ̂* over a parametric bootstrap of the fitted alternative.

Short series estimate ρ too low (the trend absorbs slow noise), and AR noise simulated with a
too-low ρ makes the observed LR look extreme: that is how autocorrelated noise is over-called. So
each bootstrap first measures the bias of (ρ̂, variance) on a pilot sample drawn from the fit,
and draws its samples with the corrected values (one step of bootstrap bias correction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from plc.errors import PlcError
from plc.onset.noise import MAX_RHO, Design, Fits, min_probes, offset_groups, simulate
from plc.onset.series import ProbeSeries, check_series, find_onset, jitter
from plc.protocol import ONSET_ALPHA, ONSET_WINDOW

ALPHA = ONSET_ALPHA
NULL_SAMPLES = 400  # p-values to ±0.011 at 0.05
ALT_SAMPLES = 400
PILOT_SAMPLES = 50  # samples per true ρ measuring the bias of ρ̂ and of the variance
PILOT_RHOS = np.array([0.0, 0.25, 0.5, 0.7, 0.85, MAX_RHO])


@dataclass
class Verdict:
    """The test and the onset of one series, in probe positions (indices into its tasks)."""

    p_value: float
    detected: bool
    knot: int  # the alternative's onset (its trend's minimum); n − 1 where no rise fits
    still_falling: bool  # the best trend overall falls through the last probe
    rho: float  # bias-corrected AR(1) coefficient of the residuals (of the alternative)
    noise_sd: float  # bias-corrected stationary SD of the residuals
    rise: float  # the alternative's trend from its minimum to its highest point after it
    knots: np.ndarray  # τ̂ of each sample of the fitted alternative


def _corrected(
    design: Design,
    mean: np.ndarray,
    rho: float,
    var: float,
    which: int,
    extra_var: float,
    rng: np.random.Generator,
    pilot_samples: int = PILOT_SAMPLES,
) -> tuple[float, float]:
    """(ρ, variance) whose fits, on samples of `mean` drawn with them, give on average the
    estimates the data gave: the estimator's mean over pilot samples at a few true ρ, inverted
    by interpolation (refitting the same hypothesis, 0: null, 1: alternative)."""
    draws = np.concatenate([_draw(mean, r, var, extra_var, pilot_samples, rng) for r in PILOT_RHOS])
    pilot = design.fit(draws)
    shape = (len(PILOT_RHOS), -1)
    got = np.where(
        np.isfinite(getattr(pilot, f"loglik{which}")), getattr(pilot, f"rho{which}"), np.nan
    ).reshape(shape)
    ratio = getattr(pilot, f"var{which}").reshape(shape) / var
    keep = np.isfinite(got).any(axis=1)
    if not keep.any():
        return rho, var
    grid = PILOT_RHOS[keep]
    mean_rho = np.nanmean(got[keep], axis=1)
    mean_ratio = np.nanmean(np.where(np.isfinite(got), ratio, np.nan)[keep], axis=1)
    mean_rho = np.maximum.accumulate(mean_rho)  # the estimator's mean grows with the true ρ
    rho_c = float(np.interp(rho, mean_rho, grid))
    return rho_c, var / max(float(np.interp(rho_c, grid, mean_ratio)), 1e-3)


def _draw(
    mean: np.ndarray, rho: float, var: float, extra_var: float, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Samples of the model: AR(1) noise of variance var − extra_var plus independent noise of the
    probe repeats' mean (extra_var; 0 with one probe per checkpoint)."""
    ar = max(var - extra_var, 0.25 * var)
    out = simulate(mean, rho, ar, size, rng)
    if extra_var > 0:
        out += rng.normal(0.0, math.sqrt(min(extra_var, 0.75 * var)), out.shape)
    return out


def judge_onset(
    design: Design,
    y: np.ndarray,
    rng: np.random.Generator,
    alpha: float = ALPHA,
    repeat_var: float = 0.0,
    null_samples: int = NULL_SAMPLES,
    alt_samples: int = ALT_SAMPLES,
    pilot_samples: int = PILOT_SAMPLES,
) -> Verdict:
    """The verdict for one series under `design`; `repeat_var` is the variance of a checkpoint's
    mean over its probe repeats (where there are several), drawn independently in every sample."""
    y = np.asarray(y, dtype=float)
    fit = design.fit(y[None, :])
    n = design.n
    lr = float(fit.lr[0])
    best_is_null = fit.loglik0[0] >= fit.loglik1[0]
    still_falling = bool(best_is_null and _falls_at_end(design, y, fit))
    mean0, _ = design.trend(y, int(fit.cand0[0]), float(fit.rho0[0]))
    if not np.isfinite(fit.loglik1[0]):  # no trend rises after its minimum
        rho0, var0 = _corrected(
            design, mean0, float(fit.rho0[0]), float(fit.var0[0]), 0, repeat_var, rng, pilot_samples
        )
        return Verdict(1.0, False, n - 1, still_falling, rho0, math.sqrt(var0), 0.0, np.array([]))
    # The noise is measured around the alternative: a null trend misfits a series that rises, and
    # its residuals would count that misfit as slow noise (and hide the rise in it).
    cand1, rho1 = int(fit.cand1[0]), float(fit.rho1[0])
    mean1, trend1 = design.trend(y, cand1, rho1)
    rho0, var0 = _corrected(
        design, mean0, float(fit.rho0[0]), float(fit.var0[0]), 0, repeat_var, rng, pilot_samples
    )
    null = design.fit(_draw(mean0, rho0, var0, repeat_var, null_samples, rng))
    rho, var = _corrected(
        design, mean1, rho1, float(fit.var1[0]), 1, repeat_var, rng, pilot_samples
    )
    p = (1 + int((null.lr >= lr - 1e-9).sum())) / (null_samples + 1)
    alt: Fits = design.fit(_draw(mean1, rho, var, repeat_var, alt_samples, rng))
    knot = int(fit.knot[0])
    return Verdict(
        p_value=p,
        detected=p < alpha,
        knot=knot,
        still_falling=still_falling,
        rho=rho,
        noise_sd=math.sqrt(var),
        rise=float(trend1[knot:].max() - trend1[knot]),
        knots=alt.knot,
    )


def _falls_at_end(design: Design, y: np.ndarray, fit: Fits) -> bool:
    """Does the best null trend still fall over its last two probes?"""
    _, trend = design.trend(y, int(fit.cand0[0]), float(fit.rho0[0]))
    return bool(trend[-1] < trend[-2] - 1e-12 * max(1.0, abs(trend[-2])))


@dataclass
class OnsetEvidence:
    """Whether a run shows an onset, where, and how sure; with the descriptive columns."""

    minimum_task: (
        int  # the fitted trend's minimum: the onset if detected; the last probe if falling
    )
    detected: bool
    at_start: bool  # the onset is the first probe: loss of plasticity from the first probe on
    p_value: float  # of "no rise after the minimum" under the noise model
    no_onset: str | None  # why not, when not detected
    onset_lo: float | None  # percentile interval of the minimum's task
    onset_hi: float | None
    onset_mass: dict[int, float] | None  # share of the fitted alternative's samples per task
    noise_sd: float  # SD of the AR(1) residuals, in the normalised AUC's units
    rho: float  # their lag-1 autocorrelation (probe to probe)
    rise_sd: float | None  # rise of the fitted trend after its minimum, in noise SDs
    offsets: list[str]  # the probe positions with their own offset (none: one intercept)
    smoothed_minimum: int | None  # Table IV's read-out: minimum of the centred moving average
    jitter: float | None  # SD around the 3-point moving average (the former noise unit)
    rise_jitter: float | None  # rise of the smoothed AUC after its minimum, in jitter units
    rate: float | None  # OLS slope of the AUC change from the minimum on, % per task
    rate_se: float | None
    still_falling: bool = False  # no onset: the best trend still falls at the last probe


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


def check_alpha(alpha: float) -> None:
    """Bad input for `--alpha`, before any file is read."""
    if not 0 < alpha < 1:
        raise PlcError(f"--alpha is a false-alarm rate between 0 and 1 (e.g. 0.05), not {alpha:g}")


class TooFewProbes(PlcError):
    """A run with fewer probes than the noise model needs: bad input for one series; fit-onset
    reports it as a run with no onset (a plan's analysis runs after the first probes too)."""

    def __init__(self, series: ProbeSeries, need: int, offsets: int) -> None:
        what = f"{offsets} per-language offsets" if offsets else "one intercept"
        self.reason = (
            f"too few probes ({series.n_probes}): the noise model (a broken-stick trend with "
            f"{what}, AR(1) residuals) needs at least {need}"
        )
        super().__init__(
            f"run {series.run_id} has {series.n_probes} probes; the noise model (a broken-stick "
            f"trend with {what}, AR(1) residuals) needs at least {need}"
        )


def series_design(series: ProbeSeries) -> tuple[Design, list[str]]:
    """The noise model's design of a run; bad input if it has too few probes for it."""
    check_series(series)
    groups, names = offset_groups(series.lang)
    need = min_probes(len(names))
    if series.n_probes < need:
        raise TooFewProbes(series, need, len(names))
    return Design(np.asarray(series.task_index, dtype=float), groups), names


def _repeat_var(repeats: list[list[float]]) -> float:
    """Variance of a checkpoint's mean over its probe repeats, averaged over the checkpoints."""
    v = [np.var(r, ddof=1) / len(r) for r in repeats if len(r) > 1]
    return float(np.mean(v)) if v else 0.0


def assess_onset(
    series: ProbeSeries,
    window: int = ONSET_WINDOW,
    ci: float = 0.95,
    alpha: float = ALPHA,
    seed: int = 0,
) -> OnsetEvidence:
    """The run's verdict under the noise model (plc.onset.noise): the test of a rise after the
    minimum at level `alpha`, the onset (the fitted trend's minimum) and its `ci` interval; beside
    them Table IV's smoothed minimum, the jitter and the rate of loss (slope of the AUC change from
    the onset on, % per task: eq. 1, or 100 × the ratio to the from-scratch AUC)."""
    import zlib

    design, names = series_design(series)
    y = np.asarray(series.value, dtype=float)
    tasks = np.asarray(series.task_index, dtype=float)
    rng = np.random.default_rng([seed, zlib.crc32(series.run_id.encode())])
    v = judge_onset(design, y, rng, alpha, _repeat_var(series.repeats))
    last = series.task_index[-1]
    i = series.n_probes - 1 if v.still_falling and not v.detected else v.knot
    task = series.task_index[i]
    reason = None
    if not v.detected:
        if v.still_falling:
            reason = (
                f"no onset yet: still falling at the last probe (task {last}), p = {v.p_value:.3f}"
            )
        else:
            reason = (
                f"no significant rise after the minimum: p = {v.p_value:.3f} ≥ α = {alpha:g} "
                f"(minimum at task {task})"
            )
    lo = hi = mass = None
    falling = v.still_falling and not v.detected
    # A run still falling has no minimum to place: the alternative's knots say where a rise would
    # begin, not where its minimum lies, so it gets no interval. Elsewhere the percentile interval
    # is widened to hold the estimate itself, which a skewed sample can leave outside it.
    if v.knots.size and not falling:
        picked = tasks[v.knots]
        lo, hi = np.quantile(picked, [(1 - ci) / 2, (1 + ci) / 2], method="inverted_cdf")
        lo, hi = min(lo, task), max(hi, task)
        at, count = np.unique(picked, return_counts=True)
        mass = {int(t): float(c) / picked.size for t, c in zip(at, count, strict=True)}
    smoothed = jit = rise_jitter = None
    if series.n_probes >= window:
        find_onset(series, window)
        smoothed = int(series.onset)
        jit = jitter(y)
        smooth = np.array([np.nan if s is None else s for s in series.smoothed])
        full = np.flatnonzero(~np.isnan(smooth))
        rise = float(smooth[full[-1]] - smooth[series.task_index.index(smoothed)])
        if math.isnan(jit):
            jit = None
        elif jit > 0:
            rise_jitter = rise / jit
    scale = 100.0 if series.normalize == "alone" else 1.0
    rate, rate_se = _rate(tasks[i:], scale * y[i:])
    return OnsetEvidence(
        minimum_task=int(task),
        detected=v.detected,
        at_start=bool(v.detected and i == 0),
        p_value=v.p_value,
        no_onset=reason,
        onset_lo=None if lo is None else float(lo),
        onset_hi=None if hi is None else float(hi),
        onset_mass=mass,
        noise_sd=v.noise_sd,
        rho=v.rho,
        rise_sd=v.rise / v.noise_sd if v.noise_sd > 0 and v.knots.size else None,
        offsets=names,
        smoothed_minimum=smoothed,
        jitter=jit,
        rise_jitter=rise_jitter,
        rate=rate,
        rate_se=rate_se,
        still_falling=falling,
    )
