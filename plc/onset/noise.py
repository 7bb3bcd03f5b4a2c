"""The noise model of a run's probe series, and the trends fitted under it.

A probe series y_i (one normalised AUC per probed checkpoint, in task order) is modelled as

    y_i = c[lang_i] + trend(t_i) + e_i,   e_i = ρ·e_{i−1} + u_i,   u_i ~ N(0, σ²),

with one fixed offset per probe position (the language trained just before the probe: zh, de and
ru transfer to the probe language differently, Table III), AR(1) residuals in probe order
(neighbouring checkpoints share most of their weights, so their noise is correlated), and a trend
that is a broken stick with its knot τ at a probed task:

    trend(t) = b1·min(t − τ, 0) + b2·max(t − τ, 0).

Its faces are trends too: flat (b1 = b2 = 0), fall-then-flat or rise-then-flat (b2 = 0), flat-then
-rise or flat-then-fall (b1 = 0). Every candidate is fitted by generalised least squares (the
Prais–Winsten transform of ρ) at each ρ of a grid and profiled over σ, so each (ρ, candidate)
has a log-likelihood. Where the fitted trend is lowest says which hypothesis it belongs to: the
null, "no rise after the minimum" (lowest at the last probe, or flat), or the alternative, a rise
after the minimum, whose onset is that minimum (a knot, or the first probe).

Everything here works on many series of one design at once (the data and its parametric
bootstrap samples), with the design's projections computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The ρ grid of the profile likelihood: finer near 1, where the likelihood is steep.
RHOS = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9])
MAX_RHO = 0.9
CHUNK = 2000  # series per batch: bounds the memory of the projections


def offset_groups(langs: list[str]) -> tuple[np.ndarray, list[str]]:
    """Integer group per probe for the per-language offsets, and the groups' names.

    One offset per language where at least two languages each label two or more probes (the
    paper's zh/de/ru probing); otherwise (e.g. the control, where every task is a new chain, or a
    single probe position) one intercept: an offset seen once would fit its probe exactly."""
    names = sorted(set(langs))
    counts = [langs.count(x) for x in names]
    if len(names) < 2 or min(counts) < 2:
        return np.zeros(len(langs), dtype=int), []
    return np.array([names.index(x) for x in langs]), names


def min_probes(n_offsets: int) -> int:
    """Probes the noise model needs: the offsets, two slopes, the knot, ρ and σ, with two residual
    degrees of freedom left for ρ and σ beyond the broken stick's parameters."""
    return max(n_offsets, 1) + 4


@dataclass
class Fits:
    """The best null and alternative fit of each of m series (arrays of length m)."""

    loglik0: np.ndarray  # best non-increasing trend
    rho0: np.ndarray
    var0: np.ndarray  # stationary variance σ²/(1 − ρ²) of the residuals
    cand0: np.ndarray
    loglik1: np.ndarray  # best trend with a rise after its minimum (−inf where none fits)
    rho1: np.ndarray
    var1: np.ndarray
    cand1: np.ndarray
    knot: np.ndarray  # index of the alternative's onset (its trend's minimum); n − 1 where none

    @property
    def lr(self) -> np.ndarray:
        """Log-likelihood ratio of a rise after the minimum against none (0 where none fits)."""
        return np.maximum(self.loglik1 - self.loglik0, 0.0)


class Design:
    """The candidate trends of one series' probe tasks and offsets, projected at every ρ."""

    def __init__(self, tasks: np.ndarray, groups: np.ndarray, rhos: np.ndarray = RHOS) -> None:
        t = np.asarray(tasks, dtype=float)
        self.n = n = t.size
        self.tasks = t
        self.rhos = rhos
        k = int(groups.max()) + 1
        self.offsets = np.eye(k)[groups]  # n × k
        # (kind, knot index, slope columns); the knot is a probed task.
        cands: list[tuple[str, int, np.ndarray]] = [("flat", 0, np.zeros((n, 0)))]
        for j in range(1, n):
            cands.append(("fall", j, np.minimum(t - t[j], 0)[:, None]))
        for j in range(n - 1):
            cands.append(("hinge", j, np.maximum(t - t[j], 0)[:, None]))
        for j in range(1, n - 1):
            s = np.column_stack([np.minimum(t - t[j], 0), np.maximum(t - t[j], 0)])
            cands.append(("stick", j, s))
        self.cands = cands
        c = len(cands)
        p = k + 2
        self.transform = np.stack([_prais_winsten(n, r) for r in rhos])  # R × n × n
        self.basis = np.zeros((len(rhos), n, c, p))  # orthonormal basis of each transformed design
        self.slope_rows = np.zeros((len(rhos), n, c, 2))  # rows giving the slopes from ỹ
        for r, pw in enumerate(self.transform):
            for ci, (_, _, s) in enumerate(cands):
                x = pw @ np.column_stack([self.offsets, s])
                q, rr = np.linalg.qr(x)
                self.basis[r, :, ci, : q.shape[1]] = q
                if s.shape[1]:
                    # β = R⁻¹ Qᵀ ỹ: the slopes are the last rows of R⁻¹ Qᵀ.
                    rows = np.linalg.solve(rr, q.T)[k:]
                    self.slope_rows[r, :, ci, : s.shape[1]] = rows.T
        self.kind = np.array([kind for kind, _, _ in cands])
        self.knot_of = np.array([j for _, j, _ in cands])
        self.before = t[self.knot_of] - t[0]  # span of each candidate's first slope
        self.after = t[-1] - t[self.knot_of]  # and of its second
        self.logdet = 0.5 * np.log(1 - rhos**2)

    def columns(self, cand: int) -> np.ndarray:
        """The full design (offsets and slopes) of one candidate, untransformed."""
        return np.column_stack([self.offsets, self.cands[cand][2]])

    def fit(self, y: np.ndarray) -> Fits:
        """The best null and alternative fits of each row of y (m × n)."""
        y = np.atleast_2d(np.asarray(y, dtype=float))
        parts = [self._fit(y[i : i + CHUNK]) for i in range(0, y.shape[0], CHUNK)]
        return Fits(*(np.concatenate([getattr(p, f) for p in parts]) for f in Fits.__annotations__))

    def _fit(self, y: np.ndarray) -> Fits:
        m, n = y.shape
        rr, c = len(self.rhos), len(self.cands)
        yt = np.einsum("rij,mj->rmi", self.transform, y)  # R × m × n
        proj = (yt @ self.basis.reshape(rr, n, -1)).reshape(rr, m, c, -1)
        rss = (yt**2).sum(-1)[:, :, None] - (proj**2).sum(-1)
        scale = np.maximum((y**2).mean(1), 1e-300)[None, :, None]
        rss = np.maximum(rss, 1e-12 * scale)  # an exact fit: noise at rounding level, not 0
        slopes = (yt @ self.slope_rows.reshape(rr, n, -1)).reshape(rr, m, c, 2)
        ll = -0.5 * n * np.log(rss / n) + self.logdet[:, None, None]
        b1, b2 = slopes[..., 0], slopes[..., 1]
        kind = self.kind[None, None, :]
        # Which candidates are non-increasing (null) and which rise after their minimum.
        # Null, "no rise after the minimum": the trend's lowest point is its last (or it is flat).
        # Alternative: a rise follows the trend's lowest point. A rise-then-fall stick is either:
        # its start lies below its end (lowest at the start) or above it (lowest at the end).
        start_below_end = -b1 * self.before < b2 * self.after
        rise_fall = (kind == "stick") & (b1 > 0) & (b2 <= 0)
        null = (
            (kind == "flat")
            | ((kind == "fall") & (b1 <= 0))
            | ((kind == "hinge") & (b1 <= 0))  # a hinge's one slope is in the first column
            | ((kind == "stick") & (b1 <= 0) & (b2 <= 0))
            | (rise_fall & ~start_below_end)
        )
        alt = ((kind == "fall") & (b1 > 0)) | ((kind == "hinge") & (b1 > 0))
        alt |= ((kind == "stick") & (b2 > 0)) | (rise_fall & start_below_end)
        # The onset of an alternative: its knot, or the first probe where it rises from the start.
        start = ((kind == "fall") | (kind == "stick")) & (b1 > 0)
        knot = np.where(start, 0, self.knot_of[None, None, :])
        out = []
        for mask in (null, alt):
            scored = np.where(mask, ll, -np.inf).transpose(1, 0, 2).reshape(m, -1)
            best = scored.argmax(1)
            r, ci = np.divmod(best, c)
            idx = np.arange(m)
            var = rss[r, idx, ci] / n / (1 - self.rhos[r] ** 2)
            out.append((scored[idx, best], self.rhos[r], var, ci, knot[r, idx, ci]))
        (l0, r0, v0, c0, _), (l1, r1, v1, c1, k1) = out
        k1 = np.where(np.isfinite(l1), k1, n - 1)
        return Fits(l0, r0, v0, c0, l1, r1, v1, c1, k1)

    def trend(self, y: np.ndarray, cand: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
        """The fitted mean of one series under one candidate at ρ (GLS), and its trend part
        (the broken stick without the offsets)."""
        x = self.columns(cand)
        pw = _prais_winsten(self.n, rho)
        beta = np.linalg.lstsq(pw @ x, pw @ y, rcond=None)[0]
        k = self.offsets.shape[1]
        return x @ beta, x[:, k:] @ beta[k:]


def _prais_winsten(n: int, rho: float) -> np.ndarray:
    """The matrix that turns AR(1) residuals of coefficient ρ into independent ones of equal
    variance: √(1−ρ²)·e_1, then e_i − ρ·e_{i−1}."""
    pw = np.eye(n)
    pw[0, 0] = np.sqrt(1 - rho**2)
    pw[np.arange(1, n), np.arange(n - 1)] = -rho
    return pw


def simulate(
    mean: np.ndarray, rho: float, var: float, size: int, rng: np.random.Generator
) -> np.ndarray:
    """`size` series: the mean plus stationary AR(1) noise of coefficient ρ and variance var."""
    n = mean.size
    z = rng.standard_normal((size, n))
    e = np.empty_like(z)
    e[:, 0] = z[:, 0]
    scale = np.sqrt(1 - rho**2)
    for i in range(1, n):
        e[:, i] = rho * e[:, i - 1] + scale * z[:, i]
    return mean + np.sqrt(var) * e
