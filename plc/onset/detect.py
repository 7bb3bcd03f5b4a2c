"""Is there an onset, where, and how sure: the test and the interval under the noise model.

Per run (plc.onset.noise has the model): the best trend without a rise after its minimum (the
null) and the best with one (the alternative, whose minimum is the onset τ̂) by penalised profile
likelihood over the candidate, its knot, ρ and σ. The statistic is their log-likelihood ratio. Its
null distribution comes from parametric bootstraps (the trend plus AR(1) noise, each sample
refitted exactly as the data) at the fitted null and at the flat one; the p-value is the larger of
the two, (1 + #{LR* ≥ LR}) / (B + 1) each. The onset's interval: percentiles of τ̂* over samples
of the trends with a rise that fit, drawn by their Akaike weights. "Still falling": a bootstrap t
of the slope over the last third of the probes against a trend flat there.

Short series estimate ρ too low (the trend absorbs slow noise), and AR noise simulated with a
too-low ρ makes the observed LR look extreme: that is how autocorrelated noise is over-called. So
each bootstrap first measures the bias of (ρ̂, variance) on a pilot sample drawn from the fit,
and draws its samples with the corrected values (one step of bootstrap bias correction).
docs/estimators.md has the why and the calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from plc.errors import PlcError
from plc.onset.noise import (
    MAX_RHO,
    Design,
    Fits,
    min_probes,
    offset_levels,
    simulate,
)
from plc.onset.series import ProbeSeries, check_series, find_onset, jitter
from plc.protocol import ONSET_ALPHA, ONSET_WINDOW

ALPHA = ONSET_ALPHA
NULL_SAMPLES = 400  # p-values to ±0.011 at 0.05
FALL_SAMPLES = 200  # the still-falling test's samples of a trend flat at the end
ALT_SAMPLES = 400
PILOT_SAMPLES = 50  # samples per true ρ measuring the bias of ρ̂ and of the variance
SHARP = 2.0  # Akaike weights at a temperature of ½ (docs/estimators.md: the calibration)
PILOT_RHOS = np.array([0.0, 0.25, 0.5, 0.7, 0.85, MAX_RHO])


@dataclass
class Verdict:
    """The test and the onset of one series, in probe positions (indices into its tasks)."""

    p_value: float
    detected: bool
    knot: int  # the alternative's onset (its trend's minimum); n − 1 where no rise fits
    still_falling: bool  # no onset, the last third falls significantly (α), the best fit is null
    rho: float  # bias-corrected AR(1) coefficient of the residuals (of the better hypothesis)
    noise_sd: float  # bias-corrected stationary SD of the residuals
    rise: float  # the alternative's trend from its minimum to its highest point after it
    knots: np.ndarray  # τ̂ of each sample of the fitted alternative
    falling_p: float | None = None  # one-sided p of "the last third's slope is not negative"
    p_fitted: float | None = None  # p against the fitted null alone (p is the larger of two)
    p_flat: float | None = None  # p against the flat null (None where the fitted null is flat)


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
    mean over its probe repeats (where there are several), drawn independently in every sample.

    The null, "no rise after the minimum", is composite (any non-increasing trend): the p-value is
    the larger of the bootstrap p-values at the fitted null trend and at the flat one, each with
    its noise bias-corrected for that trend. The fitted trend alone gives p-values too small above
    0.05 on flat series; the flat one alone, too large ones on falling series."""
    y = np.asarray(y, dtype=float)
    fit = design.fit(y[None, :])
    n = design.n
    lr = float(fit.lr[0])
    cand0, rho0_hat, var0_hat = int(fit.cand0[0]), float(fit.rho0[0]), float(fit.var0[0])
    mean0, _ = design.trend(y, cand0, rho0_hat)
    rho0, var0 = _corrected(design, mean0, rho0_hat, var0_hat, 0, repeat_var, rng, pilot_samples)
    best_is_null = fit.loglik0[0] >= fit.loglik1[0]
    # "Still falling": the last third's slope against samples of a trend flat there (the data's
    # fit of a line flat after the last third begins), with the noise of the same line free to
    # bend there. A bootstrap t, so ρ and the variance need no correction. Measured around the
    # best null instead, a chance fall at the end is trend, not noise, and flat runs were called
    # still falling twice as often as α; measured around a flat trend, a steady fall is noise
    # and no run is still falling.
    rho_e, var_e = float(fit.rho_end[0]), float(fit.var_end[0])
    flat_end, _ = design.trend(y, design.end_null, rho_e)
    fall_draws = _draw(flat_end, rho_e, var_e, repeat_var, FALL_SAMPLES, rng)
    falling_p = _falling_p(design, y, fit, fall_draws, design.fit(fall_draws))
    # The label says the minimum lies beyond the last probe, so the best fit must be lowest
    # there too: a run that rises well above its minimum and falls back over its last third
    # (the demo's seed-2 positive control: +56 % at its last probe) is not still falling.
    still_falling = falling_p < alpha and best_is_null
    if not np.isfinite(fit.loglik1[0]):  # no trend rises after its minimum
        return Verdict(
            1.0,
            False,
            n - 1,
            still_falling,
            rho0,
            math.sqrt(var0),
            0.0,
            np.array([], dtype=int),
            falling_p,
        )
    p_fitted = _p(design.fit(_draw(mean0, rho0, var0, repeat_var, null_samples, rng)).lr, lr)
    p_flat = None
    if cand0 != 0:  # the flat trend is candidate 0: where it is the fitted null, one p suffices
        flat, _ = design.trend(y, 0, rho0_hat)
        rho_f, var_f = _corrected(
            design, flat, rho0_hat, var0_hat, 0, repeat_var, rng, pilot_samples
        )
        p_flat = _p(design.fit(_draw(flat, rho_f, var_f, repeat_var, null_samples, rng)).lr, lr)
    p = max(p_fitted, p_flat or 0.0)
    # The onset's interval comes from samples of the alternatives, with the noise measured around
    # the best of them: a null trend misfits a series that rises, and its residuals would count
    # that misfit as slow noise.
    cand1, rho1 = int(fit.cand1[0]), float(fit.rho1[0])
    mean1, trend1 = design.trend(y, cand1, rho1)
    rho, var = _corrected(
        design, mean1, rho1, float(fit.var1[0]), 1, repeat_var, rng, pilot_samples
    )
    alt: Fits = design.fit(_alt_draws(design, y, rho, var, repeat_var, alt_samples, rng))
    knot = int(fit.knot[0])
    if best_is_null:  # the noise columns describe the better-fitting hypothesis
        rho, var = rho0, var0
    return Verdict(
        p_value=p,
        detected=p < alpha,
        knot=knot,
        still_falling=still_falling and not p < alpha,
        rho=rho,
        noise_sd=math.sqrt(var),
        rise=float(trend1[knot:].max() - trend1[knot]),
        knots=alt.knot,
        falling_p=falling_p,
        p_fitted=p_fitted,
        p_flat=p_flat,
    )


def _alt_draws(
    design: Design,
    y: np.ndarray,
    rho: float,
    var: float,
    repeat_var: float,
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Samples of the alternative for the onset's interval: each from one of the trends with a
    rise that fit the data, drawn with its Akaike weight (∝ its penalised likelihood), plus the
    best alternative's bias-corrected noise. Drawing from the best trend alone ignores that
    neighbouring knots and shapes fit nearly as well: on a smooth U its intervals held the
    onset 86 % of the time, not 95 %."""
    cands, rhos, ll = design.alternatives(y)
    w = np.exp(SHARP * (ll - ll.max()))
    pick = rng.choice(cands.size, size=size, p=w / w.sum())
    out = np.empty((size, design.n))
    for j in np.unique(pick):
        where = pick == j
        mean, _ = design.trend(y, int(cands[j]), float(rhos[j]))
        out[where] = _draw(mean, rho, var, repeat_var, int(where.sum()), rng)
    return out


def _p(null_stat: np.ndarray, stat: float) -> float:
    """Bootstrap p-value of a statistic large under the alternative: (1 + #{S* ≥ S}) / (B + 1)."""
    return (1 + int((null_stat >= stat - 1e-9).sum())) / (null_stat.size + 1)


def _falling_p(
    design: Design, y: np.ndarray, fit: Fits, flat_draws: np.ndarray, flat_fits: Fits
) -> float:
    """One-sided p-value of "not falling at the end": the least-squares slope over the last
    third of the probes (design.window, with the offsets) in units of its standard error under
    AR(1) noise (the noise of design.end), against the same statistic in samples of a trend flat
    there (a bootstrap t: each sample's noise estimated as the data's, so the noise of that
    estimate is counted; p = (1 + #{t* ≤ t}) / (B + 1)). Asked of every run, over a window fixed
    in advance: a slope over the segment the fit chose (its last knot), or asked only where the
    null fitted better, is steepened by the choice, and false "still falling" verdicts followed
    (10–30 % of flat runs at α = 0.05)."""
    w = design.window
    tail = design.tasks[-w:]
    off = design.offsets[-w:]
    x = np.column_stack([off[:, off.any(axis=0)], tail - tail.mean()])
    row = np.linalg.pinv(x)[-1]  # the slope from the window's values
    lag = np.abs(np.subtract.outer(np.arange(w), np.arange(w)))
    gain = {float(r): float(row @ (r**lag) @ row) for r in design.rhos}  # Var(slope) / var

    def t_stat(values: np.ndarray, rho: np.ndarray, var: np.ndarray) -> np.ndarray:
        g = np.array([gain[float(r)] for r in np.atleast_1d(rho)])
        return (values[..., -w:] @ row) / np.sqrt(np.maximum(var * g, 1e-300))

    t = float(t_stat(y[None, :], fit.rho_end, fit.var_end)[0])
    return _p(-t_stat(flat_draws, flat_fits.rho_end, flat_fits.var_end), -t)


@dataclass
class OnsetEvidence:
    """Whether a run shows an onset, where, and how sure; with the descriptive columns."""

    # The fitted trend's minimum: the onset if detected; the last probe if still falling (the
    # minimum lies beyond the probes); else the minimum of the best trend with a rise.
    minimum_task: int
    detected: bool
    at_start: bool  # the onset is the first probe: loss of plasticity from the first probe on
    p_value: float  # of "no rise after the minimum" under the noise model
    no_onset: str | None  # why not, when not detected
    onset_lo: float | None  # percentile interval of the minimum's task (None: still falling)
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
    still_falling: bool = False  # no onset: the last third's slope is significantly negative
    falling_p: float | None = None  # one-sided p of "not falling at the end" (last third)
    offset_note: str | None = None  # single-probe languages folded into a neighbour's offset


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
    design, names, _ = _design(series)
    return design, names


def _design(series: ProbeSeries) -> tuple[Design, list[str], dict[str, str]]:
    check_series(series)
    groups, names, folded = offset_levels(series.lang)
    need = min_probes(len(names))
    if series.n_probes < need:
        raise TooFewProbes(series, need, len(names))
    return Design(np.asarray(series.task_index, dtype=float), groups), names, folded


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

    design, names, folded = _design(series)
    y = np.asarray(series.value, dtype=float)
    tasks = np.asarray(series.task_index, dtype=float)
    rng = np.random.default_rng([seed, zlib.crc32(series.run_id.encode())])
    v = judge_onset(design, y, rng, alpha, _repeat_var(series.repeats))
    last = series.task_index[-1]
    i = series.n_probes - 1 if v.still_falling else v.knot
    task = series.task_index[i]
    reason = None
    if v.still_falling:
        reason = (
            f"no onset yet: still falling at the last probe (task {last}; falling, "
            f"p = {v.falling_p:.3f} < α = {alpha:g}), p = {v.p_value:.3f}"
        )
    elif not v.detected:
        reason = (
            f"no significant rise after the minimum: p = {v.p_value:.3f} ≥ α = {alpha:g} "
            f"(minimum at task {task})"
        )
    lo = hi = mass = None
    # A run still falling has no minimum to place: the alternative's knots say where a rise would
    # begin, not where its minimum lies, so it gets no interval. Elsewhere the percentile interval
    # is widened to hold the estimate itself, which a skewed sample can leave outside it.
    if v.knots.size and not v.still_falling:
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
        rise_sd=(
            v.rise / v.noise_sd if v.noise_sd > 0 and v.knots.size and not v.still_falling else None
        ),
        offsets=names,
        smoothed_minimum=smoothed,
        jitter=jit,
        rise_jitter=rise_jitter,
        rate=rate,
        rate_se=rate_se,
        still_falling=v.still_falling,
        falling_p=v.falling_p,
        offset_note=(
            "; ".join(f"{a}'s single probe shares {b}'s offset" for a, b in folded.items()) or None
        ),
    )
