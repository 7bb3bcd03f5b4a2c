"""The noise model of a run's probe series, and the trends fitted under it.

A probe series y_i (one normalised AUC per probed checkpoint, in task order) is modelled as

    y_i = c[lang_i] + trend(t_i) + e_i,   e_i = ρ·e_{i−1} + u_i,   u_i ~ N(0, σ²),

with one fixed offset per probe position (the language trained just before the probe: zh, de and
ru transfer to the probe language differently, Table III), AR(1) residuals in probe order
(neighbouring checkpoints share most of their weights, so their noise is correlated), and a trend
with its knot τ at a probed task, d = t − τ: a broken stick b1·min(d, 0) + b2·max(d, 0), or a
curved shape it cannot follow — a fall into a convex rise (cup), a smooth U of two curvatures
(bowl) — or a face of one of them (flat, fall-then-flat, flat-then-rise, a plateau then a convex
rise…; FAMILIES). Every candidate is fitted by generalised least squares (the Prais–Winsten
transform of ρ) at each ρ of a grid and profiled over σ, so each (ρ, candidate) has a
log-likelihood, less PENALTY per trend column. Where the fitted trend is lowest says which
hypothesis it belongs to: the null, "no rise after the minimum" (lowest at the last probe, or
flat), or the alternative, a rise after the minimum, whose onset is that minimum (a knot, or the
first probe).

Everything here works on many series of one design at once (the data and its parametric
bootstrap samples), with the design's projections computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The ρ grid of the profile likelihood: finer near 1, where the likelihood is steep.
RHOS = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9])
MAX_RHO = 0.9
CHUNK = 1000  # series per batch: bounds the memory of the projections


def offset_groups(langs: list[str]) -> tuple[np.ndarray, list[str]]:
    """Integer group per probe for the per-language offsets, and the groups' names."""
    groups, names, _ = offset_levels(langs)
    return groups, names


def offset_levels(langs: list[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Integer group per probe for the per-language offsets, the groups' names, and the languages
    folded into a neighbour's group (language → the group it shares).

    One offset per language where at least two languages each label two or more probes (the
    paper's zh/de/ru probing); otherwise (e.g. the control, where every task is a new chain, or a
    single probe position) one intercept. An offset seen once would fit its probe exactly, so a
    language with a single probe shares the offset of the nearest probe, in task order, of a language
    with several (the earlier of two equally near): App. B's dense stage can leave one zh or de
    probe."""
    names = sorted(set(langs))
    counts = {x: langs.count(x) for x in names}
    levels = [x for x in names if counts[x] >= 2]
    if len(levels) < 2:
        return np.zeros(len(langs), dtype=int), [], {}
    folded: dict[str, str] = {}
    for i, x in enumerate(langs):
        if counts[x] < 2:
            near = sorted((abs(j - i), j) for j, other in enumerate(langs) if counts[other] >= 2)
            folded[x] = langs[near[0][1]]
    return np.array([levels.index(folded.get(x, x)) for x in langs]), levels, folded


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
    rho_end: np.ndarray  # the noise of a line with a knot where the last third begins
    var_end: np.ndarray

    @property
    def lr(self) -> np.ndarray:
        """Log-likelihood ratio of a rise after the minimum against none (0 where none fits)."""
        return np.maximum(self.loglik1 - self.loglik0, 0.0)


# The candidate trends: (family, columns as functions of t − τ). Broken sticks and their faces
# follow linear trends; the curved ones (a linear or quadratic fall into a quadratic rise) follow
# smooth minima and convex rises, whose knot a broken stick places late.
FAMILIES = {
    "fall": lambda d: [np.minimum(d, 0)],
    "hinge": lambda d: [np.maximum(d, 0)],
    "stick": lambda d: [np.minimum(d, 0), np.maximum(d, 0)],
    "cup": lambda d: [np.minimum(d, 0), np.maximum(d, 0) ** 2],
    "bowl": lambda d: [np.minimum(d, 0) ** 2, np.maximum(d, 0) ** 2],
    "lift": lambda d: [np.maximum(d, 0) ** 2],
    "settle": lambda d: [np.minimum(d, 0) ** 2],
}
# Knots of each family (probe indices; n probes): a knot at either end would duplicate a face.
KNOTS = {
    "fall": lambda n: range(1, n),
    "hinge": lambda n: range(n - 1),
    "stick": lambda n: range(1, n - 1),
    "cup": lambda n: range(1, n - 1),
    "bowl": lambda n: range(1, n - 1),
    "lift": lambda n: range(n - 1),
    "settle": lambda n: range(1, n),
}
PENALTY = 1.0  # log-likelihood charged per trend column when candidates are compared
SLOPES = 2  # trend columns of a candidate at most


class Design:
    """The candidate trends of one series' probe tasks and offsets, projected at every ρ."""

    def __init__(
        self,
        tasks: np.ndarray,
        groups: np.ndarray,
        rhos: np.ndarray = RHOS,
        families: tuple[str, ...] = tuple(FAMILIES),
    ) -> None:
        t = np.asarray(tasks, dtype=float)
        self.n = n = t.size
        self.tasks = t
        self.rhos = rhos
        k = int(groups.max()) + 1
        self.offsets = np.eye(k)[groups]  # n × k
        # (family, knot index, trend columns); the knot is a probed task. Scaled by the span so
        # that quadratic columns are of the size of linear ones.
        span = max(float(np.ptp(t)), 1.0)
        cands: list[tuple[str, int, np.ndarray]] = [("flat", 0, np.zeros((n, 0)))]
        for fam in families:
            for j in KNOTS[fam](n):
                cols = FAMILIES[fam]((t - t[j]) / span)
                cands.append((fam, j, span * np.column_stack(cols)))
        self.cands = cands
        c = len(cands)
        self.transform = np.stack([prais_winsten(n, r) for r in rhos])  # R × n × n
        # Per ρ, the orthonormal basis of the transformed offsets, then of each candidate's trend
        # columns beyond them (the fit's residual sum of squares is ỹ's norm less both
        # projections), and the rows giving each fitted trend's value at the first and the last
        # probe from ỹ (which hypothesis a fit belongs to depends on them alone).
        self.offset_basis = np.zeros((len(rhos), n, k))
        self.rows = np.zeros((len(rhos), n, c, SLOPES + 2))
        self.trend_cols = np.zeros((c, n, SLOPES))  # each candidate's trend columns
        for ci, (_, _, s) in enumerate(cands):
            self.trend_cols[ci, :, : s.shape[1]] = s
        for r, pw in enumerate(self.transform):
            self.offset_basis[r] = np.linalg.qr(pw @ self.offsets)[0]
            for ci, (_, _, s) in enumerate(cands):
                if not s.shape[1]:
                    continue
                q, rr = np.linalg.qr(pw @ np.column_stack([self.offsets, s]))
                self.rows[r, :, ci, : s.shape[1]] = q[:, k:]
                # β = R⁻¹ Qᵀ ỹ: the slopes are the last rows of R⁻¹ Qᵀ.
                slope_rows = np.linalg.solve(rr, q.T)[k:]  # slopes × n
                ends = s[[0, -1]] @ slope_rows  # 2 × n
                self.rows[r, :, ci, SLOPES:] = ends.T
        self.family = np.array([fam for fam, _, _ in cands])
        # "Still falling" looks at the last third of the probes (at least four beyond the
        # offsets): `end` is a line that may bend where it begins, `end_null` the same line flat
        # after the bend (a straight line and the flat trend where the window is everything).
        self.window = min(n, max(-(-n // 3), k + 4))
        bend = n - self.window
        where = {(fam, j): i for i, (fam, j, _) in enumerate(cands)}
        self.end = where.get(("stick", bend), where.get(("hinge", 0), 0))
        self.end_null = where.get(("fall", bend), 0)
        self.penalty = PENALTY * np.array([s.shape[1] for _, _, s in cands], dtype=float)
        self.knot_of = np.array([j for _, j, _ in cands])
        self.logdet = 0.5 * np.log(1 - rhos**2)

    def columns(self, cand: int) -> np.ndarray:
        """The full design (offsets and slopes) of one candidate, untransformed."""
        return np.column_stack([self.offsets, self.cands[cand][2]])

    def fit(self, y: np.ndarray) -> Fits:
        """The best null and alternative fits of each row of y (m × n)."""
        y = np.atleast_2d(np.asarray(y, dtype=float))
        parts = [self._fit(y[i : i + CHUNK]) for i in range(0, y.shape[0], CHUNK)]
        return Fits(*(np.concatenate([getattr(p, f) for p in parts]) for f in Fits.__annotations__))

    def _scores(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For every ρ, series and candidate (R × m × C): the penalised log-likelihood, the
        residual sum of squares, whether the fitted trend belongs to the null, and where it is
        lowest (its onset, for an alternative)."""
        m, n = y.shape
        rr, c = len(self.rhos), len(self.cands)
        yt = np.einsum("rij,mj->rmi", self.transform, y)  # R × m × n
        proj = (yt @ self.rows.reshape(rr, n, -1)).reshape(rr, m, c, SLOPES + 2)
        off = yt @ self.offset_basis  # R × m × k
        rest = np.einsum("rmi,rmi->rm", yt, yt) - np.einsum("rmk,rmk->rm", off, off)
        rss = rest[:, :, None] - np.einsum("rmcs,rmcs->rmc", proj[..., :SLOPES], proj[..., :SLOPES])
        scale = np.maximum((y**2).mean(1), 1e-300)[None, :, None]
        rss = np.maximum(rss, 1e-12 * scale)  # an exact fit: noise at rounding level, not 0
        ll = -0.5 * n * np.log(rss / n) + self.logdet[:, None, None] - self.penalty
        # Where each fitted trend is lowest says which hypothesis it belongs to. Null, "no rise
        # after the minimum": lowest at the last probe (or flat). Alternative: a rise follows the
        # lowest point, which is the onset. Every family's trend is 0 at its knot and monotone on
        # each side of it, so its lowest point is the first probe, the knot or the last probe,
        # whichever is lowest (a tie goes to the later: a plateau ends at the knot).
        v0, v1 = proj[..., SLOPES], proj[..., SLOPES + 1]
        null = v1 <= np.minimum(v0, 0.0)
        low = np.where(null, n - 1, np.where(v0 < 0, 0, self.knot_of[None, None, :]))
        return ll, rss, null, low

    def _fit(self, y: np.ndarray) -> Fits:
        m, n = y.shape
        c = len(self.cands)
        ll, rss, null, low = self._scores(y)
        out = []
        for mask in (null, ~null):
            scored = np.where(mask, ll, -np.inf).transpose(1, 0, 2).reshape(m, -1)
            best = scored.argmax(1)
            r, ci = np.divmod(best, c)
            idx = np.arange(m)
            var = rss[r, idx, ci] / n / (1 - self.rhos[r] ** 2)
            out.append((scored[idx, best], self.rhos[r], var, ci, low[r, idx, ci]))
        (l0, r0, v0, c0, _), (l1, r1, v1, c1, k1) = out
        k1 = np.where(np.isfinite(l1), k1, n - 1)
        re = ll[:, :, self.end].argmax(0)
        ve = rss[re, np.arange(m), self.end] / n / (1 - self.rhos[re] ** 2)
        return Fits(l0, r0, v0, c0, l1, r1, v1, c1, k1, self.rhos[re], ve)

    def alternatives(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every candidate that fits one series with a rise after its minimum (at some ρ): the
        candidates, their best ρ and their penalised log-likelihood there."""
        ll, _, null, _ = self._scores(np.asarray(y, dtype=float)[None, :])
        scored = np.where(null, -np.inf, ll)[:, 0, :]  # R × C
        best = scored.argmax(0)
        top = scored[best, np.arange(scored.shape[1])]
        keep = np.flatnonzero(np.isfinite(top))
        return keep, self.rhos[best[keep]], top[keep]

    def trend(self, y: np.ndarray, cand: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
        """The fitted mean of one series under one candidate at ρ (GLS), and its trend part
        (the candidate's trend without the offsets)."""
        x = self.columns(cand)
        pw = prais_winsten(self.n, rho)
        beta = np.linalg.lstsq(pw @ x, pw @ y, rcond=None)[0]
        k = self.offsets.shape[1]
        return x @ beta, x[:, k:] @ beta[k:]


def prais_winsten(n: int, rho: float) -> np.ndarray:
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
