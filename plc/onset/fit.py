"""The four fits of Table V on (n_params, onset) points. Which estimator and which space each
figure of Table V uses was worked out by reproducing the table (docs/estimators.md):
- linear, linear-log, log-log: ordinary least squares in the model's own space (log-log on ln T);
  coefficient standard errors are the classical OLS ones in that space;
- exponential: nonlinear least squares in T-space (scipy curve_fit, Levenberg–Marquardt, started at
  a = mean T, b = 0), standard errors from its Gauss–Newton covariance;
- R², in-sample RMSE and leave-one-out RMSE always in T-space (tasks), log-log back-transformed by
  exp() without bias correction; each leave-one-out fold refits the model with the same estimator.
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
