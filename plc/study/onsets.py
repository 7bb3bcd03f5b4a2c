"""`plc fit-onset`: the study's per-run verdicts (plc.study.verdicts), and onset tables read back,
fitted: the fits of Table V with bootstrap intervals, predictions, each size's onset pooled over
its seeds, the cycles to probe densely, and the onset table written with `--out`.

A study of remedies (`plc plan --mitigation`) labels every metric row with its method; `by="method"`
fits, bootstraps and predicts each method's runs apart. Rows and onset tables without a method
(older files) are the baseline, 'none'.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plc.errors import PlcError
from plc.onset.bootstrap import bootstrap_fits, check_interval_options, pool_seeds
from plc.onset.estimators import STILL_FALLING, get_estimator
from plc.onset.fit import MODELS, check_loss
from plc.onset.inputs import check_by, split_inputs
from plc.onset.table import (
    PAPER_TASK_TOKENS,
    GroupFits,
    OnsetResult,
    backtest_of,
    censored_of,
    check_within_size,
    fit_groups,
    kept_text,
    predictions_of,
    split_by_method,
    suggest_dense,
    table_runs,
    tokens_per_task,
    write_onset_table,
)
from plc.store import check_output, expand_inputs
from plc.study.files import plan_of_metrics
from plc.study.verdicts import FROM_PLAN, Judged, VerdictOptions, judge, verdict_options


def judge_inputs(
    inputs: Iterable[str | Path], options: VerdictOptions | None = None, **flags: Any
) -> Judged:
    """fit-onset's inputs judged: the runs of the metric files (plc.study.verdicts.judge, with
    `options`, or those `verdict_options` resolves from the flags and the files' plan) and the
    rows of any onset tables among them; bad input if a run's series cannot be built."""
    metric_files, table = split_inputs(expand_inputs(inputs))
    if options is None:
        plan = plan_of_metrics(metric_files) if metric_files else None
        options = verdict_options(plan, **flags)
    judged = judge(metric_files, options) if metric_files else Judged([], [], options=options)
    judged.check_usable()
    if table is not None:
        judged.runs += table_runs(table)
    judged.runs.sort(key=lambda r: (r.n_params, r.run_id or "", r.seed or ""))
    return judged


def fit_onset(
    inputs: Iterable[str | Path],
    models: Sequence[str] = MODELS,
    normalize: str = "first",
    probe_after: Sequence[str] | None | str = FROM_PLAN,
    window: int | None = None,
    predict: Sequence[float] = (),
    task_tokens: float | None = None,
    out: str | Path | None = None,
    force: bool = False,
    *,
    auc_from: str = "0",
    ci: float = 0.95,
    alpha: float | None = None,
    estimator: str | None = None,
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
    the result's `groups` hold those fits. The estimator, α, window and probe positions not
    given are the plan's (plan.json beside the metric files), else the protocol's."""
    _check_fit_options(ci, models, bootstrap, resample, by, loss, backtest)
    if out is not None:
        check_output(out, force)
    judged = judge_inputs(
        inputs,
        estimator=estimator,
        alpha=alpha,
        window=window,
        probe_after=probe_after,
        ci=ci,
        seed=seed,
        normalize=normalize,
        auc_from=auc_from,
    )
    result = fit_judged(
        judged,
        models,
        predict,
        task_tokens,
        keep_no_onset=keep_no_onset,
        bootstrap=bootstrap,
        resample=resample,
        suggest=suggest,
        by=by,
        loss=loss,
        backtest=backtest,
    )
    if out is not None:
        result.out = str(write_onset_table(out, result.runs, force))
    return result


def fit_judged(
    judged: Judged,
    models: Sequence[str] = MODELS,
    predict: Sequence[float] = (),
    task_tokens: float | None = None,
    *,
    keep_no_onset: bool = False,
    bootstrap: int | None = None,
    resample: str = "cases",
    suggest: int | None = None,
    by: str | None = None,
    loss: str = "ls",
    backtest: int | None = None,
    or_runs: bool = False,
) -> OnsetResult:
    """The fits of judged runs (fit_onset's second half). With `or_runs` (a study that shows
    whatever it has: the report, the demo, the examples), where no fit can be made (too few runs
    with an onset, a single size) the onsets alone, with the reason as `fits_skipped`, instead of
    the error `plc fit-onset` gives."""
    _check_fit_options(judged.options.ci, models, bootstrap, resample, by, loss, backtest)
    fitting = _Fitting(keep_no_onset, bootstrap, resample, suggest, by, loss, backtest)
    try:
        return _fit(judged, models, predict, task_tokens, fitting)
    except PlcError as e:
        if not or_runs:
            raise
        fitting.bootstrap = fitting.backtest = None
        res = _fit(judged, [], predict, task_tokens, fitting)
        res.fits_skipped = str(e)
        return res


def _check_fit_options(
    ci: float,
    models: Sequence[str],
    bootstrap: int | None,
    resample: str,
    by: str | None,
    loss: str,
    backtest: int | None,
) -> None:
    """Bad input in the fitting flags, before any file is read."""
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


@dataclass
class _Fitting:
    """fit_judged's flags on what to fit and how."""

    keep_no_onset: bool
    bootstrap: int | None
    resample: str
    suggest: int | None
    by: str | None
    loss: str
    backtest: int | None


def _fit(
    judged: Judged,
    models: Sequence[str],
    predict: Sequence[float],
    task_tokens: float | None,
    f: _Fitting,
) -> OnsetResult:
    o = judged.options
    runs, series = judged.runs, judged.series
    dense = []
    if f.suggest is not None:
        if not series:
            raise PlcError("--suggest-dense reads probe metric files; an onset table has no probes")
        # A still-falling run's "minimum" is its last probe: its onset lies beyond the probes,
        # so there is nothing to probe densely around (train longer instead).
        minima = {r.run_id: r.minimum_task for r in runs if r.run_id and r.verdict != STILL_FALLING}
        dense = suggest_dense(series, minima, f.suggest, {r.run_id: r.detected for r in runs})
    for r in runs:
        r.fitted = r.fit_value is not None and (r.detected or f.keep_no_onset)
    points = [r for r in runs if r.fitted]
    left_out = [r for r in runs if not r.fitted]
    members = {None: points} if f.by is None else split_by_method(points)
    everyone = {None: runs} if f.by is None else split_by_method(runs)
    if f.bootstrap is not None and f.resample == "within-size":
        for group in members.values():
            check_within_size(group)
    groups = fit_groups(points, left_out, models, f.by, f.loss)
    if task_tokens is not None:
        tokens, source = float(task_tokens), "--task-tokens"
    elif (seen := tokens_per_task(series)) is not None:
        tokens, source = seen, "from the probe metrics"
    else:
        tokens, source = float(PAPER_TASK_TOKENS), "the paper's, §IV-A"
    for g in groups:
        intervals = None
        if f.bootstrap is not None and g.fits:
            intervals, g.bootstrap = bootstrap_fits(
                members[g.method],
                [fit.model for fit in g.fits],
                f.bootstrap,
                o.ci,
                o.seed,
                f.resample,
                predict,
            )
            for fit in g.fits:
                fit.a_ci, fit.b_ci = intervals[fit.model]["a"], intervals[fit.model]["b"]
        g.predictions = predictions_of(g.fits, predict, tokens, intervals, o.ci)
        if "loglog" in models:
            g.censored = censored_of(everyone.get(g.method, []), o.ci)
        if f.backtest is not None:
            g.backtests, g.backtest_skipped = backtest_of(
                members.get(g.method, []), models, f.backtest, f.loss
            )
    whole = groups[0] if f.by is None else GroupFits(None, [], [])
    return OnsetResult(
        runs=runs,
        fits=whole.fits,
        predictions=whole.predictions,
        task_tokens=tokens,
        task_tokens_source=source,
        normalize=o.normalize,
        probe_after=list(o.probe_after) if o.probe_after is not None else None,
        window=o.window,
        auc_from=o.auc_from,
        ci=o.ci,
        alpha=o.alpha,
        estimator=o.estimator,
        estimator_text=get_estimator(o.estimator).describe(alpha=o.alpha, ci=o.ci),
        notes=list(judged.notes),
        excluded=[r.run_id or r.size for r in left_out],
        fits_skipped=whole.fits_skipped,
        bootstrap=whole.bootstrap,
        dense=dense,
        dense_cycles=(
            f"{min(d.first_cycle for d in dense)}-{max(d.last_cycle for d in dense)}"
            if dense
            else None
        ),
        by=f.by,
        groups=[] if f.by is None else groups,
        sizes=pool_seeds(runs, o.ci),
        loss=f.loss,
        kept=kept_text(points) if f.keep_no_onset else None,
        censored=whole.censored,
        backtests=whole.backtests,
        backtest_skipped=whole.backtest_skipped,
    )


def fit_onset_or_runs(inputs: Iterable[str | Path], **options: Any) -> OnsetResult:
    """fit_onset for a study that shows whatever it has (the report, the demo, the examples):
    where no fit can be made, the onsets alone with the reason as `fits_skipped`."""
    fitting = {
        k: options.pop(k)
        for k in ("models", "predict", "task_tokens", "keep_no_onset", "bootstrap", "resample")
        if k in options
    }
    fitting |= {k: options.pop(k) for k in ("suggest", "by", "loss", "backtest") if k in options}
    options.setdefault("probe_after", FROM_PLAN)
    judged = judge_inputs(inputs, **options)
    return fit_judged(judged, or_runs=True, **fitting)
