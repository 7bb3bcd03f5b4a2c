"""`plc fit-onset` and `plc simulate-onset`: the onset per run, its scaling law, its calibration."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from plc.cli.common import (
    ForceOpt,
    JsonOpt,
    NormalizeHelp,
    ProbeAfterHelp,
    app,
    console,
    emit_json,
    err_console,
)

if TYPE_CHECKING:
    from plc.onset.calibrate import LawCalibration

PANEL = "Onset of plasticity loss"  # of `plc --help`

# How a study's runs are judged: every command that shows a verdict takes these (fit-onset, plot,
# status, report, demo); not given, they are the plan's (plan.json), else the protocol's.
EstimatorOpt = typer.Option(
    None,
    "--estimator",
    help="How each run's onset is judged: noise-model (a test of a rise after the minimum) or "
    "moving-average (App. B's minimum). Default: the plan's, else noise-model.",
)
AlphaOpt = typer.Option(
    None,
    "--alpha",
    help="False-alarm rate of the test of a rise after the minimum (per run). Default: the "
    "plan's, else 0.05.",
)
WindowOpt = typer.Option(
    None,
    "--window",
    help="Window of the centred moving average (odd). Default: the plan's, else 3.",
)


def print_notes(notes: list[str]) -> None:
    """What a reading left out, one line each on stderr."""
    for note in notes:
        err_console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


@app.command("fit-onset", rich_help_panel=PANEL)
def fit_onset_cmd(
    inputs: list[str] = typer.Argument(
        ...,
        help="Metric files (their probe rows are used) or onset tables (CSV/Parquet: n_params, onset[, size, seed]).",
    ),
    model: str = typer.Option(
        "all", "--model", help="linear, linlog, exp, loglog, all, or none (onsets only)."
    ),
    normalize: str = typer.Option("first", "--normalize", help=NormalizeHelp),
    probe_after: str = typer.Option(
        None,
        "--probe-after",
        help=ProbeAfterHelp + " Default: the plan's (plan.json beside the metrics), else zh,de,ru.",
    ),
    window: int = WindowOpt,
    estimator: str = EstimatorOpt,
    auc_from: str = typer.Option(
        "0",
        "--auc-from",
        help="0: the probe curve's area from step 0 (as probe stored it); first: recomputed without the step-0 evaluation.",
    ),
    alpha: float = AlphaOpt,
    keep_no_onset: bool = typer.Option(
        False,
        "--keep-no-onset",
        help="Fit runs with no onset detected too: at the minimum of their not-significant rise, or (still falling) at their last probe, a lower bound. Not onsets: the output names them.",
    ),
    ci: float = typer.Option(
        0.95, "--ci", help="Level of every interval (per run and of the fits)."
    ),
    bootstrap: int = typer.Option(
        None, "--bootstrap", help="Refit the models on N resamples of the runs (N ≥ 100)."
    ),
    resample: str = typer.Option(
        "cases",
        "--resample",
        help="cases: draw runs from all runs (sizes × seeds); within-size: from each size's runs.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every resampling."),
    loss: str = typer.Option(
        "ls",
        "--loss",
        help="ls: Table V's estimators; huber: Huber's loss on ln T (robust to a stray onset), fitted from a grid of starts.",
    ),
    backtest: int = typer.Option(
        None,
        "--backtest",
        help="Fit all sizes but the K largest and report each model's error at those.",
    ),
    predict: str = typer.Option(
        None, "--predict", help="Extrapolate the onset to these sizes, e.g. 1e9,7B."
    ),
    task_tokens: str = typer.Option(
        None,
        "--task-tokens",
        help="Tokens per task for predictions (default: from the probes, else 5B).",
    ),
    suggest_dense: int = typer.Option(
        None,
        "--suggest-dense",
        help="Print per run the cycles within K of its minimum, for plc plan --dense-cycles.",
    ),
    out: Path = typer.Option(None, "--out", help="Write the per-run onset table here (Parquet)."),
    by: str = typer.Option(
        None,
        "--by",
        help="method: fit each method's runs apart (plc plan --mitigation) and compare onsets.",
    ),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Onset of plasticity loss per run, with intervals, and its scaling law: the fits of Table V."""
    from plc.onset import parse_models, parse_numbers, parse_probe_after
    from plc.study import FROM_PLAN, fit_onset

    res = fit_onset(
        inputs,
        models=parse_models(model),
        normalize=normalize,
        probe_after=FROM_PLAN if probe_after is None else parse_probe_after(probe_after),
        window=window,
        estimator=estimator,
        predict=parse_numbers(predict, "--predict"),
        task_tokens=(parse_numbers(task_tokens, "--task-tokens") or [None])[0],
        out=out,
        force=force,
        auc_from=auc_from,
        ci=ci,
        alpha=alpha,
        keep_no_onset=keep_no_onset,
        bootstrap=bootstrap,
        resample=resample,
        seed=seed,
        suggest=suggest_dense,
        by=by,
        loss=loss,
        backtest=backtest,
    )
    if as_json:
        emit_json(res.to_dict())
        return
    print_notes(res.notes)
    _print_onsets(res)


def _print_onsets(res) -> None:
    """fit-onset's tables: runs with their verdicts, pooled sizes, fits, predictions, dense probing."""
    from plc.onset import view

    runs = Table(title="Onset of plasticity loss per run")
    for c in view.run_columns(res):
        runs.add_column(c.name, justify="right" if c.numeric else "left")
    for r, cells in zip(res.runs, view.run_rows(res), strict=True):
        runs.add_row(*cells, style=None if r.detected else "dim")
    console.print(runs)
    for r in res.runs:
        if r.n_probes is not None or not r.detected:  # not the rows of a Table IV alone
            console.print(view.verdict(r))
        if r.offset_note:
            console.print(f"  {r.run_id}: {r.offset_note}")
    if res.estimator_text and any(r.n_probes is not None for r in res.runs):
        console.print(view.method_text(res))
    if res.sizes:
        headers, rows = view.size_columns(res)
        _print_table("Onset per size, pooled over its seeds", headers, rows, left=1 + bool(res.by))
        console.print(view.POOLED)
    if res.excluded:
        console.print(view.excluded_text(res))
    if res.kept:
        console.print(res.kept)
    if res.fits_skipped:
        console.print(f"[yellow]No fit:[/yellow] {res.fits_skipped}")
    if res.fits:
        _print_fits(res, sum(r.fitted for r in res.runs), res)
    for g in (g for g in res.groups if g.fits or g.fits_skipped):  # none with --model none
        console.rule(f"[bold]method {g.method}[/bold]")
        if g.fits_skipped:
            console.print(f"[yellow]No fit for {g.method}:[/yellow] {g.fits_skipped}")
        if g.fits:
            _print_fits(g, len(g.runs), res)
    if res.by:
        _print_method_comparison(res)
    if res.dense:
        dense = Table(title="Cycles to probe densely (App. B's second stage)")
        for col in ("run", "size", "minimum (task)", "cycle", "dense cycles"):
            dense.add_column(col, justify="left" if col in ("run", "size") else "right")
        for d in res.dense:
            dense.add_row(
                d.run_id,
                d.size,
                str(d.minimum_task) + ("" if d.detected else " (rise not significant)"),
                str(d.cycle),
                f"{d.first_cycle}-{d.last_cycle}",
            )
        console.print(dense)
        falling = [r.run_id for r in res.runs if r.verdict == "still falling"]
        if falling:
            console.print(
                f"still falling at their last probe (train longer; no minimum to probe around): "
                f"{', '.join(falling)}"
            )
        console.print(f"all runs: plc plan … --dense-cycles [bold]{res.dense_cycles}[/bold]")
    if res.out:
        console.print(f"wrote [bold]{res.out}[/bold]")


def _print_method_comparison(res) -> None:
    """Does a method delay the onset? Each size's onsets side by side, one column per method."""
    from plc.onset.view import onset_cell

    methods = res.methods
    table = Table(title=f"Onset per size and method (task, {res.ci:.0%} interval)")
    table.add_column("size")
    for m in methods:
        table.add_column(m, justify="right")
    sizes = sorted({r.n_params for r in res.runs})
    for i, n in enumerate(sizes):
        at = [r for r in res.runs if r.n_params == n]
        cells = []
        for m in methods:
            mine = [r for r in at if r.method == m]
            several = len(mine) > 1
            cells.append("\n".join(f"{r.run_id}: " * several + onset_cell(r) for r in mine) or "–")
        table.add_row(at[0].size, *cells, end_section=i == len(sizes) - 1)
    groups = {g.method: g for g in res.groups}
    if any(g.law for g in res.groups):
        table.add_row("log-log law", *(groups[m].law or "no fit" for m in methods))
    if any(g.exponent for g in res.groups):
        table.add_row("log-log exponent", *(groups[m].exponent or "" for m in methods))
    console.print(table)


def _print_fits(group, points: int, res) -> None:
    """One set of fits (all runs, or one method's) with its intervals and predictions."""
    from plc.onset import format_count, view

    boot = group.bootstrap
    robust = " (Huber's loss on ln T)" if res.loss == "huber" else ""
    _print_table(
        f"Fits of the onset T (tasks) to model size P ({points} points){robust}",
        *view.fit_columns(group.fits, boot),
        left=2,
    )
    for f in group.fits:
        console.print(
            f"{f.model} law: [bold]{f.law}[/bold]" + (" (eq. 2)" if f.model == "loglog" else "")
        )
    if boot:
        if group.exponent:
            console.print(f"log-log exponent: [bold]{group.exponent}[/bold]")
        console.print(view.bootstrap_text(boot))
    if group.censored:
        console.print(view.censored_text(group))
    if group.predictions:
        _print_table(
            f"Predicted onset ({format_count(res.task_tokens)} tokens per task: "
            f"{res.task_tokens_source})",
            *view.prediction_columns(group.predictions, boot, res.ci),
            left=1,
        )
        console.print(
            "Delta method: the band of the fitted law from the covariance of (a, b), t quantile "
            "with n − 2 degrees of freedom (in ln T for log-log and exp)."
        )
    if group.backtests:
        _print_table(
            "Backtest: fitted to the smaller sizes, predicted at the larger",
            *view.backtest_columns(group.backtests),
            left=3,
        )
    if group.backtest_skipped:
        console.print(f"[yellow]{group.backtest_skipped}[/yellow]")


def _print_table(title: str, headers: list[str], rows: list[list[str]], left: int) -> None:
    """A rich table whose first `left` columns are text, the others numbers."""
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i < left else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command("simulate-onset", rich_help_panel=PANEL)
def simulate_onset_cmd(
    reps: int = typer.Option(100, "--reps", help="Studies per case."),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulation."),
    cycles: int = typer.Option(8, "--cycles", help="Cycles of probes after zh, de and ru."),
    alpha: float = typer.Option(0.05, "--alpha", help="False-alarm rate of the test."),
    ci: float = typer.Option(0.95, "--ci", help="Level of the onset's interval."),
    estimator: str = typer.Option(
        "noise-model", "--estimator", help="The estimator: noise-model or moving-average."
    ),
    jobs: int = typer.Option(
        1, "--jobs", help="Cases run at a time, each in its own process (same numbers)."
    ),
    law: bool = typer.Option(
        False,
        "--law",
        help="Calibrate the law's interval of b instead (--reps studies per case of sizes × seeds).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Calibrate an onset estimator's verdict and interval on synthetic studies with a known onset."""
    from plc.onset.calibrate import calibrate, calibrate_law
    from plc.onset.detect import check_alpha
    from plc.onset.estimators import get_estimator

    check_alpha(alpha)
    get_estimator(estimator)
    if law:
        _print_law(calibrate_law(studies=reps, seed=seed, ci=ci, jobs=jobs), as_json)
        return
    res = calibrate(
        reps=reps, seed=seed, cycles=cycles, alpha=alpha, ci=ci, estimator=estimator, jobs=jobs
    )
    if as_json:
        emit_json(res.to_dict())
        return
    level = f"{ci:.0%}"
    table = Table(
        title=f"{estimator} on synthetic studies ({reps} per case, {cycles} cycles, seed {seed})"
    )
    columns = ["trend", "noise", "grid", "seeds", "runs", f"onset detected (α = {alpha:g})"]
    columns += ["p < 0.10", "still falling", f"{level} coverage", "median width (tasks)"]
    columns += ["mean abs. error", "pooled coverage / width"]
    for c in columns:
        table.add_column(c, justify="left" if c in ("trend", "noise", "grid") else "right")
    for r in res.rows:
        c = r.case
        grid = "control" if c.grid == "control" else ("+3/−2/0 %" if c.offsets else "no offsets")
        below = r.p_below["0.1"] if r.p_below else None
        table.add_row(
            c.name,
            "white" if c.rho == 0 else f"AR({c.rho:g})",
            grid,
            str(c.seeds),
            str(r.runs),
            f"{r.detected:.0%} ± {r.detected_se:.0%}",
            "" if below is None else f"{below:.0%}",
            f"{r.still_falling:.0%}",
            "" if r.coverage is None else f"{r.coverage:.0%} ± {r.coverage_se:.0%}",
            "" if r.width is None else f"{r.width:.1f} ± {r.width_se:.1f}",
            "" if r.error is None else f"{r.error:.1f}",
            ""
            if r.pooled_coverage is None
            else f"{r.pooled_coverage:.0%} / {r.pooled_width or 0:.1f}",
        )
    console.print(table)
    console.print(
        "Onset detected: the false-alarm rate where there is no onset, the power otherwise. "
        "Noise SD 1 %; an onset's rise is 10 % to the last probe. ± Monte-Carlo standard "
        "errors. Coverage counts every run of an onset case (a still-falling run has no "
        "interval) against the probed task where its trend is lowest; the pooled coverage, "
        "against the geometric mean of its seeds'."
    )
    nulls = [r for r in res.rows if r.p_below]
    if nulls:
        pt = Table(title="p-values where there is no onset (a valid p: each share ≤ its level)")
        for c in ("trend", "noise", "grid", *(f"p < {x}" for x in ("0.01", "0.05", "0.10", "0.5"))):
            pt.add_column(c, justify="left" if c in ("trend", "noise", "grid") else "right")
        pt.add_column("uniform (KS p)", justify="right")
        pt.add_column("too small (KS p)", justify="right")
        for r in nulls:
            c = r.case
            grid = "control" if c.grid == "control" else ("+3/−2/0 %" if c.offsets else "none")
            pt.add_row(
                c.name,
                "white" if c.rho == 0 else f"AR({c.rho:g})",
                grid,
                *(f"{v:.1%}" for v in r.p_below.values()),
                f"{r.uniform_p:.3f}",
                f"{r.small_p:.3f}",
            )
        console.print(pt)
        console.print(
            "KS: Kolmogorov–Smirnov tests of the null p-values against the uniform distribution; "
            "'too small' is one-sided (a small value means p-values too small: over-called "
            "onsets). The p-value is the larger of those at the fitted and the flat null, so it "
            "is conservative on series that fall: shares below their level are valid."
        )


def _print_law(res: LawCalibration, as_json: bool) -> None:
    """simulate-onset --law's table."""
    from scipy.stats import norm

    if as_json:
        emit_json(res.to_dict())
        return
    level = f"{res.ci:.0%}"
    z = float(norm.ppf((1 + res.ci) / 2))
    table = Table(
        title=f"The law's {level} interval of b ({res.studies} studies per case, seed {res.seed})"
    )
    for c in ("study", "scatter (SD of ln T)", "b", "interval", "no onset", "coverage"):
        table.add_column(c, justify="left" if c in ("study", "interval") else "right")
    for c in ("width / ideal", "bias of b̂ (SD)", "OLS t: coverage", "OLS t: width / ideal"):
        table.add_column(c, justify="right")
    for r in res.rows:
        c = r.case
        table.add_row(
            c.name,
            f"{c.scatter:g}",
            f"{c.slope:g}",
            r.interval,
            f"{r.censored:.0%}",
            f"{r.coverage:.1%} ± {r.coverage_se:.1%}",
            f"{r.ratio:.2f}",
            f"{r.bias:+.3f} ({r.bias / (r.ideal / (2 * z)):+.2f})",
            f"{r.ols_coverage:.1%}",
            f"{r.ols_width / r.ideal:.2f}",
        )
    console.print(table)
    console.print(
        "Ideal: ±z·SD of the point estimate of b over the studies; the bias of that estimate "
        "is its mean less the true b (in SDs of it). Runs through the noise "
        f"model's test ({res.samples} samples), the detected runs' law through fit-onset's "
        f"bootstrap ({res.resamples} resamples), or where runs show no onset the censored law."
    )
