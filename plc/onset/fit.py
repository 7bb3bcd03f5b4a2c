"""The four fits of Table V on (n_params, onset) points. Which estimator and which space each
figure of Table V uses was worked out by reproducing the table (docs/estimators.md):
- linear, linear-log, log-log: ordinary least squares in the model's own space (log-log on ln T);
  coefficient standard errors are the classical OLS ones in that space;
- exponential: nonlinear least squares in T-space (scipy curve_fit, Levenberg–Marquardt, started at
  a = mean T, b = 0), standard errors from its Gauss–Newton covariance;
- R², in-sample RMSE and leave-one-out RMSE always in T-space (tasks), log-log back-transformed by
  exp() without bias correction; each leave-one-out fold refits the model with the same estimator.
Beyond Table V: robust fits (`loss="huber"`: Huber's loss on ln T, from a grid of starts), a
backtest (fit the smaller sizes, predict the larger), delta-method bands of the predictions, and
the log-log law with runs that show no onset as right-censored (plc.onset.censored).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from plc.errors import PlcError
from plc.protocol import MIN_FIT_POINTS

MODELS = ("linear", "linlog", "exp", "loglog")
LOSSES = ("ls", "huber")  # the estimators of Table V; Huber's loss on ln T
# Huber's δ on ln T: residuals beyond 10 % of the onset count linearly, not squared.
HUBER_DELTA = 0.1
FORMULAS = {
    "linear": "T = a + b·P",
    "linlog": "T = a + b·ln P",
    "exp": "T = a·e^(b·P)",
    "loglog": "ln T = a + b·ln P",
}


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
    loss: str = "ls"  # ls: the estimators of Table V; huber: Huber's loss on ln T
    cov: list[list[float]] | None = None  # covariance of (a, b), in the space they are fitted

    def predict(self, n_params: np.ndarray | Sequence[float] | float) -> np.ndarray:
        return _predict(self.model, self.a, self.b, np.asarray(n_params, dtype=float))

    def band(self, n_params: Sequence[float], ci: float = 0.95) -> list[list[float]] | None:
        """Delta-method `ci` band of the fitted law at each size: the prediction's standard error
        from the covariance of (a, b) and the gradient there, a t quantile with n − 2 degrees
        of freedom; symmetric in ln T for the log-log and exponential models (their natural
        space, so the band stays positive), in T for the other two."""
        from scipy.stats import t as t_dist

        if self.cov is None or self.n_points < 3:
            return None
        cov = np.asarray(self.cov, dtype=float)
        p = np.asarray(n_params, dtype=float)
        q = float(t_dist.ppf((1 + ci) / 2, self.n_points - 2))
        x = {"linear": p, "linlog": np.log(p), "loglog": np.log(p), "exp": p}[self.model]
        if self.model == "exp":  # ln T = ln a + b·P: the gradient in (a, b) is (1/a, P)
            grad = np.stack([np.full_like(p, 1 / self.a), x], axis=1)
        else:
            grad = np.stack([np.ones_like(p), x], axis=1)
        se = np.sqrt(np.einsum("ij,jk,ik->i", grad, cov, grad))
        centre = self.predict(p)
        if self.model in ("loglog", "exp"):
            lo, hi = centre * np.exp(-q * se), centre * np.exp(q * se)
        else:
            lo, hi = centre - q * se, centre + q * se
        return np.stack([lo, hi], axis=1).tolist()


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
    model: str, p: np.ndarray, t: np.ndarray, start: tuple[float, float], loss: str = "ls"
) -> tuple[float, float, np.ndarray]:
    """Coefficients (a, b) and their covariance with the estimator Table V used (or Huber's);
    `start` is where the exponential's optimiser begins (the same for the full fit and every
    fold)."""
    from scipy.optimize import curve_fit
    from scipy.stats import linregress

    if loss == "huber":
        return _huber(model, p, t)
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
        return float(a), float(b), np.asarray(cov, dtype=float)
    x = p if model == "linear" else np.log(p)
    y = np.log(t) if model == "loglog" else t
    r = linregress(x, y)
    # The classical OLS covariance: Cov(a, b) = −x̄·Var(b).
    cab = -float(x.mean()) * r.stderr**2
    cov = np.array([[r.intercept_stderr**2, cab], [cab, r.stderr**2]])
    return float(r.intercept), float(r.slope), cov


def _log_curve(model: str, theta: np.ndarray, p: np.ndarray) -> np.ndarray:
    """ln T of a model at sizes p (−690 where a linear model's T is not positive)."""
    a, b = theta
    with np.errstate(over="ignore", invalid="ignore"):
        if model == "loglog":
            return a + b * np.log(p)
        if model == "exp":
            return np.log(np.maximum(a, 1e-300)) + b * p
        value = a + b * (p if model == "linear" else np.log(p))
        return np.log(np.maximum(value, 1e-300))


def _starts(model: str, p: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
    """The grid of starts of a robust fit: the curve through each pair of points of different
    sizes (in the model's own space), and the least-squares fit."""
    x = {"linear": p, "linlog": np.log(p), "exp": p, "loglog": np.log(p)}[model]
    y = np.log(t) if model in ("exp", "loglog") else t
    out = []
    for i in range(p.size):
        for j in range(i + 1, p.size):
            if x[i] != x[j]:
                b = (y[j] - y[i]) / (x[j] - x[i])
                out.append(np.array([y[i] - b * x[i], b]))
    b, a = np.polyfit(x, y, 1)
    out.append(np.array([a, b]))
    if model == "exp":  # fitted as (ln a, b); the optimiser takes a
        out = [np.array([math.exp(min(s[0], 700.0)), s[1]]) for s in out]
    return out


def _huber(model: str, p: np.ndarray, t: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Huber's loss on ln T (δ = HUBER_DELTA), minimised from every start of the grid; the
    covariance is Huber's: Σψ²/(n − 2) / (Σψ′/n)² · (JᵀJ)⁻¹ at the minimum."""
    from scipy.optimize import least_squares

    y = np.log(t)

    def resid(theta: np.ndarray) -> np.ndarray:
        return _log_curve(model, theta, p) - y

    best = None
    for x0 in _starts(model, p, t):
        if not np.isfinite(resid(x0)).all():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = least_squares(resid, x0, loss="huber", f_scale=HUBER_DELTA, x_scale="jac")
        if best is None or r.cost < best.cost:
            best = r
    if best is None:
        raise PlcError(
            f"the robust {model} fit found no start with a finite ln T; choose another --model"
        )
    theta = best.x
    r = resid(theta)
    eps = 1e-6 * np.maximum(np.abs(theta), 1e-12)
    jac = np.column_stack(
        [(resid(theta + e) - resid(theta - e)) / (2 * e[i]) for i, e in enumerate(np.diag(eps))]
    )
    psi = np.clip(r, -HUBER_DELTA, HUBER_DELTA)
    inside = (np.abs(r) <= HUBER_DELTA).mean()
    dof = max(p.size - 2, 1)
    if inside == 0:
        cov = np.full((2, 2), np.nan)
    else:
        d = 1 / np.maximum(np.linalg.norm(jac, axis=0), 1e-300)  # a and b differ by 1e9 in scale
        js = jac * d
        cov = (psi**2).sum() / dof / inside**2 * (d[:, None] * np.linalg.pinv(js.T @ js) * d)
    return float(theta[0]), float(theta[1]), cov


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


class NoLaw(PlcError):
    """Too few points or sizes for a law. Not bad input: fit-onset reports the onsets with
    "no law: <why>" (a study after its first probes, or of one size, is still a study)."""


def check_points(model: str, p: np.ndarray, t: np.ndarray, loss: str = "ls") -> None:
    """Bad input for a fit (n_params not positive, onsets ≤ 0 under a log), or NoLaw: too few
    points, no spread in P."""
    check_sizes(p)
    if p.size < MIN_FIT_POINTS:
        raise NoLaw(
            f"a fit needs at least {MIN_FIT_POINTS} (n_params, onset) points, one per run or table "
            f"row; got {p.size}"
        )
    if np.unique(p).size < 2:
        raise NoLaw("every point has the same n_params; a fit needs at least two model sizes")
    if (model == "loglog" or loss == "huber") and (t <= 0).any():
        raise PlcError(f"the {model} fit takes ln T, but some onsets are ≤ 0")


def check_sizes(p: Sequence[float] | np.ndarray) -> None:
    """Bad input: a model size (n_params) that is not a positive number of parameters."""
    bad = [float(x) for x in np.asarray(p, dtype=float) if not x > 0]
    if bad:
        raise PlcError(f"n_params must be a positive number of parameters, not {bad[0]:g}")


def fit_model(
    model: str, n_params: Sequence[float], onset: Sequence[float], loss: str = "ls"
) -> Fit:
    """Fit one of MODELS with the coefficient SEs, R², RMSE and leave-one-out RMSE of Table V
    (`loss="huber"`: Huber's loss on ln T instead, from a grid of starts)."""
    if model not in MODELS:
        raise PlcError(f"unknown model {model!r}; choose from {', '.join(MODELS)} or all")
    check_loss(loss)
    p = np.asarray(n_params, dtype=float)
    t = np.asarray(onset, dtype=float)
    check_points(model, p, t, loss)
    # The exponential starts flat at the mean onset of ALL points, in every leave-one-out fold
    # too: Table V's out-of-sample RMSE (588.914) is the one these starts give (docs/estimators.md).
    start = (float(t.mean()), 0.0)
    a, b, cov = _estimate(model, p, t, start, loss)
    fitted = _predict(model, a, b, p)
    sse = float(((t - fitted) ** 2).sum())
    sst = float(((t - t.mean()) ** 2).sum())
    held_out = np.empty_like(t)
    for i in range(t.size):
        keep = np.arange(t.size) != i
        if np.unique(p[keep]).size < 2:
            raise NoLaw(
                f"leaving out n_params={p[i]:,.0f} leaves a single model size to fit; "
                "leave-one-out needs runs of at least three sizes or two of each"
            )
        ai, bi, _ = _estimate(model, p[keep], t[keep], start, loss)
        held_out[i] = _predict(model, ai, bi, p[i : i + 1])[0]
    se = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return Fit(
        model=model,
        formula=FORMULAS[model],
        a=a,
        a_se=float(se[0]),
        b=b,
        b_se=float(se[1]),
        r2=1.0 - sse / sst if sst > 0 else float("nan"),
        rmse=math.sqrt(sse / t.size),
        loo_rmse=float(np.sqrt(((held_out - t) ** 2).mean())),
        n_points=int(t.size),
        law=_law(model, a, b),
        loss=loss,
        cov=cov.tolist(),
    )


def check_loss(loss: str) -> None:
    """Bad input for `--loss`."""
    if loss not in LOSSES:
        raise PlcError(f"--loss must be {' or '.join(LOSSES)}, not {loss!r}")


@dataclass
class Backtest:
    """One model fitted to the smaller sizes, against a held-out larger one."""

    model: str
    fitted_sizes: list[str]
    size: str
    n_params: int
    runs: int  # the held-out size's runs (points)
    observed: float  # their mean onset, tasks
    predicted: float
    error: float  # predicted − observed, tasks
    relative: float  # predicted / observed − 1


def backtest(
    sizes: Sequence[str],
    n_params: Sequence[float],
    onset: Sequence[float],
    models: Sequence[str],
    k: int = 1,
    loss: str = "ls",
) -> list[Backtest]:
    """Fit every model to the points of all sizes but the `k` largest and predict those (as
    OLMo-core validates its ladder: can the smaller sizes foretell the larger?). NoLaw where the
    smaller sizes hold fewer than 3 points or a single size."""
    if k < 1:
        raise PlcError(f"--backtest takes the number of largest sizes to hold out (≥ 1), not {k}")
    p = np.asarray(n_params, dtype=float)
    t = np.asarray(onset, dtype=float)
    check_sizes(p)
    distinct = np.unique(p)
    if distinct.size <= k:
        raise NoLaw(
            f"a backtest holding out {k} size(s) needs more than {k} sizes; got {distinct.size}"
        )
    held = distinct[-k:]
    train = ~np.isin(p, held)
    names = {float(x): s for s, x in zip(sizes, p, strict=True)}
    fitted_sizes = [names[float(x)] for x in distinct[:-k]]
    out = []
    for model in models:
        check_points(model, p[train], t[train], loss)
        a, b, _ = _estimate(model, p[train], t[train], (float(t[train].mean()), 0.0), loss)
        for x in held:
            obs = float(t[p == x].mean())
            pred = float(_predict(model, a, b, np.array([x]))[0])
            out.append(
                Backtest(
                    model,
                    fitted_sizes,
                    names[float(x)],
                    int(x),
                    int((p == x).sum()),
                    obs,
                    pred,
                    pred - obs,
                    pred / obs - 1 if obs else float("nan"),
                )
            )
    return out


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


@dataclass
class RateLaw:
    """The rate of loss against size, log-log (§V-B: models lose plasticity at different rates):
    rate ∝ P^b over the runs with a positive rate, OLS with its standard error and t interval."""

    runs: int
    b: float
    b_se: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return (
            f"Rate of loss ∝ P^b over {self.runs} runs: b = {self.b:.2f} ± {self.b_se:.2f} "
            f"(95 %: [{self.lo:.2f}, {self.hi:.2f}])"
        )


def rate_law(n_params: Sequence[float], rates: Sequence[float | None]) -> RateLaw | None:
    """The log-log slope of the runs' positive rates of loss on their sizes; None with fewer than
    three such runs or a single size."""
    from scipy.stats import linregress
    from scipy.stats import t as t_dist

    pos = [(p, r) for p, r in zip(n_params, rates, strict=True) if r is not None and r > 0]
    if len({p for p, _ in pos}) < 2 or len(pos) < 3:
        return None
    fit = linregress(np.log([p for p, _ in pos]), np.log([r for _, r in pos]))
    half = t_dist.ppf(0.975, len(pos) - 2) * fit.stderr
    return RateLaw(len(pos), fit.slope, fit.stderr, fit.slope - half, fit.slope + half)
