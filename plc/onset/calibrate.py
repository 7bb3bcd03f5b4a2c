"""How well the onset test and interval work on synthetic studies with a known truth.

Each case is a trend (flat; an onset at the first probe; one at the second; one mid-run) on the
paper's dense probing (after zh, de and ru: tasks 8c+2, 8c+6, 8c+8), plus per-language offsets
(+3, −2, 0 %) or none, plus stationary AR(1) noise of SD 1 % (white, ρ = 0.5 or 0.8). Every
simulated run goes through the same estimator as real runs (plc.onset.detect); a case with
several seeds also pools them as fit-onset does (plc.onset.bootstrap.pool_seeds). The table gives
the share of runs with an onset detected (the false-alarm rate where the trend is flat, the power
otherwise), the coverage and the median width of the onset's interval, each with its Monte-Carlo
standard error. Any estimator can be calibrated by name (plc.onset.estimators); the default noise
model is run through its test directly (`judge_onset`), so `samples` can make it cheaper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from plc.errors import PlcError
from plc.onset.bootstrap import pooled_interval
from plc.onset.detect import ALPHA, NULL_SAMPLES, PILOT_SAMPLES, judge_onset
from plc.onset.estimators import Estimator, NoiseModel, get_estimator
from plc.onset.noise import Design, offset_groups, simulate
from plc.onset.series import ProbeSeries
from plc.protocol import ONSET_ESTIMATOR, ONSET_WINDOW

PROBES = (2, 6, 8)  # tasks of a cycle after zh, de and ru (App. B's dense probing)
LANGS = ("zh", "de", "ru")
OFFSETS = {"zh": 3.0, "de": -2.0, "ru": 0.0}  # % of AUC: languages transfer differently
RISE = 10.0  # % from the minimum to the last probe: ten noise SDs
FALL = 5.0  # % from the first probe down to the minimum


@dataclass
class Case:
    """One synthetic study: its trend's minimum (None: flat), noise, offsets and seeds."""

    name: str
    onset: int | None  # task of the trend's minimum; None for a flat trend
    rho: float
    offsets: bool = True
    seeds: int = 1


DEFAULT_CASES = (
    Case("flat", None, 0.0),
    Case("flat", None, 0.5),
    Case("flat", None, 0.8),
    Case("flat, no offsets", None, 0.5, offsets=False),
    Case("flat, 4 seeds", None, 0.5, seeds=4),
    Case("onset at the first probe", 2, 0.5),
    Case("onset at the second probe", 6, 0.5),
    Case("interior onset", 30, 0.0),
    Case("interior onset", 30, 0.5),
    Case("interior onset", 30, 0.8),
    Case("interior onset, no offsets", 30, 0.5, offsets=False),
    Case("interior onset, 4 seeds", 30, 0.5, seeds=4),
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


def _trend(tasks: np.ndarray, onset: int | None) -> np.ndarray:
    if onset is None:
        return np.zeros_like(tasks)
    first, last = tasks[0], tasks[-1]
    fall = np.where(tasks < onset, FALL * (onset - tasks) / max(onset - first, 1), 0.0)
    return fall + np.where(tasks > onset, RISE * (tasks - onset) / (last - onset), 0.0)


def _share(x: list[bool]) -> tuple[float, float]:
    p = float(np.mean(x))
    return p, math.sqrt(p * (1 - p) / len(x))


def _median(x: list[float]) -> tuple[float, float]:
    """The median and its standard error (1.2533·SD/√n, the normal approximation)."""
    a = np.asarray(x, dtype=float)
    return float(np.median(a)), float(1.2533 * a.std(ddof=1) / math.sqrt(a.size))


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
    judge = _judge(get_estimator(estimator), alpha, ci, samples)
    tasks = np.array([8 * c + k for c in range(cycles) for k in PROBES], dtype=float)
    langs = [LANGS[i % 3] for i in range(tasks.size)]
    groups, _ = offset_groups(langs)
    design = Design(tasks, groups)
    mean = _trend(tasks, case.onset)
    if case.offsets:
        mean = mean + np.array([OFFSETS[x] for x in langs])
    detected, covered, widths, pooled_cover, pooled_width = [], [], [], [], []
    for _ in range(reps):
        picks = []
        for y in simulate(mean, case.rho, 1.0, case.seeds, rng):
            found, lo, hi, mass = judge(design, tasks, langs, y, rng)
            detected.append(found)
            if case.onset is not None:
                covered.append(bool(lo <= case.onset <= hi))
                widths.append(float(hi - lo))
            if found:
                picks.append(mass)
        if case.seeds > 1 and case.onset is not None and picks:
            lo, hi = pooled_interval(picks, ci, rng)
            pooled_cover.append(bool(lo <= case.onset <= hi))
            pooled_width.append(float(hi - lo))
    det, det_se = _share(detected)
    cov = cov_se = width = width_se = None
    if covered:
        cov, cov_se = _share(covered)
        width, width_se = _median(widths)
    return CaseResult(
        case,
        len(detected),
        det,
        det_se,
        cov,
        cov_se,
        width,
        width_se,
        float(np.mean(pooled_cover)) if pooled_cover else None,
        float(np.median(pooled_width)) if pooled_width else None,
    )


# One simulated series → (onset detected, the interval's ends, the onset's distribution as tasks
# and their probabilities).
Judge = Callable[
    [Design, np.ndarray, list[str], np.ndarray, np.random.Generator],
    tuple[bool, float, float, tuple[np.ndarray, np.ndarray]],
]


def _judge(estimator: Estimator, alpha: float, ci: float, samples: int) -> Judge:
    """The noise model's test with `samples` samples, any other estimator through its
    interface (which has no such knob)."""
    level = [(1 - ci) / 2, (1 + ci) / 2]
    if isinstance(estimator, NoiseModel):
        pilot = max(samples * PILOT_SAMPLES // NULL_SAMPLES, 20)

        def noise_model(design, tasks, langs, y, rng):
            v = judge_onset(design, y, rng, alpha, 0.0, samples, samples, pilot)
            knots = tasks[v.knots] if v.knots.size else tasks[-1:]
            lo, hi = np.quantile(knots, level, method="inverted_cdf")
            at, count = np.unique(knots, return_counts=True)
            return v.detected, float(lo), float(hi), (at, count / count.sum())

        return noise_model

    def other(design, tasks, langs, y, rng):
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
        lo = ev.minimum_task if ev.onset_lo is None else ev.onset_lo
        hi = ev.minimum_task if ev.onset_hi is None else ev.onset_hi
        return ev.detected, float(lo), float(hi), (at, p / p.sum())

    return other


def calibrate(
    reps: int = 100,
    seed: int = 0,
    cycles: int = 8,
    alpha: float = ALPHA,
    ci: float = 0.95,
    cases: tuple[Case, ...] = DEFAULT_CASES,
    samples: int = NULL_SAMPLES,
    estimator: str = ONSET_ESTIMATOR,
) -> Calibration:
    """`plc simulate-onset`: every case `reps` times with this seed."""
    if reps < 1:
        raise PlcError(f"--reps must be at least 1, not {reps}")
    if cycles < 2:
        raise PlcError(
            f"--cycles must be at least 2 (the noise model needs 7 probes), not {cycles}"
        )
    if not 0 < ci < 1:
        raise PlcError(f"--ci is a level between 0 and 1 (e.g. 0.95), not {ci:g}")
    rng = np.random.default_rng(seed)
    out = Calibration(cycles, reps, seed, alpha, ci, estimator=estimator)
    for case in cases:
        out.rows.append(run_case(case, cycles, reps, rng, alpha, ci, samples, estimator))
    return out
