"""Runs with no onset detected are information: their onset, if there is one, lies beyond the
probes they have. Both the pooled onset of a size's seeds and the log-log law treat such a run
as right-censored at its last probed task (its horizon), in a normal model of ln T (Tobit):

    ln T_i = x_i·β + ε_i,   ε_i ~ N(0, σ²),

a detected run contributing its density, a censored one the probability that ln T exceeds the
log of its horizon. For a run that is still falling at its last probe that is exactly what the
data say. For one with no significant rise it is an approximation: its onset may also lie
inside its probes with a rise too small to tell from the noise (then the censoring point is
late, and the estimate high rather than low, as averaging the detected runs alone makes it).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np


@dataclass
class Tobit:
    """The maximum-likelihood fit of a censored normal linear model."""

    beta: np.ndarray
    sigma: float
    cov: np.ndarray  # covariance of beta (observed information at the maximum)
    dof: int  # detected runs less the coefficients: the t quantile's degrees of freedom


def tobit(x: np.ndarray, y: np.ndarray, censored: np.ndarray, floor: float = 0.0) -> Tobit:
    """Fit ln T = x·β + ε by maximum likelihood, rows with `censored` only known to exceed y,
    σ at least `floor` (σ² = floor² + e^(2θ)). Needs at least one detected row per column of x
    for a finite β (the caller's job)."""
    from scipy.optimize import minimize
    from scipy.special import log_ndtr

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    cens = np.asarray(censored, dtype=bool)
    k = x.shape[1]
    obs = ~cens

    def sd(theta: np.ndarray) -> float:
        return math.sqrt(floor**2 + math.exp(2 * min(theta[k], 300.0)))

    def nll(theta: np.ndarray) -> float:
        s = sd(theta)
        z = (y - x @ theta[:k]) / s
        out = 0.5 * (z[obs] ** 2).sum() + obs.sum() * math.log(s)
        return float(out - log_ndtr(-z[cens]).sum())

    beta0 = np.linalg.lstsq(x, y, rcond=None)[0]
    resid = y - x @ beta0
    s0 = max(float(np.sqrt((resid**2).mean())), floor, 0.05)
    start = np.r_[beta0, math.log(s0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = minimize(nll, start, method="Nelder-Mead" if k > 6 else "BFGS")
        res = minimize(nll, res.x, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
    theta = res.x
    hess = _hessian(nll, theta)
    dof = max(int(obs.sum()) - k, 1)
    # n/(n − k): with nothing censored, the classical OLS covariance (s² with n − k). A σ held
    # at its floor leaves θ's direction flat: the pseudo-inverse drops it.
    cov = np.linalg.pinv(hess)[:k, :k] * obs.sum() / dof
    return Tobit(theta[:k], sd(theta), cov, dof)


def _hessian(f, theta: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central finite-difference Hessian of a scalar function."""
    k = theta.size
    out = np.empty((k, k))
    e = np.eye(k) * h
    for i in range(k):
        for j in range(i, k):
            out[i, j] = out[j, i] = (
                f(theta + e[i] + e[j])
                - f(theta + e[i] - e[j])
                - f(theta - e[i] + e[j])
                + f(theta - e[i] - e[j])
            ) / (4 * h * h)
    return out


@dataclass
class SizeCount:
    """How many of a size's runs the law saw detected and censored."""

    size: str
    n_params: int
    runs: int
    censored: int


@dataclass
class CensoredLaw:
    """The log-log law ln T = a + b·ln P with runs that show no onset right-censored at their
    last probed task; a t interval of b from the observed information."""

    a: float
    b: float
    a_se: float
    b_se: float
    b_ci: list[float]
    sigma: float  # SD of ln T around the law
    ci: float
    runs: int
    censored: int
    sizes: list[SizeCount]

    @property
    def law(self) -> str:
        return f"T = {math.exp(self.a):.2g}·P^{self.b:.4f}"

    def __str__(self) -> str:
        level = f"{self.ci:.0%}".replace("%", " %")
        return (
            f"log-log law with the {self.censored} run(s) that show no onset as censored at "
            f"their last probe ({self.runs} runs): {self.law}, b = {self.b:.2f} "
            f"[{self.b_ci[0]:.2f}, {self.b_ci[1]:.2f}] ({level}, t interval); censored per size: "
            + ", ".join(f"{s.size} {s.censored} of {s.runs}" for s in self.sizes)
        )


def censored_law(
    sizes: list[str],
    n_params: list[float],
    onset: list[float | None],
    horizon: list[float],
    ci: float = 0.95,
) -> CensoredLaw | None:
    """The log-log law of runs whose onset is None where none was detected (censored at their
    horizon); None without two sizes with a detected run or with fewer than 3 detected runs."""
    from scipy.stats import t as t_dist

    p = np.asarray(n_params, dtype=float)
    cens = np.array([t is None for t in onset])
    t = np.array([h if o is None else o for o, h in zip(onset, horizon, strict=True)], float)
    if len(np.unique(p[~cens])) < 2 or (~cens).sum() < 3 or (t <= 0).any():
        return None
    x = np.column_stack([np.ones_like(p), np.log(p)])
    fit = tobit(x, np.log(t), cens)
    se = np.sqrt(np.maximum(np.diag(fit.cov), 0.0))
    # n − 2 degrees of freedom over the detected runs, as for the OLS fit on uncensored data.
    q = float(t_dist.ppf((1 + ci) / 2, fit.dof))
    counts = []
    for x_ in sorted(set(p.tolist())):
        mine = p == x_
        counts.append(
            SizeCount(
                sizes[int(np.flatnonzero(mine)[0])], int(x_), int(mine.sum()), int(cens[mine].sum())
            )
        )
    b = float(fit.beta[1])
    return CensoredLaw(
        a=float(fit.beta[0]),
        b=b,
        a_se=float(se[0]),
        b_se=float(se[1]),
        b_ci=[b - q * float(se[1]), b + q * float(se[1])],
        sigma=fit.sigma,
        ci=ci,
        runs=int(p.size),
        censored=int(cens.sum()),
        sizes=counts,
    )
