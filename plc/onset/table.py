"""fit-onset: every run's onset with its evidence, the fits of Table V to the onsets, their
bootstrap intervals, each size's onset pooled over its seeds, and the onset table (Parquet) that
fit-onset, plot onset and report read back.

A study of remedies (`plc plan --mitigation`) labels every metric row with its method; `by="method"`
fits, bootstraps and predicts each method's runs apart. Rows and onset tables without a method
(older files) are the baseline, 'none'.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plc.errors import PlcError
from plc.onset.bootstrap import (
    BootstrapSummary,
    SizeOnset,
    bootstrap_fits,
    check_interval_options,
    pool_seeds,
)
from plc.onset.censored import CensoredLaw, censored_law
from plc.onset.detect import (
    ALPHA,
    ALT_SAMPLES,
    NO_RISE,
    NULL_SAMPLES,
    ONSET,
    STILL_FALLING,
    TOO_FEW,
    TooFewProbes,
    assess_onset,
    check_alpha,
)
from plc.onset.fit import (
    MODELS,
    Backtest,
    Fit,
    NoLaw,
    backtest,
    check_loss,
    check_sizes,
    fit_model,
)
from plc.onset.inputs import (
    BASELINE,
    TABLE_COLUMNS,
    check_by,
    method_order,
    read_probes,
    split_inputs,
    table_schema,
)
from plc.onset.series import ProbeSeries, probe_series
from plc.protocol import PAPER_PROBE_AFTER
from plc.store import atomic_path, check_output, expand_inputs

PAPER_TASK_TOKENS = 5_000_000_000  # §IV-A: each task instance is 5B tokens
ONE_SIZE = "no law: one model size (a fit needs at least two)"
NOISE_MODEL = (
    "per-language offsets (where languages repeat) and AR(1) residuals, by profile likelihood"
)


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
    verdict: str | None = None  # onset, no significant rise, still falling, too few probes
    falling_p: float | None = None  # one-sided p of "not falling at the end"
    horizon: int | None = None  # the last probed task: a run with no onset is censored there
    offset_note: str | None = None  # single-probe languages folded into a neighbour's offset

    def __post_init__(self) -> None:
        if self.verdict is None:  # a row of an older onset table: the verdict from its reason
            reason = self.no_onset or ""
            self.verdict = (
                ONSET
                if self.detected
                else STILL_FALLING
                if reason.startswith("no onset yet")
                else TOO_FEW
                if reason.startswith("too few")
                else NO_RISE
            )
        if self.horizon is None and self.verdict == STILL_FALLING:
            self.horizon = self.minimum_task  # a still-falling run's minimum is its last probe

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
    alpha: float = ALPHA
    noise: str = NOISE_MODEL
    null_samples: int = NULL_SAMPLES
    alt_samples: int = ALT_SAMPLES
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


def collect_onsets(
    inputs: Iterable[str | Path],
    normalize: str = "first",
    probe_after: Sequence[str] | None = PAPER_PROBE_AFTER,
    window: int = 3,
    *,
    auc_from: str = "0",
    ci: float = 0.95,
    alpha: float = ALPHA,
    seed: int = 0,
) -> tuple[list[RunOnset], list[ProbeSeries]]:
    """Every run's onset (None where none is detected) and the evidence for it from metric
    files, plus the rows of any onset tables among the inputs."""
    metric_files, table = split_inputs(expand_inputs(inputs))
    series = (
        probe_series(read_probes(metric_files), normalize, probe_after, auc_from)
        if metric_files
        else []
    )
    runs = []
    for s in series:
        try:
            ev = assess_onset(s, window, ci, alpha, seed)
        except TooFewProbes as e:
            runs.append(_too_few(s, e.reason))
            continue
        runs.append(
            RunOnset(
                run_id=s.run_id,
                size=s.size,
                n_params=s.n_params,
                n_probes=s.n_probes,
                onset=float(ev.minimum_task) if ev.detected else None,
                onset_tokens=(
                    s.tokens_seen[s.task_index.index(ev.minimum_task)] if ev.detected else None
                ),
                method=s.method,
                minimum_task=ev.minimum_task,
                detected=ev.detected,
                at_start=ev.at_start,
                p_value=ev.p_value,
                no_onset=ev.no_onset,
                onset_lo=ev.onset_lo,
                onset_hi=ev.onset_hi,
                onset_mass=ev.onset_mass,
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
                verdict=ev.verdict,
                falling_p=ev.falling_p,
                horizon=s.task_index[-1],
                offset_note=ev.offset_note,
            )
        )
    if table is not None:
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
                    verdict=r["verdict"],
                    falling_p=r["falling_p"],
                    horizon=r["horizon"],
                )
            )
    runs.sort(key=lambda r: (r.n_params, r.run_id or "", r.seed or ""))
    return runs, series


def _too_few(s: ProbeSeries, reason: str) -> RunOnset:
    """A run reported without a verdict: its probes are too few for the noise model."""
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


def _task_tokens(series: Sequence[ProbeSeries]) -> float | None:
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


def _check_within_size(points: Sequence[RunOnset]) -> None:
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


def _censored(runs: Sequence[RunOnset], ci: float) -> CensoredLaw | None:
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


def _backtest(
    points: Sequence[RunOnset], models: Sequence[str], k: int, loss: str
) -> tuple[list[Backtest], str | None]:
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


def _predictions(
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


def fit_onset(
    inputs: Iterable[str | Path],
    models: Sequence[str] = MODELS,
    normalize: str = "first",
    probe_after: Sequence[str] | None = PAPER_PROBE_AFTER,
    window: int = 3,
    predict: Sequence[float] = (),
    task_tokens: float | None = None,
    out: str | Path | None = None,
    force: bool = False,
    *,
    auc_from: str = "0",
    ci: float = 0.95,
    alpha: float = ALPHA,
    keep_no_onset: bool = False,
    bootstrap: int | None = None,
    resample: str = "cases",
    seed: int = 0,
    suggest: int | None = None,
    by: str | None = None,
    loss: str = "ls",
    backtest: int | None = None,
) -> OnsetResult:
    """`plc fit-onset`: onsets per run with their intervals (runs with no onset detected are
    reported and, unless `keep_no_onset`, left out of the fits), the fits of Table V with
    bootstrap intervals when `bootstrap` resamples are asked for, predictions with their
    delta-method bands; the log-log law with the runs that show no onset censored; optionally
    the onset table as Parquet (fit-onset and plot onset read it back), with `suggest` the
    cycles around each run's minimum to probe densely, with `backtest` K the fits to all sizes
    but the K largest against those. `loss="huber"` fits Huber's loss on ln T instead of Table
    V's estimators. `by="method"` fits (and bootstraps, and predicts) each method's runs apart;
    the result's `groups` hold those fits."""
    check_by(by)
    check_interval_options(ci, bootstrap, resample)
    check_loss(loss)
    if bootstrap is not None and not models:
        raise PlcError("--bootstrap refits the models, but --model none fits nothing")
    if bootstrap is not None and loss != "ls":
        raise PlcError(
            "--bootstrap refits with Table V's estimators; with --loss huber the delta-method "
            "bands of --predict are the intervals"
        )
    if backtest is not None and (backtest < 1 or not models):
        raise PlcError(
            f"--backtest takes the number of largest sizes to hold out (≥ 1) and a --model, "
            f"not {backtest}" + (" with --model none" if not models else "")
        )
    check_alpha(alpha)
    if out is not None:
        check_output(out, force)
    runs, series = collect_onsets(
        inputs,
        normalize,
        probe_after,
        window,
        auc_from=auc_from,
        ci=ci,
        alpha=alpha,
        seed=seed,
    )
    dense = []
    if suggest is not None:
        if not series:
            raise PlcError("--suggest-dense reads probe metric files; an onset table has no probes")
        # A still-falling run's "minimum" is its last probe: its onset lies beyond the probes,
        # so there is nothing to probe densely around (train longer instead).
        minima = {r.run_id: r.minimum_task for r in runs if r.run_id and r.verdict != STILL_FALLING}
        dense = suggest_dense(series, minima, suggest, {r.run_id: r.detected for r in runs})
    points = [r for r in runs if r.fit_value is not None and (r.detected or keep_no_onset)]
    for r in points:
        r.fitted = True
    left_out = [r for r in runs if not r.fitted]
    members = {None: points} if by is None else split_by_method(points)
    everyone = {None: runs} if by is None else split_by_method(runs)
    if bootstrap is not None and resample == "within-size":
        for group in members.values():
            _check_within_size(group)
    groups = fit_groups(points, left_out, models, by, loss)
    if task_tokens is not None:
        tokens, source = float(task_tokens), "--task-tokens"
    elif (seen := _task_tokens(series)) is not None:
        tokens, source = seen, "from the probe metrics"
    else:
        tokens, source = float(PAPER_TASK_TOKENS), "the paper's, §IV-A"
    for g in groups:
        intervals = None
        if bootstrap is not None and g.fits:
            intervals, g.bootstrap = bootstrap_fits(
                members[g.method], [f.model for f in g.fits], bootstrap, ci, seed, resample, predict
            )
            for f in g.fits:
                f.a_ci, f.b_ci = intervals[f.model]["a"], intervals[f.model]["b"]
        g.predictions = _predictions(g.fits, predict, tokens, intervals, ci)
        if "loglog" in models:
            g.censored = _censored(everyone.get(g.method, []), ci)
        if backtest is not None:
            g.backtests, g.backtest_skipped = _backtest(
                members.get(g.method, []), models, backtest, loss
            )
    whole = groups[0] if by is None else GroupFits(None, [], [])
    result = OnsetResult(
        runs=runs,
        fits=whole.fits,
        predictions=whole.predictions,
        task_tokens=tokens,
        task_tokens_source=source,
        normalize=normalize,
        probe_after=list(probe_after) if probe_after is not None else None,
        window=window,
        auc_from=auc_from,
        ci=ci,
        alpha=alpha,
        excluded=[r.run_id or r.size for r in left_out],
        fits_skipped=whole.fits_skipped,
        bootstrap=whole.bootstrap,
        dense=dense,
        dense_cycles=(
            f"{min(d.first_cycle for d in dense)}-{max(d.last_cycle for d in dense)}"
            if dense
            else None
        ),
        by=by,
        groups=[] if by is None else groups,
        sizes=pool_seeds(runs, ci, seed),
        loss=loss,
        kept=_kept(points) if keep_no_onset else None,
        censored=whole.censored,
        backtests=whole.backtests,
        backtest_skipped=whole.backtest_skipped,
    )
    if out is not None:
        result.out = str(write_onset_table(out, runs, force))
    return result


def _kept(points: Sequence[RunOnset]) -> str | None:
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


def fit_onset_or_runs(inputs: Iterable[str | Path], **options: Any) -> OnsetResult:
    """fit_onset for a study that shows whatever it has (the report, the demo, the examples):
    where no fit can be made (too few runs with an onset, a single size) the onsets alone, with
    the reason as `fits_skipped`, instead of the error `plc fit-onset` gives."""
    inputs = list(inputs)
    try:
        return fit_onset(inputs, **options)
    except PlcError as e:
        res = fit_onset(inputs, **{**options, "models": [], "bootstrap": None})
        res.fits_skipped = str(e)
        return res


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
