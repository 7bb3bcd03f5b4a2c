"""Intervals across runs: of the fits (runs resampled with their onsets) and of each size's onset
pooled over its seeds (runs with no onset detected censored, plc.onset.censored)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from plc.errors import PlcError
from plc.onset.censored import tobit
from plc.onset.fit import _exp_curve, _predict


class Run(Protocol):
    """What the bootstraps need of a run (plc.onset.table.RunOnset)."""

    n_params: int
    size: str
    method: str
    detected: bool
    onset: float | None
    horizon: float | None  # the last probed task: an undetected run's onset lies beyond it
    verdict: str | None

    @property
    def fit_value(self) -> float | None: ...

    def distribution(self) -> tuple[np.ndarray, np.ndarray]: ...


MIN_BOOTSTRAP = 100
RESAMPLE = ("cases", "within-size")


@dataclass
class BootstrapSummary:
    """How the fits' intervals were made."""

    resamples: int
    ci: float
    seed: int
    resample: str  # cases: runs drawn from all runs; within-size: each size's runs
    used: int  # resamples with at least two sizes (the others cannot be fitted)
    failed: dict[str, int]  # per model: resamples it could not be fitted to
    expand: float = 1.0  # t_(n−2) / z: each side's widening where the runs' own noise is nil
    own_noise: int = 0  # runs whose onset distribution has a spread (the intervals' floor)


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


def expansion(points: int, ci: float) -> float:
    """t_(n−2) / z at the interval's level: a percentile interval of resampled runs is too
    narrow for few points (it knows the scatter only as well as n points show it; n − 2 degrees
    of freedom are left after a law's two coefficients), as a z interval is beside a t one."""
    from scipy.stats import norm
    from scipy.stats import t as t_dist

    q = (1 + ci) / 2
    return float(t_dist.ppf(q, max(points - 2, 1)) / norm.ppf(q))


def _ln_variance(run: Run) -> float | None:
    """The variance of ln T over the run's onset distribution (None where it reaches T ≤ 0)."""
    tasks, prob = run.distribution()
    if not (tasks > 0).all():
        return None
    lt = np.log(tasks)
    return float(prob @ (lt - prob @ lt) ** 2)


def _own_variances(runs: Sequence[Run]) -> tuple[np.ndarray, np.ndarray]:
    """Each run's own noise: the variance of its onset over its distribution, in tasks and in
    ln T (0 for a point mass, e.g. an onset table's row)."""
    var_t, var_ln = np.zeros(len(runs)), np.zeros(len(runs))
    for i, run in enumerate(runs):
        tasks, prob = run.distribution()
        var_t[i] = float(prob @ (tasks - prob @ tasks) ** 2)
        var_ln[i] = _ln_variance(run) or 0.0
    return var_t, var_ln


def _own_se(
    model: str, p: np.ndarray, a: float, b: float, own: np.ndarray, at: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """Standard errors of a, b and the predictions at `at` (in the space each interval is
    drawn in: ln T for every model's predictions but the linear one's) that the runs' own
    noise alone gives them: the fit's linearised least squares, (JᵀJ)⁻¹Jᵀ, applied to
    independent errors of variance `own` in the model's fitted space."""
    if model == "exp":  # least squares in T: the Jacobian of a·e^(bP) in (a, b)
        e = np.exp(b * p)
        jac = np.column_stack([e, a * p * e])
        grad = np.column_stack([np.full_like(at, 1 / a), at])  # of ln(a·e^(bP)) = ln a + bP
    else:
        f = (lambda x: x) if model == "linear" else np.log
        jac = np.column_stack([np.ones_like(p), f(p)])
        grad = np.column_stack([np.ones_like(at), f(at)])
    lin = np.linalg.pinv(jac)
    cov = (lin * own) @ lin.T
    pred = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", grad, cov, grad), 0.0))
    if model == "linlog":  # fitted in T, its predictions' intervals drawn in ln T
        pred = pred / np.abs(_predict(model, a, b, at))
    return float(np.sqrt(max(cov[0, 0], 0.0))), float(np.sqrt(max(cov[1, 1], 0.0))), pred


def bootstrap_fits(
    runs: Sequence[Run],
    models: Sequence[str],
    resamples: int,
    ci: float = 0.95,
    seed: int = 0,
    resample: str = "cases",
    predict: Sequence[float] = (),
) -> tuple[dict[str, dict[str, Any]], BootstrapSummary]:
    """Intervals of each model's a, b and predictions at `predict` over fits to resampled runs:
    runs drawn with replacement from all runs with their onsets (`cases`: sizes × seeds), or
    from each size's runs (`within-size`), where a size with a single run draws its onset from
    that run's distribution instead (its only variation). A run's onset is never drawn from its
    distribution on top of drawing the run: the scatter of runs around the law already holds
    each run's own noise, and counting it twice made intervals 2–3 times too wide.

    Each side of the percentile interval, read as z standard errors (variance V), becomes t_ν
    standard errors of max(V, V_own), V_own being what the runs' own noise alone gives
    (`_own_se`: their onset distributions through the fit), with ν = (n − 2)·(V /
    (V − V_own))², the Welch–Satterthwaite degrees of freedom of a known part V_own (hundreds of
    draws per run) plus a rest seen only as well as n points show it. With no own noise (an
    onset table) that is the t_(n−2) / z widening (`expansion`); where the own noise is all of
    the scatter, the z interval of it. Resampling alone misses an error that grows toward one
    end of the sizes (the smallest size's early onsets), which its few runs there may not show:
    widened by t_(n−2) / z alone, 86.5 % coverage on 4 sizes × 3 seeds (docs/estimators.md has
    the simulation that chose this rule).

    Returns {model: {"a": [lo, hi], "b": [lo, hi], "predict": [[lo, hi], …]}} (None where no
    resample could be fitted) and a summary.
    The estimators are the point fits' (OLS in the model's space; the exponential by nonlinear
    least squares started flat at the resample's mean onset).
    """
    from scipy.optimize import curve_fit

    p = np.array([r.n_params for r in runs], dtype=float)
    point = np.array([r.fit_value for r in runs], dtype=float)
    m = p.size
    rng = np.random.default_rng(seed)
    if resample == "cases":
        pick = rng.integers(0, m, size=(resamples, m))
    else:
        pick = np.empty((resamples, m), dtype=int)
        for size in np.unique(p):
            members = np.flatnonzero(p == size)
            pick[:, members] = rng.choice(members, size=(resamples, members.size))
    t = point[pick]
    if resample == "within-size":
        for j, run in enumerate(runs):
            if (p == p[j]).sum() == 1:
                tasks, prob = run.distribution()
                t[:, j] = rng.choice(tasks, size=resamples, p=prob)
    x = p[pick]
    usable = np.ptp(x, axis=1) > 0
    # Row 0: the points themselves, the centre each interval is widened about.
    x = np.vstack([p, x[usable]])
    t = np.vstack([point, t[usable]])
    where_at = np.asarray(predict, dtype=float)
    level = [(1 - ci) / 2, (1 + ci) / 2]
    grow = expansion(m, ci)
    var_t, var_ln = _own_variances(runs)
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
        failed[model] = int((~ok[1:]).sum())
        pred = _predict(model, a[:, None], b[:, None], where_at[None, :])
        if not ok[0] or ok[1:].sum() == 0:
            out[model] = {"a": None, "b": None, "predict": [None] * where_at.size}
            continue
        se_a, se_b, se_pred = _own_se(
            model, p, a[0], b[0], var_ln if model == "loglog" else var_t, where_at
        )
        out[model] = {
            "a": _widened(a[0], a[1:][ok[1:]], level, m, se_a),
            "b": _widened(b[0], b[1:][ok[1:]], level, m, se_b),
            "predict": [
                _widened(
                    pred[0, i], pred[1:, i][ok[1:]], level, m, se_pred[i], log=model != "linear"
                )
                for i in range(where_at.size)
            ],
        }
    summary = BootstrapSummary(
        resamples,
        ci,
        seed,
        resample,
        int(usable.sum()),
        failed,
        round(grow, 4),
        int(((var_t > 0) | (var_ln > 0)).sum()),
    )
    return out, summary


def _widened(
    centre: float,
    draws: np.ndarray,
    level: list[float],
    points: int,
    own_se: float,
    log: bool = False,
) -> list[float]:
    """The percentile interval of `draws` about `centre`, each side made t_ν standard errors
    of max(its own, `own_se`) (bootstrap_fits has why; in ln for positive quantities whose
    law is multiplicative: predictions of T, whose `own_se` is in ln T)."""
    from scipy.stats import norm
    from scipy.stats import t as t_dist

    lo, hi = np.quantile(draws, level)
    lo, hi = min(lo, centre), max(hi, centre)
    z = float(norm.ppf(level[1]))
    dof = max(points - 2, 1)
    in_ln = log and centre > 0 and lo > 0
    if log and not in_ln:  # drawn in T after all: the own noise back from ln T (delta method)
        own_se *= abs(centre)

    def side(length: float) -> float:
        var, own = (length / z) ** 2, own_se**2
        total = max(var, own)
        if total <= 0:
            return 0.0
        rest = var - own
        nu = math.inf if rest <= 0 else dof * (total / rest) ** 2
        return float(t_dist.ppf(level[1], nu) if math.isfinite(nu) else z) * math.sqrt(total)

    if in_ln:
        c = math.log(centre)
        return [math.exp(c - side(c - math.log(lo))), math.exp(c + side(math.log(hi) - c))]
    return [float(centre - side(centre - lo)), float(centre + side(hi - centre))]


@dataclass
class SizeOnset:
    """One size's onset pooled over its seeds, runs with no onset detected censored at their
    last probe: the geometric mean of the onsets under a censored normal model of ln T."""

    size: str
    n_params: int
    method: str
    seeds: int  # runs of this size (and method)
    detected: int  # of them with an onset detected
    onset: float | None  # geometric mean onset (None: every run censored, or no verdicts)
    onset_lo: float | None
    onset_hi: float | None
    censored: int = 0  # runs with no onset detected (their onset beyond their last probe)
    beyond: float | None = None  # every run censored: the onset lies beyond this task


def pool_seeds(runs: Sequence[Run], ci: float = 0.95) -> list[SizeOnset]:
    """Per size (and method) with several runs: the geometric mean onset of its seeds, each run
    with no onset detected counted as censored at its last probed task (plc.onset.censored), with
    a t interval. One normal model of ln T for every size at once (a mean per size, one SD:
    two or three seeds cannot estimate their own), the SD at least the runs' own noise (the
    spread of ln T over each detected run's onset distribution). Sizes with a single run are
    left out (their run's interval is the answer); so are runs with too few probes for a
    verdict (no information)."""
    from scipy.stats import t as t_dist

    groups: dict[tuple[int, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.n_params, r.method), []).append(r)
    pooled = {key: mine for key, mine in sorted(groups.items()) if len(mine) >= 2}
    # The model: runs with a verdict, of the groups with a detected run.
    fitted = [
        key
        for key, mine in pooled.items()
        if any(r.detected and r.onset is not None and r.onset > 0 for r in mine)
    ]
    rows, cens, y, own = [], [], [], []
    for g, key in enumerate(fitted):
        for r in pooled[key]:
            if r.detected and r.onset is not None and r.onset > 0:
                rows.append(g)
                cens.append(False)
                y.append(math.log(r.onset))
                if (v := _ln_variance(r)) is not None:
                    own.append(v)
            elif _censor_at(r) is not None:
                rows.append(g)
                cens.append(True)
                y.append(math.log(_censor_at(r)))
    est: dict[tuple[int, str], tuple[float, float, float]] = {}
    if fitted:
        x = np.eye(len(fitted))[rows]
        floor = math.sqrt(float(np.mean(own))) if own else 0.0
        fit = tobit(x, np.array(y), np.array(cens), floor)
        se = np.sqrt(np.maximum(np.diag(fit.cov), 0.0))
        q = float(t_dist.ppf((1 + ci) / 2, fit.dof))
        for g, key in enumerate(fitted):
            mu = float(fit.beta[g])
            est[key] = (math.exp(mu), math.exp(mu - q * se[g]), math.exp(mu + q * se[g]))
    out = []
    for key, mine in pooled.items():
        found = sum(r.detected and r.onset is not None for r in mine)
        censored = sum(not r.detected and _censor_at(r) is not None for r in mine)
        mean, lo, hi = est.get(key, (None, None, None))
        beyond = None
        if key not in est and censored:
            beyond = min(_censor_at(r) for r in mine if not r.detected and _censor_at(r))
        out.append(
            SizeOnset(
                mine[0].size, key[0], key[1], len(mine), found, mean, lo, hi, censored, beyond
            )
        )
    return out


def _censor_at(run: Run) -> float | None:
    """Where a run with no onset detected is censored: its last probed task (None for a run
    without a verdict, e.g. too few probes)."""
    if run.detected or getattr(run, "verdict", None) in (None, "too few probes"):
        return None
    return getattr(run, "horizon", None)
