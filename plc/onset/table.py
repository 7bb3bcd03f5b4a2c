"""The onsets of a study's runs as data: one RunOnset per run (its verdict, its onset or minimum
with the interval and distribution, the evidence), the fits of Table V to them with their
bootstrap intervals, delta-method bands and backtests, the log-log law with the runs that show no
onset censored, each size's onset pooled over its seeds, and the onset table
(Parquet) that `plc fit-onset --out` writes and fit-onset and plot onset read back.

The verdicts themselves are computed once, by plc.study.verdicts; `plc fit-onset` is
plc.study.onsets.fit_onset, which fits what they give with the functions here.

A study of remedies (`plc plan --mitigation`) labels every metric row with its method; `by="method"`
fits, bootstraps and predicts each method's runs apart. Rows and onset tables without a method
(older files) are the baseline, 'none'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from plc.errors import PlcError
from plc.onset.bootstrap import BootstrapSummary, SizeOnset
from plc.onset.censored import CensoredLaw, censored_law
from plc.onset.estimators import (
    DETECTED,
    FROM_START,
    NO_RISE,
    ONSET,
    STILL_FALLING,
    TOO_FEW,
    VERDICTS,
)
from plc.onset.fit import (
    Backtest,
    Fit,
    NoLaw,
    backtest,
    check_sizes,
    fit_model,
)
from plc.onset.inputs import BASELINE, TABLE_COLUMNS, check_by, method_order, table_schema
from plc.onset.series import ProbeSeries
from plc.protocol import ONSET_ALPHA, ONSET_ESTIMATOR
from plc.store import atomic_path

if TYPE_CHECKING:
    import polars as pl

PAPER_TASK_TOKENS = 5_000_000_000  # §IV-A: each task instance is 5B tokens
ONE_SIZE = "no law: one model size (a fit needs at least two)"


@dataclass
class RunOnset:
    """One run's onset: from its probes (with the evidence for it) or from an onset table's row."""

    run_id: str | None
    size: str
    n_params: int
    n_probes: int | None
    onset: float | None  # None: no onset detected
    onset_tokens: int | None
    seed: str | None = None
    method: str = BASELINE  # the remedies the run trained with (plc.mitigations label)
    minimum_task: int | None = None  # the fitted trend's minimum, an onset or not
    detected: bool = True
    at_start: bool = False  # the onset is the first probe
    p_value: float | None = None  # of "no rise after the minimum" under the noise model
    no_onset: str | None = None
    onset_lo: float | None = None
    onset_hi: float | None = None
    onset_mass: dict[int, float] | None = None
    noise_sd: float | None = None
    rho: float | None = None
    rise_sd: float | None = None
    smoothed_minimum: int | None = None  # Table IV's read-out (centred moving average)
    jitter: float | None = None
    rise_jitter: float | None = None
    rate: float | None = None
    rate_se: float | None = None
    probe_repeats: int | None = None
    baseline_task: int | None = None
    fitted: bool = False  # one of the fits' points
    verdict: str = ""  # one of plc.onset.estimators.VERDICTS ("" : read from the fields above)
    falling_p: float | None = None  # one-sided p of "not falling at the end"
    horizon: int | None = None  # the last probed task: a run with no onset is censored there
    offset_note: str | None = None  # single-probe languages folded into a neighbour's offset

    def __post_init__(self) -> None:
        if not self.verdict:
            self.verdict = _verdict_of_row(self.detected, self.at_start, self.no_onset)
        elif self.verdict not in VERDICTS:
            raise PlcError(f"run {self.run_id}: unknown verdict {self.verdict!r}")
        if self.horizon is None and self.verdict == STILL_FALLING:
            self.horizon = self.minimum_task  # an older table's still-falling row: its last probe

    @property
    def drawn(self) -> tuple[float, float, float] | None:
        """What every figure and table draws for the run: (task, lo, hi) of its onset, or of its
        minimum where no significant rise follows it (an open marker); None where there is no
        point to draw (still falling, too few probes). The task lies inside [lo, hi]."""
        if self.verdict in DETECTED:
            task = self.onset
        elif self.verdict == NO_RISE:
            task = self.minimum_task
        else:
            return None
        if task is None:
            return None
        lo = task if self.onset_lo is None else min(self.onset_lo, task)
        hi = task if self.onset_hi is None else max(self.onset_hi, task)
        return float(task), float(lo), float(hi)

    @property
    def fit_value(self) -> float | None:
        """The onset a fit uses: the detected one, else (when no-onset runs are kept) the minimum
        of the best trend with a rise (no significant rise) or the last probe (still falling:
        a lower bound of the onset)."""
        return self.onset if self.onset is not None else self.minimum_task

    def distribution(self) -> tuple[np.ndarray, np.ndarray]:
        """Tasks and probabilities the bootstrap draws this run's onset from."""
        if self.onset_mass:
            tasks = np.array(list(self.onset_mass), dtype=float)
            p = np.array(list(self.onset_mass.values()), dtype=float)
            return tasks, p / p.sum()
        return np.array([self.fit_value], dtype=float), np.ones(1)


@dataclass
class Prediction:
    model: str
    n_params: float
    onset_tasks: float
    onset_tokens: float
    onset_tasks_ci: list[float] | None = None
    onset_tokens_ci: list[float] | None = None
    onset_tasks_delta: list[float] | None = None  # delta-method band of the law (t quantile)


@dataclass
class DenseSuggestion:
    """Cycles to probe densely in a second stage (App. B), around a run's current minimum."""

    run_id: str
    size: str
    minimum_task: int
    cycle: int
    first_cycle: int
    last_cycle: int
    detected: bool = True  # False: the minimum of a rise that is not significant


def _law_of(fits: Sequence[Fit]) -> str | None:
    return next((f.law for f in fits if f.model == "loglog"), None)


def _exponent_of(fits: Sequence[Fit]) -> str | None:
    f = next((f for f in fits if f.model == "loglog" and f.b_ci is not None), None)
    return None if f is None else f"b = {f.b:.2f} [{f.b_ci[0]:.2f}, {f.b_ci[1]:.2f}]"


@dataclass
class GroupFits:
    """The fits to one group's runs alone (`by="method"`: the runs of one method)."""

    method: str | None  # None: every run, ungrouped
    runs: list[str]  # the points fitted (run ids, or sizes for table rows without one)
    fits: list[Fit]
    fits_skipped: str | None = None  # why this group has no fit (too few points, one size…)
    bootstrap: BootstrapSummary | None = None
    predictions: list[Prediction] = field(default_factory=list)
    censored: CensoredLaw | None = None  # the log-log law with no-onset runs censored
    backtests: list[Backtest] = field(default_factory=list)
    backtest_skipped: str | None = None

    @property
    def law(self) -> str | None:
        return _law_of(self.fits)

    @property
    def exponent(self) -> str | None:
        return _exponent_of(self.fits)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "law": self.law, "exponent": self.exponent}


def _verdict_of_row(detected: bool, at_start: bool, no_onset: str | None) -> str:
    """The verdict of an onset table's row written before tables had the column."""
    if detected:
        return FROM_START if at_start else ONSET
    why = no_onset or ""
    if why.startswith("too few probes"):
        return TOO_FEW
    return STILL_FALLING if why.startswith("no onset yet") else NO_RISE


@dataclass
class OnsetResult:
    runs: list[RunOnset]
    fits: list[Fit]
    predictions: list[Prediction]
    task_tokens: float
    task_tokens_source: str
    normalize: str
    probe_after: list[str] | None
    window: int
    auc_from: str = "0"
    ci: float = 0.95
    alpha: float = ONSET_ALPHA
    estimator: str = ONSET_ESTIMATOR
    estimator_text: str = ""  # how its verdicts are made (the estimator's describe)
    notes: list[str] = field(default_factory=list)  # what was left out of the inputs, and why
    excluded: list[str] = field(default_factory=list)  # runs left out of the fits: no onset
    fits_skipped: str | None = None  # why no fit was made after leaving those out
    bootstrap: BootstrapSummary | None = None
    dense: list[DenseSuggestion] = field(default_factory=list)
    dense_cycles: str | None = None  # one range covering every run's suggestion
    out: str | None = None
    by: str | None = None  # "method": the fits are per group, in `groups`, not in `fits`
    groups: list[GroupFits] = field(default_factory=list)
    sizes: list[SizeOnset] = field(default_factory=list)  # sizes with several seeds, pooled
    loss: str = "ls"  # ls: Table V's estimators; huber: Huber's loss on ln T
    kept: str | None = None  # what --keep-no-onset fitted
    censored: CensoredLaw | None = None  # the log-log law with no-onset runs censored
    backtests: list[Backtest] = field(default_factory=list)
    backtest_skipped: str | None = None

    @property
    def law(self) -> str | None:
        """The log-log law in the form of eq. 2, when that model was fitted."""
        return _law_of(self.fits)

    @property
    def exponent(self) -> str | None:
        """The log-log exponent with its bootstrap interval: `b = 0.83 [0.61, 1.05]`."""
        return _exponent_of(self.fits)

    @property
    def methods(self) -> list[str]:
        """The runs' methods, the baseline first."""
        return method_order(r.method for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = {**asdict(self), "law": self.law, "exponent": self.exponent}
        out["groups"] = [g.to_dict() for g in self.groups]
        return out


def table_runs(table: pl.DataFrame) -> list[RunOnset]:
    """The runs of onset tables' rows (plc.onset.inputs.split_inputs reads them)."""
    runs = []
    for r in table.iter_rows(named=True):
        mass = (
            dict(zip(r["mass_task"], r["mass_p"], strict=True))
            if r["mass_task"] and r["mass_p"]
            else None
        )
        runs.append(
            RunOnset(
                run_id=r["run_id"],
                size=r["size"],
                n_params=int(r["n_params"]),
                n_probes=r["n_probes"],
                onset=r["onset"] if r["detected"] else None,
                onset_tokens=r["onset_tokens"] if r["detected"] else None,
                seed=r["seed"],
                method=r["method"],
                minimum_task=r["minimum_task"],
                detected=r["detected"],
                at_start=bool(r["at_start"]),
                p_value=r["p_value"],
                no_onset=r["no_onset"],
                onset_lo=r["onset_lo"],
                onset_hi=r["onset_hi"],
                onset_mass=mass,
                noise_sd=r["noise_sd"],
                rho=r["rho"],
                rise_sd=r["rise_sd"],
                smoothed_minimum=r["smoothed_minimum"],
                jitter=r["jitter"],
                rise_jitter=r["rise_jitter"],
                rate=r["rate"],
                rate_se=r["rate_se"],
                verdict=r["verdict"] or "",
                falling_p=r["falling_p"],
                horizon=r["horizon"],
            )
        )
    return runs


def tokens_per_task(series: Sequence[ProbeSeries]) -> float | None:
    """Tokens per task seen in the probed checkpoints (median of tokens_seen / task_index)."""
    ratios = [
        tok / task
        for s in series
        for task, tok in zip(s.task_index, s.tokens_seen, strict=True)
        if task > 0 and tok > 0
    ]
    return float(np.median(ratios)) if ratios else None


def suggest_dense(
    series: Sequence[ProbeSeries],
    minima: dict[str, int | None],
    cycles: int,
    detected: dict[str, bool] | None = None,
) -> list[DenseSuggestion]:
    """Per run: the cycles within `cycles` of the cycle of its minimum (`minima`: task per run
    id, None for runs with no minimum to look at — still falling, or too few probes; App. B's
    second stage probes after zh, de and ru there), inside the cycles it has probes for.
    `detected` marks the runs whose minimum is an onset (the others: a rise not significant)."""
    if cycles < 0:
        raise PlcError(f"--suggest-dense takes a number of cycles ≥ 0, not {cycles}")
    out = []
    for s in series:
        if minima.get(s.run_id) is None:
            continue
        c = s.cycle[s.task_index.index(minima[s.run_id])]
        out.append(
            DenseSuggestion(
                run_id=s.run_id,
                size=s.size,
                minimum_task=int(minima[s.run_id]),
                cycle=c,
                first_cycle=max(min(s.cycle), c - cycles, 1),
                last_cycle=min(max(s.cycle), c + cycles),
                detected=True if detected is None else detected.get(s.run_id, True),
            )
        )
    return out


def split_by_method(runs: Sequence[RunOnset]) -> dict[str, list[RunOnset]]:
    """The runs of each method, the baseline first."""
    return {m: [r for r in runs if r.method == m] for m in method_order(r.method for r in runs)}


def check_within_size(points: Sequence[RunOnset]) -> None:
    sizes = {r.n_params for r in points}
    if len(sizes) == len(points) and not any(len(r.distribution()[0]) > 1 for r in points):
        raise PlcError(
            "--resample within-size resamples each size's runs, but every size here has one "
            "run and no onset distribution; add runs (seeds) per size or use --resample cases"
        )


def fit_groups(
    points: Sequence[RunOnset],
    left_out: Sequence[RunOnset],
    models: Sequence[str],
    by: str | None = None,
    loss: str = "ls",
) -> list[GroupFits]:
    """The fits of `models` to the points' (n_params, fit_value): to all of them, or with
    `by="method"` to each method's alone, the baseline first. A group too small for a law (fewer
    than 3 points, a single size, a leave-one-out fold of one size: NoLaw) keeps the reason —
    not an error, whatever the number of points. Bad values (n_params ≤ 0, onsets
    ≤ 0 under a log) are bad input when no group can be fitted and no run was left out of the
    fits; `left_out` are the runs with no onset detected, counted in a group's reason."""
    check_by(by)
    if models:
        check_sizes([r.n_params for r in [*points, *left_out]])
    if by is None:
        groups = {None: (list(points), list(left_out))}
    else:
        kept, out = split_by_method(points), split_by_method(left_out)
        groups = {m: (kept.get(m, []), out.get(m, [])) for m in method_order([*kept, *out])}
    fitted, errors = [], []
    for method, (mine, theirs) in groups.items():
        names = [r.run_id or r.size for r in mine]
        if models and len({r.n_params for r in [*mine, *theirs]}) == 1:
            fitted.append(GroupFits(method, names, [], ONE_SIZE))
            continue
        try:
            fits = [
                fit_model(m, [r.n_params for r in mine], [r.fit_value for r in mine], loss)
                for m in models
            ]
            skipped = None
        except NoLaw as e:
            fits, skipped = [], str(e)
        except PlcError as e:
            errors.append((method, e))
            fits, skipped = [], str(e)
        if skipped is not None and theirs:
            skipped += f" (after leaving out {len(theirs)} runs with no onset detected)"
        fitted.append(GroupFits(method, names, fits, skipped))
    if errors and len(errors) == len(groups) and not left_out:
        if len(errors) == 1:
            raise errors[0][1]
        raise PlcError(
            "no method's runs can be fitted: " + "; ".join(f"{m}: {e}" for m, e in errors)
        )
    return fitted


def censored_of(runs: Sequence[RunOnset], ci: float) -> CensoredLaw | None:
    """The log-log law of a group's runs with a verdict, those with no onset censored at their
    last probe; None where no run is censored (then it is the log-log fit) or too few detected."""
    mine = [r for r in runs if r.verdict != TOO_FEW and (r.detected or r.horizon is not None)]
    if not any(not r.detected for r in mine):
        return None
    return censored_law(
        [r.size for r in mine],
        [r.n_params for r in mine],
        [r.onset if r.detected else None for r in mine],
        [float(r.horizon if r.horizon is not None else 0) for r in mine],
        ci,
    )


def backtest_of(
    points: Sequence[RunOnset], models: Sequence[str], k: int, loss: str
) -> tuple[list[Backtest], str | None]:
    """The fits to the points of all sizes but the `k` largest against those (plc.onset.fit
    backtest), or the reason there is none."""
    try:
        return (
            backtest(
                [r.size for r in points],
                [r.n_params for r in points],
                [r.fit_value for r in points],
                models,
                k,
                loss,
            ),
            None,
        )
    except NoLaw as e:
        return [], f"no backtest: {e}"


def predictions_of(
    fits: Sequence[Fit],
    predict: Sequence[float],
    tokens: float,
    intervals: dict[str, dict[str, Any]] | None,
    ci: float = 0.95,
) -> list[Prediction]:
    """Each fit's onset at the sizes to predict, in tasks and tokens, with bootstrap intervals
    and the delta-method band."""
    out = []
    for f in fits:
        ranges = intervals[f.model]["predict"] if intervals else [None] * len(predict)
        bands = f.band(predict, ci) or [None] * len(predict)
        for pp, tt, rr, dd in zip(
            predict, f.predict(np.asarray(predict, dtype=float)), ranges, bands, strict=True
        ):
            out.append(
                Prediction(
                    f.model,
                    float(pp),
                    float(tt),
                    float(tt) * tokens,
                    onset_tasks_ci=rr,
                    onset_tokens_ci=None if rr is None else [v * tokens for v in rr],
                    onset_tasks_delta=dd,
                )
            )
    return out


def kept_text(points: Sequence[RunOnset]) -> str | None:
    """What --keep-no-onset put into the fits, in words (None: no run without an onset)."""
    rise = [r.run_id or r.size for r in points if r.verdict == NO_RISE]
    falling = [r.run_id or r.size for r in points if r.verdict == STILL_FALLING]
    parts = []
    if rise:
        parts.append(
            f"{', '.join(rise)} at the minimum of a rise that is not significant (not an onset)"
        )
    if falling:
        parts.append(
            f"{', '.join(falling)} at the last probe (still falling: a lower bound of the onset)"
        )
    return ("--keep-no-onset fits " + "; ".join(parts)) if parts else None


def write_onset_table(path: str | Path, runs: Sequence[RunOnset], force: bool = False) -> Path:
    """One row per run with every column of TABLE_COLUMNS (the onset mass as two lists)."""
    import polars as pl

    values: dict[str, list] = {c: [] for c in TABLE_COLUMNS}
    for r in runs:
        row = {c: getattr(r, c, None) for c in TABLE_COLUMNS}
        row["mass_task"] = list(r.onset_mass) if r.onset_mass else None
        row["mass_p"] = list(r.onset_mass.values()) if r.onset_mass else None
        for c in TABLE_COLUMNS:
            values[c].append(row[c])
    df = pl.DataFrame(values, schema={**table_schema(), "n_params": pl.Int64})
    with atomic_path(path, force) as tmp:
        df.write_parquet(tmp)
    return Path(path)
