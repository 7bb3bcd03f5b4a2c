"""How well the onset test and interval work on synthetic studies with a known truth.

Each case is a trend on a probe grid plus stationary AR(1) noise of SD 1 % (white, ρ = 0.5 or
0.8). The grids: App. B's dense probing (after zh, de and ru: tasks 8c+2, 8c+6, 8c+8) with
per-language offsets (+3, −2, 0 %) or none, and the control's (a probe after each of tasks 1–12,
then every 4th task to 48; one chain per task, so one intercept). The trends: flat, a fall that
then stays flat, a steady fall (the nulls: no rise after the minimum); a broken stick (a fall of
5 % to the onset, then a rise of 10 % to the last probe) with its minimum at the first, the second
or a mid-run probe; and three smooth shapes the broken stick does not contain — a parabola (smooth
U), a linear fall into a quadratic rise (convex rise), and a flat stretch then a rise ∝ (t − τ)^1.5
(plateau-then-rise: its onset is where the plateau ends). Every simulated run goes through the
same estimator as real runs; a case with several seeds also pools them as
fit-onset does (plc.onset.bootstrap.pool_seeds), and the censored-seeds case gives its seeds
onsets so late that some are not detected, which the pooling must count as censored.

Per case: the share of runs with an onset detected (the false-alarm rate where there is no onset,
the power otherwise), the p-values' distribution under the nulls (shares below 0.01, 0.05, 0.10,
0.5 and Kolmogorov–Smirnov tests of uniformity), the share called "still falling", the coverage
and median width of the onset's interval and the point's mean absolute error, each rate with its
Monte-Carlo standard error. Any estimator can be calibrated by name (plc.onset.estimators); the
default noise model is run through its test directly (`judge_onset`), so `samples` can make it
cheaper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from plc.errors import PlcError
from plc.onset.bootstrap import pool_seeds
from plc.onset.detect import ALPHA, NULL_SAMPLES, PILOT_SAMPLES, judge_onset
from plc.onset.estimators import (
    FROM_START,
    NO_RISE,
    ONSET,
    STILL_FALLING,
    Estimator,
    NoiseModel,
    get_estimator,
    verdict_of,
)
from plc.onset.noise import Design, offset_groups, simulate
from plc.onset.series import ProbeSeries
from plc.protocol import ONSET_ESTIMATOR, ONSET_WINDOW

PROBES = (2, 6, 8)  # tasks of a cycle after zh, de and ru (App. B's dense probing)
LANGS = ("zh", "de", "ru")
OFFSETS = {"zh": 3.0, "de": -2.0, "ru": 0.0}  # % of AUC: languages transfer differently
RISE = 10.0  # % from the minimum to the last probe: ten noise SDs
FALL = 5.0  # % from the first probe down to the minimum
P_BELOW = (0.01, 0.05, 0.10, 0.5)  # where the null p-values' distribution is read
SHAPES = ("stick", "smooth U", "convex rise", "plateau-then-rise", "decay-then-flat", "falling")


@dataclass
class Case:
    """One synthetic study: its trend (shape, minimum: None for none), noise, grid and seeds."""

    name: str
    onset: int | None  # task of the trend's minimum (end of a plateau); None: no onset
    rho: float
    offsets: bool = True
    seeds: int = 1
    shape: str = "stick"
    grid: str = "dense"  # dense: App. B's zh/de/ru probing; control: the control plan's
    onsets: tuple[int, ...] | None = None  # one onset per seed (the censored-seeds case)


DEFAULT_CASES = (
    Case("flat", None, 0.0),
    Case("flat", None, 0.5),
    Case("flat", None, 0.8),
    Case("flat, no offsets", None, 0.5, offsets=False),
    Case("flat, 4 seeds", None, 0.5, seeds=4),
    Case("decay-then-flat", None, 0.5, shape="decay-then-flat"),
    Case("falling", None, 0.5, shape="falling"),
    Case("flat, control grid", None, 0.5, grid="control"),
    Case("onset at the first probe", 2, 0.5),
    Case("onset at the second probe", 6, 0.5),
    Case("interior onset", 30, 0.0),
    Case("interior onset", 30, 0.5),
    Case("interior onset", 30, 0.8),
    Case("interior onset, no offsets", 30, 0.5, offsets=False),
    Case("interior onset, 4 seeds", 30, 0.5, seeds=4),
    Case("smooth U", 30, 0.5, shape="smooth U"),
    Case("convex rise", 30, 0.5, shape="convex rise"),
    Case("plateau-then-rise", 30, 0.5, shape="plateau-then-rise"),
    Case("control grid, first probe", 1, 0.5, grid="control"),
    Case("control grid, interior onset", 12, 0.5, grid="control"),
    Case("censored seeds", None, 0.5, seeds=4, onsets=(24, 36, 48, 60)),
)


@dataclass
class CaseResult:
    case: Case
    runs: int
    detected: float  # share of runs with an onset detected
    detected_se: float
    coverage: float | None  # share of intervals holding the true onset
    coverage_se: float | None
    width: float | None  # median interval width, tasks
    width_se: float | None
    pooled_coverage: float | None = None  # of the seeds' pooled interval (several seeds)
    pooled_width: float | None = None
    p_below: dict[str, float] | None = None  # null cases: share of p-values below each level
    uniform_p: float | None = None  # Kolmogorov–Smirnov test of uniform p-values, two-sided
    small_p: float | None = None  # and one-sided: are p-values smaller than uniform?
    still_falling: float = 0.0  # share of runs called "still falling"
    error: float | None = None  # mean absolute error of the onset (or minimum), tasks
    pooled_truth: float | None = None  # the pooled onset aimed at (geometric mean)
    censored: float | None = None  # share of seeds censored (no onset detected)


@dataclass
class Calibration:
    cycles: int
    reps: int
    seed: int
    alpha: float
    ci: float
    noise_sd: float = 1.0
    rows: list[CaseResult] = field(default_factory=list)
    estimator: str = ONSET_ESTIMATOR

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def grid_of(case: Case, cycles: int) -> tuple[np.ndarray, list[str]]:
    """The probed tasks and the language trained before each probe."""
    if case.grid == "control":
        tasks = np.r_[np.arange(1, 13), np.arange(16, 49, 4)].astype(float)
        return tasks, [f"m{int(t):02d}" for t in tasks]
    if case.grid != "dense":
        raise PlcError(f"unknown probe grid {case.grid!r}")
    tasks = np.array([8 * c + k for c in range(cycles) for k in PROBES], dtype=float)
    return tasks, [LANGS[i % 3] for i in range(tasks.size)]


def trend(tasks: np.ndarray, onset: int | None, shape: str = "stick") -> np.ndarray:
    """A case's trend (% of AUC) at the probed tasks."""
    first, last = tasks[0], tasks[-1]
    if shape == "falling":
        return -RISE * (tasks - first) / (last - first)
    if onset is None:
        return np.zeros_like(tasks)
    before = np.clip((onset - tasks) / max(onset - first, 1), 0, None)
    after = np.clip((tasks - onset) / (last - onset), 0, None)
    if shape == "stick":
        return FALL * before + RISE * after
    if shape == "decay-then-flat":
        return FALL * before
    if shape == "smooth U":  # one parabola through the minimum: RISE at the last probe
        return RISE * ((tasks - onset) / (last - onset)) ** 2
    if shape == "convex rise":
        return FALL * before + RISE * after**2
    if shape == "plateau-then-rise":
        return RISE * after**1.5
    raise PlcError(f"unknown trend shape {shape!r}")


def probed_onset(tasks: np.ndarray, onset: int | None, shape: str = "stick") -> float | None:
    """The onset a probed series can show, which coverage and error are counted against: the
    probed task where the trend is lowest (the last of equals: where a plateau ends). The
    paper's onset is the probed task of least AUC, so a trend's minimum between two probes is
    seen at one of them — a stick turning at 36 with probes at 34 and 38 shows its onset at 34,
    whose AUC is lower — and no interval of probed tasks can hold 36 itself."""
    if onset is None:
        return None
    y = trend(tasks, onset, shape)
    return float(tasks[np.flatnonzero(y <= y.min() + 1e-9)[-1]])


def _share(x: list[bool]) -> tuple[float, float]:
    p = float(np.mean(x))
    return p, math.sqrt(p * (1 - p) / len(x))


def _median(x: list[float]) -> tuple[float, float]:
    """The median and its standard error (1.2533·SD/√n, the normal approximation)."""
    a = np.asarray(x, dtype=float)
    if a.size < 2:
        return float(np.median(a)), float("nan")
    return float(np.median(a)), float(1.2533 * a.std(ddof=1) / math.sqrt(a.size))


@dataclass
class _Pooled:
    """What pool_seeds needs of a simulated run."""

    n_params: int
    size: str
    method: str
    detected: bool
    onset: float | None
    horizon: float | None
    verdict: str
    mass: tuple[np.ndarray, np.ndarray]

    @property
    def fit_value(self) -> float | None:
        return self.onset

    def distribution(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mass


@dataclass
class _Seen:
    """What an estimator made of one simulated series."""

    detected: bool
    p_value: float | None  # None: the estimator has no test (the moving average)
    verdict: str  # one of plc.onset.estimators.VERDICTS
    point: float  # the onset, or the minimum where none is detected
    lo: float | None  # the interval of the point; None where there is none (still falling)
    hi: float | None
    mass: tuple[np.ndarray, np.ndarray]  # the point's distribution: tasks and probabilities


# One simulated series (its design, tasks, languages, values) → what the estimator made of it.
Judge = Callable[[Design, np.ndarray, list[str], np.ndarray, np.random.Generator], _Seen]


def _judge(estimator: Estimator, alpha: float, ci: float, samples: int) -> Judge:
    """The noise model's test with `samples` samples (plc.onset.detect.judge_onset, as
    assess_onset runs it), any other estimator through its interface (which has no such knob)."""
    level = [(1 - ci) / 2, (1 + ci) / 2]
    if isinstance(estimator, NoiseModel):
        pilot = max(samples * PILOT_SAMPLES // NULL_SAMPLES, 20)

        def noise_model(
            design: Design, tasks: np.ndarray, langs: list[str], y: np.ndarray, rng: Any
        ) -> _Seen:
            v = judge_onset(design, y, rng, alpha, 0.0, samples, samples, pilot)
            point = float(tasks[-1] if v.still_falling else tasks[v.knot])
            verdict = (
                STILL_FALLING
                if v.still_falling
                else (FROM_START if v.knot == 0 else ONSET)
                if v.detected
                else NO_RISE
            )
            lo = hi = None
            if v.knots.size and not v.still_falling:
                lo, hi = np.quantile(tasks[v.knots], level, method="inverted_cdf")
                lo, hi = min(float(lo), point), max(float(hi), point)
            at, count = np.unique(tasks[v.knots], return_counts=True)
            mass = (at, count / count.sum()) if at.size else (np.array([point]), np.ones(1))
            return _Seen(v.detected, v.p_value, verdict, point, lo, hi, mass)

        return noise_model

    def other(
        design: Design, tasks: np.ndarray, langs: list[str], y: np.ndarray, rng: Any
    ) -> _Seen:
        series = ProbeSeries(
            run_id="sim",
            size="",
            n_params=1,
            normalize="first",
            task_index=[int(t) for t in tasks],
            lang=list(langs),
            auc=list(y),
            tokens_seen=[int(t) for t in tasks],
            value=list(y),
            baseline_auc=1.0,
        )
        ev = estimator.assess(
            series, window=ONSET_WINDOW, ci=ci, alpha=alpha, seed=int(rng.integers(2**31))
        )
        mass = ev.onset_mass or {ev.minimum_task: 1.0}
        at, p = np.array(list(mass), dtype=float), np.array(list(mass.values()))
        return _Seen(
            ev.detected,
            ev.p_value,
            verdict_of(ev),
            float(ev.minimum_task),
            ev.onset_lo,
            ev.onset_hi,
            (at, p / p.sum()),
        )

    return other


def run_case(
    case: Case,
    cycles: int,
    reps: int,
    rng: np.random.Generator,
    alpha: float = ALPHA,
    ci: float = 0.95,
    samples: int = NULL_SAMPLES,
    estimator: str = ONSET_ESTIMATOR,
) -> CaseResult:
    """`reps` studies of one case (each `case.seeds` runs) through the estimator."""
    from scipy.stats import kstest

    judge = _judge(get_estimator(estimator), alpha, ci, samples)
    tasks, langs = grid_of(case, cycles)
    groups, _ = offset_groups(langs)
    design = Design(tasks, groups)
    offsets = np.array([OFFSETS.get(x, 0.0) for x in langs]) if case.offsets else 0.0
    onsets = case.onsets or (case.onset,) * case.seeds
    means = [trend(tasks, t, case.shape) + offsets for t in onsets]
    truths = [probed_onset(tasks, t, case.shape) for t in onsets]
    detected, p_values, falling, covered, widths, errors = [], [], [], [], [], []
    pooled_cover, pooled_width, censored = [], [], []
    truth = math.exp(np.mean(np.log(truths))) if case.onsets else truths[0]
    for _ in range(reps):
        runs = []
        for mean, onset in zip(means, truths, strict=True):
            y = simulate(mean, case.rho, 1.0, 1, rng)[0]
            seen = judge(design, tasks, langs, y, rng)
            detected.append(seen.detected)
            p_values.append(seen.p_value)
            falling.append(seen.verdict == STILL_FALLING)
            censored.append(not seen.detected)
            if onset is not None:
                ok = seen.lo is not None and seen.hi is not None
                covered.append(bool(ok and seen.lo <= onset <= seen.hi))
                if ok:
                    widths.append(float(seen.hi - seen.lo))
                    errors.append(abs(seen.point - onset))
            runs.append(
                _Pooled(
                    1,
                    "s",
                    "none",
                    seen.detected,
                    seen.point if seen.detected else None,
                    float(tasks[-1]),
                    seen.verdict,
                    seen.mass,
                )
            )
        if case.seeds > 1 and truth is not None:
            (size,) = pool_seeds(runs, ci)
            if size.onset is not None:
                pooled_cover.append(bool(size.onset_lo <= truth <= size.onset_hi))
                pooled_width.append(float(size.onset_hi - size.onset_lo))
            else:
                pooled_cover.append(False)
    det, det_se = _share(detected)
    out = CaseResult(case, len(detected), det, det_se, None, None, None, None)
    out.still_falling = float(np.mean(falling))
    if covered:
        out.coverage, out.coverage_se = _share(covered)
        if widths:
            out.width, out.width_se = _median(widths)
            out.error = float(np.mean(errors))
    if pooled_cover:
        out.pooled_coverage = float(np.mean(pooled_cover))
        out.pooled_width = float(np.median(pooled_width)) if pooled_width else None
        out.pooled_truth = float(truth)
        out.censored = float(np.mean(censored))
    if all(t is None for t in truths) and case.onsets is None and None not in p_values:
        p = np.asarray(p_values, dtype=float)
        out.p_below = {f"{x:g}": float((p < x).mean()) for x in P_BELOW}
        out.uniform_p = float(kstest(p, "uniform").pvalue)
        out.small_p = float(kstest(p, "uniform", alternative="greater").pvalue)
    return out


def calibrate(
    reps: int = 100,
    seed: int = 0,
    cycles: int = 8,
    alpha: float = ALPHA,
    ci: float = 0.95,
    cases: tuple[Case, ...] = DEFAULT_CASES,
    samples: int = NULL_SAMPLES,
    jobs: int = 1,
    estimator: str = ONSET_ESTIMATOR,
) -> Calibration:
    """`plc simulate-onset`: every case `reps` times with this seed, `jobs` cases at a time in
    their own processes. Each case draws from its own stream, seeded by `seed` and the case
    itself, so its numbers do not depend on the other cases or on `jobs`."""
    if reps < 1:
        raise PlcError(f"--reps must be at least 1, not {reps}")
    if cycles < 2:
        raise PlcError(
            f"--cycles must be at least 2 (the noise model needs 7 probes), not {cycles}"
        )
    if not 0 < ci < 1:
        raise PlcError(f"--ci is a level between 0 and 1 (e.g. 0.95), not {ci:g}")
    if jobs < 1:
        raise PlcError(f"--jobs must be at least 1, not {jobs}")
    get_estimator(estimator)
    out = Calibration(cycles, reps, seed, alpha, ci, estimator=estimator)
    work = [(case, cycles, reps, seed, alpha, ci, samples, estimator) for case in cases]
    out.rows = _map(_run_seeded, work, jobs)
    return out


def _run_seeded(
    case: Case,
    cycles: int,
    reps: int,
    seed: int,
    alpha: float,
    ci: float,
    samples: int,
    estimator: str,
) -> CaseResult:
    import zlib

    rng = np.random.default_rng([seed, zlib.crc32(repr(case).encode())])
    return run_case(case, cycles, reps, rng, alpha, ci, samples, estimator)


# ---------------------------------------------------------------- the law's interval
LAW_PROBES = 40  # probes at tasks 1…40 (one chain per task, as the control's)
LAW_SLOPE = 0.3  # % per task of the fall to the onset and of the rise after it (noise SD 1 %)
LAW_RESAMPLES = 300  # of the law's bootstrap, per study


@dataclass(frozen=True)
class LawCase:
    """Synthetic law studies: `sizes` sizes × `seeds` seeds, the true law T = first·(P/P₀)^b
    from `first` to `last` tasks, each seed's onset scattered about it by `scatter` (SD of ln T).
    Where `last` lies past the probes, the largest sizes' runs show no onset: censored."""

    name: str
    sizes: int
    seeds: int
    scatter: float
    slope: float
    first: float = 5.0
    last: float = 30.0


LAW_CASES = (
    LawCase("8 sizes × 1 seed", 8, 1, 0.3, 0.3),
    LawCase("8 × 1", 8, 1, 0.3, 1.0),
    LawCase("8 × 1, no scatter", 8, 1, 0.0, 0.3),
    LawCase("4 × 3", 4, 3, 0.3, 0.3),
    LawCase("4 × 3", 4, 3, 0.3, 1.0),
    LawCase("5 × 2", 5, 2, 0.3, 0.3),
    LawCase("5 × 3, censored", 5, 3, 0.3, 0.6, 6.0, 70.0),
)


@dataclass
class LawResult:
    case: LawCase
    studies: int
    coverage: float  # share of studies whose interval of b holds the true b
    coverage_se: float
    width: float  # mean width of that interval
    ideal: float  # 2·z·SD of the point estimate of b over the studies
    ols_coverage: float  # the OLS t interval of the same points, for comparison
    ols_width: float
    censored: float  # share of runs with no onset detected
    interval: str  # which interval: the bootstrap's (cases) or the censored law's
    bias: float  # mean of the point estimates of b over the studies, less the true b

    @property
    def ratio(self) -> float:
        return self.width / self.ideal if self.ideal > 0 else float("nan")


@dataclass
class LawCalibration:
    studies: int
    seed: int
    ci: float
    samples: int
    resamples: int
    rows: list[LawResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for row, r in zip(out["rows"], self.rows, strict=True):
            row["ratio"] = r.ratio
        return out


def law_study(
    case: LawCase, rng: np.random.Generator, samples: int = 100, alpha: float = ALPHA
) -> list[_Pooled]:
    """One synthetic law study: every run (sizes × seeds) through the noise model's test, its
    p from `samples` samples; each run's onset drawn about the true law with the case's
    scatter, then noise around a fall-then-rise of the AUC on tasks 1…LAW_PROBES."""
    tasks = np.arange(1, LAW_PROBES + 1, dtype=float)
    design = Design(tasks, np.zeros(tasks.size, dtype=int))
    pilot = max(samples * PILOT_SAMPLES // NULL_SAMPLES, 20)
    p = 5e6 * (case.last / case.first) ** (np.arange(case.sizes) / (case.sizes - 1) / case.slope)
    law = case.first * (p / p[0]) ** case.slope
    runs = []
    for size, t in zip(np.repeat(p, case.seeds), np.repeat(law, case.seeds), strict=True):
        onset = t * math.exp(rng.normal(0.0, case.scatter))
        y = simulate(LAW_SLOPE * np.abs(tasks - onset), 0.0, 1.0, 1, rng)[0]
        v = judge_onset(design, y, rng, alpha, 0.0, samples, samples, pilot)
        at, count = np.unique(tasks[v.knots], return_counts=True)
        mass = (at, count / count.sum()) if at.size else (tasks[-1:], np.ones(1))
        found = float(tasks[v.knot]) if v.detected else None
        runs.append(_Pooled(int(size), f"{size:g}", "none", v.detected, found, tasks[-1], "", mass))
    return runs


def law_case(
    case: LawCase,
    studies: int,
    rng: np.random.Generator,
    ci: float = 0.95,
    samples: int = 100,
    resamples: int = LAW_RESAMPLES,
    alpha: float = ALPHA,
) -> LawResult:
    """`studies` studies of one law case: each run through the noise model's test (its p from
    `samples` samples), the detected runs' log-log law through the bootstrap of fit-onset
    (`cases`), or where runs are censored the censored law (plc.onset.censored) as fit-onset
    prints it."""
    from scipy.stats import linregress, norm
    from scipy.stats import t as t_dist

    from plc.onset.bootstrap import bootstrap_fits
    from plc.onset.censored import censored_law

    censoring = case.last > LAW_PROBES
    hits, widths, points, ols_hits, ols_widths, lost = [], [], [], [], [], []
    for k in range(studies):
        runs = law_study(case, rng, samples, alpha)
        lost += [not r.detected for r in runs]
        kept = [r for r in runs if r.detected]
        x, ln_t = np.log([r.n_params for r in kept]), np.log([r.onset for r in kept])
        if censoring:
            fit = censored_law(
                [r.size for r in runs],
                [r.n_params for r in runs],
                [r.onset for r in runs],
                [float(r.horizon) for r in runs],
                ci,
            )
            if fit is None:
                continue
            b, (lo, hi) = fit.b, fit.b_ci
        else:
            if len(set(x.tolist())) < 2 or x.size < 3:
                continue
            bounds, _ = bootstrap_fits(kept, ["loglog"], resamples, ci, seed=k)
            (lo, hi), b = bounds["loglog"]["b"], float(np.polyfit(x, ln_t, 1)[0])
        hits.append(lo <= case.slope <= hi)
        widths.append(hi - lo)
        points.append(b)
        if x.size >= 3 and len(set(x.tolist())) >= 2:
            ols = linregress(x, ln_t)
            q = float(t_dist.ppf((1 + ci) / 2, x.size - 2))
            ols_hits.append(abs(ols.slope - case.slope) <= q * ols.stderr)
            ols_widths.append(2 * q * ols.stderr)
    if len(hits) < 3:
        raise PlcError(f"{case.name}: {len(hits)} of {studies} studies had a law to fit (need 3)")
    cover, cover_se = _share(hits)
    z = float(norm.ppf((1 + ci) / 2))
    return LawResult(
        case,
        len(hits),
        cover,
        cover_se,
        float(np.mean(widths)),
        2 * z * float(np.std(points, ddof=1)),
        float(np.mean(ols_hits)),
        float(np.mean(ols_widths)),
        float(np.mean(lost)),
        "censored law (t)" if censoring else "bootstrap (cases)",
        float(np.mean(points)) - case.slope,
    )


def calibrate_law(
    studies: int = 100,
    seed: int = 0,
    ci: float = 0.95,
    cases: tuple[LawCase, ...] = LAW_CASES,
    samples: int = 100,
    resamples: int = LAW_RESAMPLES,
    jobs: int = 1,
) -> LawCalibration:
    """`plc simulate-onset --law`: the coverage and width of the law's interval of b, every case
    `studies` times, `jobs` cases at a time; each case seeded by `seed` and itself."""
    if studies < 3:
        raise PlcError(
            f"--reps must be at least 3 for a law study (an SD over studies), not {studies}"
        )
    if jobs < 1:
        raise PlcError(f"--jobs must be at least 1, not {jobs}")
    out = LawCalibration(studies, seed, ci, samples, resamples)
    work = [(case, studies, seed, ci, samples, resamples) for case in cases]
    out.rows = _map(_law_seeded, work, jobs)
    return out


def _law_seeded(
    case: LawCase, studies: int, seed: int, ci: float, samples: int, resamples: int
) -> LawResult:
    import zlib

    rng = np.random.default_rng([seed, zlib.crc32(repr(case).encode())])
    return law_case(case, studies, rng, ci, samples, resamples)


def _map(fn: Callable[..., Any], work: list[tuple], jobs: int) -> list[Any]:
    """fn over the work's argument tuples, `jobs` at a time in their own processes."""
    if jobs == 1:
        return [fn(*w) for w in work]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(fn, *zip(*work, strict=True)))
