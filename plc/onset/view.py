"""What fit-onset's results look like in a table: which columns, and how each cell reads. One view
for `plc fit-onset`, `plc status`, `plc demo` and `plc report`, so that a verdict reads the same
everywhere."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from plc.onset.estimators import DETECTED, FROM_START, NO_RISE, STILL_FALLING, TOO_FEW

if TYPE_CHECKING:
    from plc.onset.bootstrap import BootstrapSummary
    from plc.onset.fit import Fit
    from plc.onset.table import OnsetResult, Prediction, RunOnset


def format_onset(task: float, lo: float | None, hi: float | None) -> str:
    """`6 [4, 10]`: a task index (an onset, or a minimum) with its interval, if any."""
    return f"{task:g}" + ("" if lo is None or hi is None else f" [{lo:g}, {hi:g}]")


def format_count(x: float) -> str:
    """Tokens or parameters in short form: 1.8T, 5B, 314.8M, 950."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.4g}{unit}" if abs(x) < 1e15 else f"{x:.3g}"
    return f"{x:.4g}"


def _run(r: RunOnset | Mapping[str, Any]) -> RunOnset:
    """A run: a RunOnset, or a row of the onset table (plc demo reads it back)."""
    from plc.onset.table import RunOnset

    if isinstance(r, Mapping):
        known = {f.name for f in fields(RunOnset)}
        return RunOnset(**{k: v for k, v in r.items() if k in known})
    return r


def onset_cell(r: RunOnset | Mapping[str, Any]) -> str:
    """`6 [4, 10]`, `2 [2, 4] (from the start)`; with no onset detected, `none (minimum 6 [6, 18])`
    (where the fitted trend is lowest, and its interval), `none (still falling)` or `none (too few
    probes)`: the point and interval every figure draws (RunOnset.drawn)."""
    r = _run(r)
    drawn = r.drawn
    if r.verdict in DETECTED and drawn:
        return format_onset(*drawn) + (" (from the start)" if r.verdict == FROM_START else "")
    if r.verdict == NO_RISE and drawn:
        return f"none (minimum {format_onset(*drawn)})"
    if r.verdict == STILL_FALLING:
        return f"none ({r.verdict})"
    if r.verdict == TOO_FEW:  # with their count: "too few probes (3)"
        return f"none ({(r.no_onset or r.verdict).split(':')[0]})"
    return "none"


def verdict(r: RunOnset | Mapping[str, Any]) -> str:
    """One line per run: `onset at task 2 [2, 4] (from the start), p = 0.002`, or why there is
    none."""
    r = _run(r)
    name = r.run_id or r.size
    if r.verdict not in DETECTED or r.drawn is None:
        return f"{name}: no onset detected ({r.no_onset or r.verdict})"
    where = f"onset at task {format_onset(*r.drawn)}"
    where += " (from the start)" if r.verdict == FROM_START else ""
    p = "" if r.p_value is None else f", p = {r.p_value:.3f}"
    return f"{name}: {where}{p}"


def _num(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def _rate(r: Any) -> str:
    if r.rate is None:
        return ""
    return f"{r.rate:+.3g}" + ("" if r.rate_se is None else f" ± {r.rate_se:.2g}")


@dataclass
class Column:
    name: str
    cell: Callable[[Any], str]
    numeric: bool = True


def run_columns(res: OnsetResult) -> list[Column]:
    """The per-run table's columns: the verdict (onset with its interval, p-value), then the
    descriptive ones (Table IV's smoothed minimum, the rise in noise SDs, the noise, the rate)."""
    level = f"{res.ci:.0%}".replace("%", " %")
    unit = "%" if res.normalize == "first" else "ratio"
    cols = []
    if any(r.run_id for r in res.runs):  # an onset table may have no run ids
        cols.append(Column("run", lambda r: r.run_id or "", False))
    cols.append(Column("size", lambda r: r.size, False))
    if res.by:
        cols.append(Column("method", lambda r: r.method, False))
    cols += [
        Column("n_params", lambda r: f"{r.n_params:,}"),
        Column("probes", lambda r: "" if r.n_probes is None else str(r.n_probes)),
        Column(f"onset (task) [{level} interval]", onset_cell),
        Column("p", lambda r: _num(r.p_value, ".3f")),
        Column(
            "onset (tokens)",
            lambda r: "" if r.onset_tokens is None else format_count(r.onset_tokens),
        ),
    ]
    if any(r.noise_sd is not None for r in res.runs):
        cols += [
            Column("Table IV minimum", lambda r: _num(r.smoothed_minimum, "d")),
            Column("rise (noise SD)", lambda r: _num(r.rise_sd, ".1f")),
            Column(f"noise SD ({unit})", lambda r: _num(r.noise_sd, ".3g")),
            Column("ρ", lambda r: _num(r.rho, ".2f")),
            Column("rate (%/task)", _rate),
        ]
    return cols


def run_rows(res: OnsetResult) -> list[list[str]]:
    """The per-run table's cells, one row per run, in run_columns' order."""
    cols = run_columns(res)
    return [[c.cell(r) for c in cols] for r in res.runs]


def run_markdown(res: OnsetResult) -> list[str]:
    """The per-run table as Markdown lines (the examples' README tables)."""
    cols = run_columns(res)
    lines = ["| " + " | ".join(c.name for c in cols) + " |"]
    lines.append("|" + "".join("---:|" if c.numeric else "---|" for c in cols))
    return lines + ["| " + " | ".join(row) + " |" for row in run_rows(res)]


def study_markdown(res: OnsetResult, sizes: Sequence[str]) -> list[str]:
    """A study as the examples' READMEs show it, in the order of `sizes`: fit-onset's per-run
    table; per size the runs with an onset, their mean onset ± SD and mean rate of loss ± SD over
    seeds; the log-log law with its exponent's interval (or why there is none); and the rate of
    loss's own log-log slope over every run."""
    import numpy as np

    from plc.onset.fit import rate_law

    order = {s: i for i, s in enumerate(sizes)}
    res.runs.sort(key=lambda r: (order.get(r.size, len(order)), r.run_id or ""))
    lines = run_markdown(res)
    lines += [
        "",
        "| size | runs with an onset | mean onset ± SD | mean rate of loss (%/task ± SD) |",
    ]
    lines += ["|---|---|---:|---|"]
    for size in sizes:
        mine = [r for r in res.runs if r.size == size]
        onsets = [r.onset for r in mine if r.onset is not None]
        rates = [r.rate for r in mine if r.rate is not None]
        mean_onset = (
            f"{np.mean(onsets):.1f} ± {np.std(onsets, ddof=1):.1f}"
            if len(onsets) > 1
            else (f"{onsets[0]:g}" if onsets else "–")
        )
        spread = f"{np.mean(rates):+.2f} ± {np.std(rates, ddof=1):.2f}" if len(rates) > 1 else "–"
        lines.append(f"| {size} | {len(onsets)} of {len(mine)} | {mean_onset} | {spread} |")
    law = res.law and f"{res.law}; {res.exponent}"
    lines += ["", f"Log-log law of the onset: {law or f'no fit ({res.fits_skipped})'}"]
    rates = rate_law([r.n_params for r in res.runs], [r.rate for r in res.runs])
    if rates is not None:
        lines.append(str(rates))
    return lines


def method_text(res: OnsetResult) -> str:
    """How the per-run verdicts were made, for a caption under the table."""
    return (
        f"{res.estimator_text} Table IV minimum: the paper's read-out ({res.window}-point moving "
        "average), descriptive; rate: OLS slope of the AUC change from the minimum on, ± its "
        "standard error (docs/estimators.md)."
    )


def size_columns(res: OnsetResult) -> tuple[list[str], list[list[str]]]:
    """The pooled onset of each size with several seeds: headers and rows."""
    level = f"{res.ci:.0%}".replace("%", " %")
    headers = ["size", *(["method"] if res.by else []), "seeds", "onset detected", "censored"]
    headers += ["onset (geometric mean)", f"{level} interval"]
    rows = []
    for s in res.sizes:
        censored = getattr(s, "censored", 0)
        beyond = getattr(s, "beyond", None)
        rows.append(
            [
                s.size,
                *([s.method] if res.by else []),
                str(s.seeds),
                f"{s.detected} of {s.seeds}",
                str(censored),
                _num(s.onset, ".1f") if beyond is None else f"> {beyond:g} (all censored)",
                "" if s.onset_lo is None else f"[{s.onset_lo:.1f}, {s.onset_hi:.1f}]",
            ]
        )
    return headers, rows


POOLED = (
    "Pooled: the geometric mean onset of a size's seeds, each run with no onset detected "
    "counted as censored (its onset beyond its last probe), under a normal model of ln T with "
    "one SD for every size (at least the runs' own noise); a t interval."
)


def excluded_text(res: OnsetResult) -> str:
    """Which runs the fits leave out, for a note beside them ("" when none)."""
    if not res.excluded:
        return ""
    return (
        f"The fits leave out {len(res.excluded)} run(s) with no onset detected: "
        f"{', '.join(res.excluded)} (fit-onset --keep-no-onset fits them at their minimum; "
        "the censored log-log law counts them as censored)."
    )


def censored_text(group: Any) -> str:
    """The log-log law with censored runs, for a line under the fits ("" when there is none)."""
    law = getattr(group, "censored", None)
    return "" if law is None else str(law)


def backtest_columns(rows: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    """Fits to the smaller sizes against the held-out larger: headers and rows."""
    headers = ["model", "fitted on", "held out", "runs", "observed", "predicted", "error"]
    out = []
    for b in rows:
        fitted = b.fitted_sizes[0] + "–" + b.fitted_sizes[-1]
        out.append(
            [
                b.model,
                fitted,
                b.size,
                str(b.runs),
                f"{b.observed:,.1f}",
                _tasks(b.predicted),
                f"{b.error:+,.1f} ({b.relative:+.0%})",
            ]
        )
    return headers, out


def _level(ci: float) -> str:
    return f"{ci:.0%}".replace("%", " %")


def _pair(ci: Sequence[float] | None, fmt: Callable[[float], str]) -> str:
    return "" if ci is None or ci[0] is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def fit_columns(
    fits: Sequence[Fit], boot: BootstrapSummary | None
) -> tuple[list[str], list[list[str]]]:
    """The fits of Table V, one row per model: headers and rows (numeric columns: 2 to −2)."""
    level = _level(boot.ci) if boot else ""
    headers = ["model", "formula", "a ± SE", "b ± SE"]
    headers += [f"a {level} interval", f"b {level} interval"] if boot else []
    headers += ["R²", "RMSE", "RMSE leave-one-out", "law"]
    g4 = "{:.4g}".format
    rows = [
        [
            f.model,
            f.formula,
            f"{f.a:.6g} ± {f.a_se:.3g}",
            f"{f.b:.6g} ± {f.b_se:.3g}",
            *([_pair(f.a_ci, g4), _pair(f.b_ci, g4)] if boot else []),
            f"{f.r2:.4f}",
            f"{f.rmse:.3f}",
            f"{f.loo_rmse:.3f}",
            f.law,
        ]
        for f in fits
    ]
    return headers, rows


def bootstrap_text(boot: BootstrapSummary) -> str:
    """How the fits' intervals were made, for a caption under their table."""
    unfit = boot.resamples - boot.used
    failed = ", ".join(f"{m} {n}" for m, n in boot.failed.items() if n)
    widened = (
        f"each side widened {boot.expand:.2f}× about the fit (t over z for n − 2 degrees of "
        "freedom)"
        if not boot.own_noise
        else (
            "each side t standard errors of the larger of its own variance and the runs' own "
            f"noise's ({boot.own_noise} run(s) with an onset distribution; degrees of freedom "
            f"from n − 2, a {boot.expand:.2f}× widening, where that noise is nil, to a z interval "
            "where it is all)"
        )
    )
    return (
        f"Intervals of the fits: {_level(boot.ci)} percentile intervals over "
        f"{boot.resamples:,} resamples of the runs with their onsets ({boot.resample}, seed "
        f"{boot.seed}; a size with one run draws its onset from its distribution under "
        f"within-size), {widened}"
        + (f"; {unfit} resamples held a single size and were not fitted" if unfit else "")
        + (f"; fits that failed: {failed}" if failed else "")
        + "."
    )


def _tasks(x: float) -> str:
    return f"{x:,.1f}" if abs(x) < 1e6 else f"{x:.3g}"


def prediction_columns(
    predictions: Sequence[Prediction], boot: BootstrapSummary | None, ci: float = 0.95
) -> tuple[list[str], list[list[str]]]:
    """The onset each fit predicts at the sizes asked for, in tasks and tokens, with the
    delta-method band of the law and the bootstrap's interval: headers and rows."""
    level = _level(boot.ci) if boot else _level(ci)
    delta = any(getattr(pr, "onset_tasks_delta", None) for pr in predictions)
    headers = ["model", "n_params", "onset (tasks)"]
    headers += [f"{level} delta method"] if delta else []
    headers += [f"{level} bootstrap"] if boot else []
    headers += ["onset (tokens)"]
    headers += [f"{level} bootstrap (tokens)"] if boot else []
    rows = []
    for pr in predictions:
        row = [pr.model, format_count(pr.n_params), _tasks(pr.onset_tasks)]
        row += [_pair(getattr(pr, "onset_tasks_delta", None), _tasks)] if delta else []
        row += [_pair(pr.onset_tasks_ci, _tasks)] if boot else []
        row += [format_count(pr.onset_tokens)]
        row += [_pair(pr.onset_tokens_ci, format_count)] if boot else []
        rows.append(row)
    return headers, rows
