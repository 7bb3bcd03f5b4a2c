"""Onset estimators behind one small interface, chosen by name (`--estimator`).

An estimator reads one run's probe series and says what it shows: its `OnsetEvidence`, from which
`verdict_of` reads the verdict (one of VERDICTS), the onset or the minimum with its interval and
distribution (`onset_mass`), and the descriptive columns it can give. It raises TooFewProbes where
the series is too short for it (that run's verdict is "too few probes"). `describe` says how its
verdicts are made, for the captions. The study (plc.study.verdicts) calls `assess` once per run;
`plc simulate-onset` calibrates any of them on synthetic studies (plc.onset.calibrate).

- `noise-model` (the default): the test of a rise after the minimum under a noise model fitted to
  the series (plc.onset.detect, docs/estimators.md);
- `moving-average`: the paper's own read-out (App. B, Table IV): the minimum of a centred moving
  average of `window` probes, an onset unless it is the last full window (still falling); its
  interval from resampling the residuals around the average. No test: no p-value, no "no
  significant rise".

Whatever the estimator, the estimate lies inside its interval, and a run still falling has none.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from plc.errors import PlcError
from plc.onset.detect import (
    ALT_SAMPLES,
    NULL_SAMPLES,
    OnsetEvidence,
    TooFewProbes,
    _rate,
    assess_onset,
)
from plc.onset.series import ProbeSeries, jitter, moving_average

# A run's verdict: an onset (inside the series, or at its first probe), or none and why.
ONSET, FROM_START, NO_RISE, STILL_FALLING, TOO_FEW = VERDICTS = (
    "onset",
    "from the start",
    "no significant rise",
    "still falling",
    "too few probes",
)
DETECTED = (ONSET, FROM_START)


class Estimator(Protocol):
    name: str

    def assess(
        self, series: ProbeSeries, *, window: int, ci: float, alpha: float, seed: int
    ) -> OnsetEvidence:
        """The run's evidence; TooFewProbes where its series is too short for this estimator."""
        ...

    def describe(self, *, alpha: float, ci: float) -> str:
        """How the verdicts are made, in a sentence or two for a caption."""
        ...


def verdict_of(ev: OnsetEvidence) -> str:
    """The verdict an estimator's evidence gives (TOO_FEW is the TooFewProbes it raises)."""
    if ev.detected:
        return FROM_START if ev.at_start else ONSET
    return STILL_FALLING if ev.still_falling else NO_RISE


def _level(ci: float) -> str:
    return f"{ci:.0%}".replace("%", " %")


@dataclass(frozen=True)
class NoiseModel:
    """The test of a rise after the minimum under a noise model of the series (plc.onset.detect)."""

    name: str = "noise-model"

    def assess(
        self, series: ProbeSeries, *, window: int, ci: float, alpha: float, seed: int
    ) -> OnsetEvidence:
        return assess_onset(series, window, ci, alpha, seed)

    def describe(self, *, alpha: float, ci: float) -> str:
        return (
            "Onset: the minimum of the best trend with a rise (a broken stick or a curved one) "
            "fitted with per-language offsets (where languages repeat) and AR(1) residuals, by "
            "profile likelihood; detected where the data reject 'no rise after the minimum' at "
            f"α = {alpha:g} (p: the larger of those from {NULL_SAMPLES} samples of the fitted "
            f"null and of the flat one); interval: {_level(ci)} of the minimum over {ALT_SAMPLES} "
            "samples of the trends with a rise that fit, by their Akaike weights. Still falling: "
            f"the slope over the last third of the probes is negative at α = {alpha:g} and the "
            "best fit is lowest at the last probe."
        )


MA_SAMPLES = 400  # resampled series for the moving average's interval


class TooShortForWindow(TooFewProbes):
    """A series with no two full windows of the moving average: no minimum to place."""

    def __init__(self, series: ProbeSeries, window: int) -> None:
        need = window + 1
        self.reason = (
            f"too few probes ({series.n_probes}): a minimum of the centred moving average of "
            f"{window} needs at least {need}"
        )
        PlcError.__init__(
            self,
            f"run {series.run_id} has {series.n_probes} probes; the moving average of {window} "
            f"needs at least {need} to place a minimum",
        )


@dataclass(frozen=True)
class MovingAverage:
    """App. B's read-out: the minimum of the centred moving average (Table IV)."""

    name: str = "moving-average"

    def assess(
        self, series: ProbeSeries, *, window: int, ci: float, alpha: float, seed: int
    ) -> OnsetEvidence:
        if series.n_probes < window + 1:  # a single probe included (window ≥ 1)
            raise TooShortForWindow(series, window)
        y = np.asarray(series.value, dtype=float)
        tasks = np.asarray(series.task_index, dtype=float)
        smooth = moving_average(y, window)
        full = np.flatnonzero(~np.isnan(smooth))
        i = _first_minimum(smooth[None, :])[0]
        falling = i == full[-1]
        task = int(tasks[i])
        lo = hi = mass = None
        if not falling:
            # The residuals around the average, resampled onto it (the ends, which have no full
            # window, keep their values): where the minimum of each such series falls.
            rng = np.random.default_rng([seed, zlib.crc32(series.run_id.encode())])
            resid = (y - smooth)[full]
            trend = np.where(np.isnan(smooth), y, smooth)
            draws = trend + rng.choice(resid, size=(MA_SAMPLES, y.size))
            picked = tasks[_first_minimum(_rows_moving_average(draws, window))]
            lo, hi = np.quantile(picked, [(1 - ci) / 2, (1 + ci) / 2], method="inverted_cdf")
            lo, hi = min(float(lo), task), max(float(hi), task)
            at, count = np.unique(picked, return_counts=True)
            mass = {int(t): float(c) / picked.size for t, c in zip(at, count, strict=True)}
        jit = jitter(y)
        jit = None if math.isnan(jit) else jit
        rise = float(smooth[full[-1]] - smooth[i])
        scale = 100.0 if series.normalize == "alone" else 1.0
        rate, rate_se = _rate(tasks[i:], scale * y[i:])
        return OnsetEvidence(
            minimum_task=task,
            detected=not falling,
            at_start=bool(i == full[0] and not falling),
            p_value=None,
            no_onset=(
                f"no onset yet: the moving average of {window} is lowest at its last full "
                f"window (task {task})"
                if falling
                else None
            ),
            onset_lo=lo,
            onset_hi=hi,
            onset_mass=mass,
            noise_sd=jit,
            rho=None,
            rise_sd=None,
            offsets=[],
            smoothed_minimum=task,
            jitter=jit,
            rise_jitter=rise / jit if jit else None,
            rate=rate,
            rate_se=rate_se,
            still_falling=bool(falling),
        )

    def describe(self, *, alpha: float, ci: float) -> str:
        return (
            "Onset: the minimum of the centred moving average of the probes (App. B, Table IV), "
            "unless it is the last full window (still falling); no test, so every interior or "
            f"first minimum is an onset. Interval: {_level(ci)} of that minimum over "
            f"{MA_SAMPLES} series resampled from the residuals around the average."
        )


def _rows_moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """plc.onset.series.moving_average of each row."""
    out = np.full(x.shape, np.nan)
    half = window // 2
    out[:, half : x.shape[1] - half] = np.lib.stride_tricks.sliding_window_view(
        x, window, axis=1
    ).mean(axis=2)
    return out


def _first_minimum(smooth: np.ndarray) -> np.ndarray:
    """Per row, the index of the lowest full-window value, the earliest of ties (as
    plc.onset.series.onset_position)."""
    y = np.where(np.isnan(smooth), np.inf, smooth)
    lowest = y.min(axis=1, keepdims=True)
    tied = np.isclose(y, lowest, rtol=1e-12, atol=1e-12)
    return tied.argmax(axis=1)


# The first is the default (plc.protocol.ONSET_ESTIMATOR names it).
ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (NoiseModel(), MovingAverage())}


def get_estimator(name: str) -> Estimator:
    """The estimator of this name; bad input naming those there are."""
    if name not in ESTIMATORS:
        raise PlcError(f"unknown --estimator {name!r}; choose {' or '.join(ESTIMATORS)}")
    return ESTIMATORS[name]
