"""Intervals across runs: of the fits (runs resampled, each run's onset drawn from its own
distribution) and of each size's onset pooled over its seeds."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from plc.errors import PlcError
from plc.onset.fit import _exp_curve, _predict


class Run(Protocol):
    """What the bootstraps need of a run (plc.onset.table.RunOnset)."""

    n_params: int
    size: str
    method: str
    detected: bool
    onset: float | None

    def distribution(self) -> tuple[np.ndarray, np.ndarray]: ...


MIN_BOOTSTRAP = 100
RESAMPLE = ("cases", "within-size")
POOL_RESAMPLES = 2000  # resamples of a size's seeds for its pooled onset's interval


@dataclass
class BootstrapSummary:
    """How the fits' intervals were made."""

    resamples: int
    ci: float
    seed: int
    resample: str  # cases: runs drawn from all runs; within-size: each size's runs
    used: int  # resamples with at least two sizes (the others cannot be fitted)
    failed: dict[str, int]  # per model: resamples it could not be fitted to


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
    runs: Sequence[Run],
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


@dataclass
class SizeOnset:
    """One size's onset pooled over its seeds (the runs of that size with an onset detected)."""

    size: str
    n_params: int
    method: str
    seeds: int  # runs of this size (and method)
    detected: int  # of them with an onset detected
    onset: float | None  # mean onset of the detected runs
    onset_lo: float | None
    onset_hi: float | None


def pool_seeds(
    runs: Sequence[Run], ci: float = 0.95, seed: int = 0, resamples: int = POOL_RESAMPLES
) -> list[SizeOnset]:
    """Per size (and method) with several runs: the mean onset of the runs with an onset detected,
    and a percentile interval over resamples that draw those runs with replacement (the scatter
    between seeds) and each drawn run's onset from its own distribution (the noise within a run)
    and average them. Sizes with a single run are left out: their run's interval is the answer."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.n_params, r.method), []).append(r)
    out = []
    for (n_params, method), mine in sorted(groups.items()):
        if len(mine) < 2:
            continue
        found = [r for r in mine if r.detected and r.onset is not None]
        lo = hi = mean = None
        if found:
            mean = float(np.mean([r.onset for r in found]))
            lo, hi = pooled_interval([r.distribution() for r in found], ci, rng, resamples)
        out.append(SizeOnset(mine[0].size, n_params, method, len(mine), len(found), mean, lo, hi))
    return out


def pooled_interval(
    distributions: Sequence[tuple[np.ndarray, np.ndarray]],
    ci: float,
    rng: np.random.Generator,
    resamples: int = POOL_RESAMPLES,
) -> tuple[float, float]:
    """Percentile interval of the mean onset of runs drawn with replacement, each drawn run's
    onset drawn from its distribution (tasks, probabilities)."""
    k = len(distributions)
    pick = rng.integers(0, k, size=(resamples, k))
    draws = np.empty(pick.shape)
    for j, (tasks, p) in enumerate(distributions):
        where = pick == j
        draws[where] = rng.choice(tasks, size=int(where.sum()), p=p)
    lo, hi = np.quantile(draws.mean(1), [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)
