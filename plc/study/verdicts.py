"""The per-run verdicts of a study, computed in one place.

`run_verdicts` is the one function that judges runs: each run's probe series through the study's
estimator (plc.onset.estimators), with the study's α, window and interval level (`VerdictOptions`,
resolved once by `verdict_options` from the flags, the plan.json the files belong to, and the
protocol's defaults).
Every reader asks it — fit-onset (plc.study.onsets), status, report, plot, demo and the examples
— and draws what it returns: each run's verdict with its point and interval together
(RunOnset.drawn), so that a point is never outside its interval and a run without an onset is
drawn the same way everywhere.

`judge` reads the probes of metric files (leaving out, with a note, probes whose AUC is not a
finite number), builds each run's series and judges it; a run whose series cannot be built (no
probes at the study's positions, a from-scratch probe alone) is named with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc.errors import PlcError
from plc.onset.bootstrap import check_interval_options
from plc.onset.detect import TooFewProbes, check_alpha
from plc.onset.estimators import STILL_FALLING, TOO_FEW, get_estimator, verdict_of
from plc.onset.inputs import read_finite, read_probes
from plc.onset.series import AUC_FROM, NORMALIZE, ProbeSeries, moving_average, probe_series
from plc.onset.table import RunOnset
from plc.plan.jobs import Plan
from plc.protocol import ONSET_ALPHA, ONSET_ESTIMATOR, ONSET_WINDOW, default_probe_after
from plc.study.files import StudyFiles

if TYPE_CHECKING:
    import polars as pl

FROM_PLAN = "plan"  # a setting taken from the study's plan.json (else the protocol's default)


@dataclass(frozen=True)
class VerdictOptions:
    """How a study's runs are judged: the estimator and its settings, and which probes it reads
    (their positions, normalisation and area)."""

    estimator: str = ONSET_ESTIMATOR
    alpha: float = ONSET_ALPHA
    window: int = ONSET_WINDOW
    ci: float = 0.95
    seed: int = 0
    normalize: str = "first"
    probe_after: tuple[str, ...] | None = field(default_factory=default_probe_after)
    auc_from: str = "0"

    def __post_init__(self) -> None:
        get_estimator(self.estimator)
        check_alpha(self.alpha)
        check_interval_options(self.ci, None, "cases")
        moving_average([], self.window)  # its check of the window
        if self.normalize not in NORMALIZE:
            raise PlcError(
                f"--normalize must be one of {', '.join(NORMALIZE)}, not {self.normalize!r}"
            )
        if self.auc_from not in AUC_FROM:
            raise PlcError(f"--auc-from must be 0 or first, not {self.auc_from!r}")
        if self.probe_after is not None:
            object.__setattr__(self, "probe_after", tuple(self.probe_after))


def verdict_options(
    plan: Plan | None,
    *,
    estimator: str | None = None,
    alpha: float | None = None,
    window: int | None = None,
    probe_after: Sequence[str] | None | str = FROM_PLAN,
    **others: Any,
) -> VerdictOptions:
    """The study's verdict settings: each flag given, else the plan's (plan.json), else the
    protocol's default. `others` are VerdictOptions fields no plan sets (ci, seed, normalize,
    auc_from)."""
    if probe_after == FROM_PLAN:
        probe_after = plan.probe_after if plan is not None else default_probe_after()
    return VerdictOptions(
        estimator=estimator or (plan.estimator if plan else ONSET_ESTIMATOR),
        alpha=alpha if alpha is not None else (plan.alpha if plan else ONSET_ALPHA),
        window=window if window is not None else (plan.window if plan else ONSET_WINDOW),
        probe_after=None if probe_after is None else tuple(probe_after),
        **others,
    )


def run_verdicts(series: Sequence[ProbeSeries], options: VerdictOptions) -> list[RunOnset]:
    """Each run's verdict, from its series alone, by the study's estimator: the one place a
    verdict is computed. A run with fewer probes than the estimator needs (a single probe
    included) has the verdict "too few probes", with the reason."""
    estimator = get_estimator(options.estimator)
    runs = []
    for s in series:
        if s.n_probes < 2:
            runs.append(_too_few(s, "too few probes (1): a single probe is not a series"))
            continue
        try:
            ev = estimator.assess(
                s, window=options.window, ci=options.ci, alpha=options.alpha, seed=options.seed
            )
        except TooFewProbes as e:
            runs.append(_too_few(s, e.reason))
            continue
        at = s.task_index.index(ev.minimum_task)
        verdict = verdict_of(ev)
        lo, hi, mass = _interval(ev.minimum_task, ev.onset_lo, ev.onset_hi, ev.onset_mass, verdict)
        runs.append(
            RunOnset(
                run_id=s.run_id,
                size=s.size,
                n_params=s.n_params,
                n_probes=s.n_probes,
                onset=float(ev.minimum_task) if ev.detected else None,
                onset_tokens=s.tokens_seen[at] if ev.detected else None,
                method=s.method,
                minimum_task=ev.minimum_task,
                detected=ev.detected,
                at_start=ev.at_start,
                p_value=ev.p_value,
                no_onset=ev.no_onset,
                onset_lo=lo,
                onset_hi=hi,
                onset_mass=mass,
                noise_sd=ev.noise_sd,
                rho=ev.rho,
                rise_sd=ev.rise_sd,
                smoothed_minimum=ev.smoothed_minimum,
                jitter=ev.jitter,
                rise_jitter=ev.rise_jitter,
                rate=ev.rate,
                rate_se=ev.rate_se,
                probe_repeats=s.n_repeats,
                baseline_task=s.baseline_task,
                verdict=verdict,
                falling_p=ev.falling_p,
                horizon=s.task_index[-1],
                offset_note=ev.offset_note,
            )
        )
    return runs


def _interval(
    task: int,
    lo: float | None,
    hi: float | None,
    mass: dict[int, float] | None,
    verdict: str,
) -> tuple[float | None, float | None, dict[int, float] | None]:
    """The interval as every output shows it, whatever the estimator: none for a run still
    falling (it has no minimum to place), else one that holds the estimate."""
    if verdict == STILL_FALLING:
        return None, None, None
    if lo is None or hi is None:
        return None, None, mass
    return min(lo, task), max(hi, task), mass


def _too_few(s: ProbeSeries, reason: str) -> RunOnset:
    """A run reported without an estimate: its probes are too few for the estimator."""
    return RunOnset(
        run_id=s.run_id,
        size=s.size,
        n_params=s.n_params,
        n_probes=s.n_probes,
        onset=None,
        onset_tokens=None,
        method=s.method,
        detected=False,
        no_onset=reason,
        probe_repeats=s.n_repeats,
        baseline_task=s.baseline_task,
        verdict=TOO_FEW,
        horizon=s.task_index[-1],
    )


@dataclass
class Judged:
    """A study's runs as judged: the verdicts (RunOnset, by run id), the series they were read
    from, the runs whose series could not be built (run id → why) and what was left out."""

    runs: list[RunOnset]
    series: list[ProbeSeries]
    unusable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    options: VerdictOptions = field(default_factory=VerdictOptions)

    def of(self, run_id: str) -> RunOnset | None:
        return next((r for r in self.runs if r.run_id == run_id), None)

    def check_usable(self) -> None:
        """Bad input if a run's series could not be built (fit-onset and plot read every run)."""
        if self.unusable:
            raise PlcError(next(iter(self.unusable.values())))


def judge(paths: Iterable[str | os.PathLike], options: VerdictOptions) -> Judged:
    """Read the probes of these metric files and judge every run (see the module's docstring)."""
    notes: list[str] = []
    probes = read_probes([Path(p) for p in paths], notes)
    return judge_rows(probes, options, notes)


def judge_study(files: StudyFiles, options: VerdictOptions) -> Judged:
    """The verdicts of every run in a study's folder (status, report): as `judge`, except that a
    study with no probe yet (or none with a finite AUC) has no verdicts rather than being bad
    input."""
    notes: list[str] = []
    return judge_rows(read_finite(files.metric_files("probe"), "probe", notes), options, notes)


def judge_rows(probes: pl.DataFrame, options: VerdictOptions, notes: list[str]) -> Judged:
    """`judge` of probe rows already read (and cleared of non-finite AUCs, named in `notes`)."""
    import polars as pl

    series: list[ProbeSeries] = []
    unusable: dict[str, str] = {}
    if probes.height:
        for run_id in sorted(set(probes["run_id"].to_list())):
            rows = probes.filter(pl.col("run_id") == run_id)
            try:
                series += probe_series(
                    rows, options.normalize, options.probe_after, options.auc_from
                )
            except PlcError as e:
                unusable[run_id] = str(e)
    series.sort(key=lambda s: (s.n_params, s.run_id))
    return Judged(run_verdicts(series, options), series, unusable, notes, options)
