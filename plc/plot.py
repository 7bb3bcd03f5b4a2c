"""The paper's figures from metric files (matplotlib's object-oriented API, PNG/SVG/PDF by suffix).

Kinds, the keys of `DRAW`: `auc` (Fig. 2, or Fig. 4 with x=tokens), `probing` (Fig. 9), `onset`
(Fig. 3; Fig. 10 with all four fits), `correlates` (Fig. 5, 7 top, 11), `dormant-layers` (Fig. 6),
`entropy` (Fig. 7 bottom); `auc`, `onset` and `correlates` also `by="method"`: one colour per
mitigation method, the baseline always the first, sizes by line style and marker. Each kind is one
drawing function with the same signature: it fills a bare `Figure` from the input paths and the
options and says which runs it drew and what it could not draw.

The onset a figure marks is the study's verdict (plc.study.verdicts), judged once per figure (or
handed in, as the report does) and drawn the same way in every kind: an onset as a filled marker
inside its interval, a minimum with no significant rise after it as an open one, and a run still
falling or with too few probes not at all (a note says so).

`build_figure` returns the figure without saving it (tests read what is drawn); `plot` saves it.
No pyplot: no global figure registry, no backend switch. Matplotlib and polars are imported
inside the functions so `plc --help` stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from plc.errors import PlcError
from plc.onset import (
    BASELINE,
    Fit,
    RunOnset,
    check_by,
    expand_inputs,
    fit_groups,
    fit_model,
    format_count,
    method_order,
    moving_average,
    probe_series,
    read_finite,
    read_probes,
    run_methods,
    split_inputs,
    table_runs,
)
from plc.onset.estimators import DETECTED, FROM_START, NO_RISE
from plc.protocol import CYCLE, ONSET_WINDOW, PAPER_PROBE_AFTER
from plc.store import atomic_path, check_output, read_metrics
from plc.study import (
    FROM_PLAN,
    Judged,
    VerdictOptions,
    judge_rows,
    plan_of_metrics,
    verdict_options,
)

if TYPE_CHECKING:
    import polars as pl
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = (".png", ".svg", ".pdf")
CORRELATES = (
    ("param_abs_mean", "average |θ|"),
    ("dormant_pct", "dormant MLP units (%)"),
    ("lazy_pct", "lazy heads (%)"),
    ("collapsed_pct", "collapsed heads (%)"),
    # The newer measures (docs/recipes.md), drawn where diagnose wrote them:
    ("perturb_loss_increase", "loss increase under perturbation"),
    ("init_distance", "‖θ − θ₀‖₂"),
    ("last_hidden_norm", "last hidden state norm"),
    ("last_hidden_var", "last hidden state variance"),
)
MODEL_STYLE = {"linear": ":", "linlog": "-.", "exp": (0, (5, 2)), "loglog": "-"}
MODEL_COLOR = {
    "linear": "tab:green",
    "linlog": "tab:purple",
    "exp": "tab:orange",
    "loglog": "tab:red",
}
MODEL_NAME = {"linear": "linear", "linlog": "linear-log", "exp": "exponential", "loglog": "log-log"}
ONSET_LABEL = "onset of plasticity loss"
BY_KINDS = ("auc", "onset", "correlates")  # the kinds that draw several runs on one axes
# Sizes apart within a method's colour: (line style, marker), small to large.
SIZE_STYLES = (
    ("-", "o"),
    ("--", "s"),
    (":", "^"),
    ("-.", "D"),
    ((0, (5, 1, 1, 1)), "v"),
    ((0, (1, 3)), "P"),
)


@dataclass(frozen=True)
class PlotOptions:
    """What a drawing function may be asked; each kind reads the fields that concern it."""

    x: str = "cycle"  # auc: cycle (Fig. 2), tokens (Fig. 4) or task (cycles not of eight)
    normalize: str = "first"
    probe_after: tuple[str, ...] | None = PAPER_PROBE_AFTER
    window: int = ONSET_WINDOW
    models: tuple[str, ...] = ("loglog",)
    layer: int | None = None  # entropy: the layer drawn
    by: str | None = None  # "method": colour by mitigation method (BY_KINDS)
    estimator: str | None = None  # how runs are judged (None: the plan's, else the default)
    alpha: float | None = None
    judged: Judged | None = None  # the runs judged already (the report's): not judged again


class Drawn(NamedTuple):
    """What every drawing function returns: the runs it drew, and what it left out and why."""

    runs: list[str]
    notes: list[str]


@dataclass
class Drawing:
    figure: Figure
    kind: str
    runs: list[str]
    notes: list[str]


@dataclass
class PlotResult:
    path: str
    kind: str
    runs: list[str]
    notes: list[str] = field(default_factory=list)


def build_figure(
    kind: str,
    inputs: Iterable[str | Path],
    *,
    x: str = "cycle",
    normalize: str = "first",
    probe_after: Sequence[str] | None | str = FROM_PLAN,
    window: int | None = None,
    models: Sequence[str] = ("loglog",),
    layer: int | None = None,
    by: str | None = None,
    estimator: str | None = None,
    alpha: float | None = None,
    judged: Judged | None = None,
) -> Drawing:
    """Draw one figure of the paper from metric files (or an onset table), without saving it;
    `judged`: the runs' verdicts where the caller has them (else they are judged here, with the
    settings given, else the plan's)."""
    inputs = list(inputs)
    options = _options(
        kind, inputs, x, normalize, probe_after, window, models, layer, by, estimator, alpha
    )
    if judged is not None:
        options = replace(options, judged=judged)
    return _draw(kind, inputs, options)


def plot(
    kind: str,
    inputs: Iterable[str | Path],
    out: str | Path,
    *,
    x: str = "cycle",
    normalize: str = "first",
    probe_after: Sequence[str] | None | str = FROM_PLAN,
    window: int | None = None,
    models: Sequence[str] = ("loglog",),
    layer: int | None = None,
    by: str | None = None,
    estimator: str | None = None,
    alpha: float | None = None,
    force: bool = False,
) -> PlotResult:
    """`plc plot KIND`: draw one figure of the paper and write it to `out` (.png, .svg or .pdf)."""
    inputs = list(inputs)
    options = _options(
        kind, inputs, x, normalize, probe_after, window, models, layer, by, estimator, alpha
    )
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise PlcError(f"--out must end in {', '.join(FORMATS)} (got {out.name})")
    check_output(out, force)
    drawing = _draw(kind, inputs, options)
    with atomic_path(out, force) as tmp:
        drawing.figure.savefig(tmp, format=out.suffix.lower().lstrip("."), dpi=150)
    return PlotResult(str(out), kind, drawing.runs, drawing.notes)


def _options(
    kind, inputs, x, normalize, probe_after, window, models, layer, by, estimator, alpha
) -> PlotOptions:
    if kind not in DRAW:
        raise PlcError(f"unknown plot kind {kind!r}; choose from {', '.join(DRAW)}")
    check_by(by)
    if by is not None and kind not in BY_KINDS:
        raise PlcError(
            f"--by {by} colours plot {', '.join(BY_KINDS)}; plot {kind} draws one panel per run"
        )
    if x not in ("cycle", "tokens", "task"):
        raise PlcError(f"--x must be cycle, tokens or task, not {x!r}")
    if probe_after == FROM_PLAN and kind == "auc":  # Fig. 2 plots every probe
        probe_after = None
    # The study's settings: those given, else the plan's (plan.json beside the metrics), as in
    # fit-onset; checked here, before any figure is drawn.
    plan = plan_of_metrics(expand_inputs(inputs)[:1])
    judging = verdict_options(
        plan,
        estimator=estimator,
        alpha=alpha,
        window=window,
        probe_after=probe_after,
        normalize=normalize,
    )
    return PlotOptions(
        x=x,
        normalize=normalize,
        probe_after=judging.probe_after,
        window=judging.window,
        models=tuple(models),
        layer=layer,
        by=by,
        estimator=judging.estimator,
        alpha=judging.alpha,
    )


def _judged(paths: Sequence[Path], options: PlotOptions) -> Judged:
    """The runs' verdicts, every kind's: those handed in, else the study's judgement of the
    probe files (with the rows of any onset tables, which only plot onset reads). Runs whose
    series cannot be built are named in `unusable`; a figure that needs them says so."""
    if options.judged is not None:
        return options.judged
    metric_files, table = split_inputs(paths)
    notes: list[str] = []
    probes = read_finite(metric_files, "probe", notes)
    judged = judge_rows(probes, _verdict_options(options), notes)
    if table is not None:
        judged.runs += table_runs(table)
    return judged


def _verdict_options(options: PlotOptions) -> VerdictOptions:
    return verdict_options(
        None,
        estimator=options.estimator,
        alpha=options.alpha,
        window=options.window,
        probe_after=options.probe_after,
        normalize=options.normalize,
    )


def _draw(kind: str, inputs: Iterable[str | Path], options: PlotOptions) -> Drawing:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = expand_inputs(inputs)
    fig = Figure(layout="tight")
    FigureCanvasAgg(fig)  # a canvas that can render, so the figure can be drawn as well as saved
    runs, notes = DRAW[kind](fig, paths, options)
    return Drawing(fig, kind, runs, notes)


# ---------------------------------------------------------------------------------- helpers


def _metric_files(paths: Sequence[Path], kind: str) -> list[Path]:
    metric_files, table = split_inputs(paths)
    if table is not None:
        raise PlcError(f"plot {kind} reads metric files; an onset table only feeds plot onset")
    return metric_files


def _axes(fig: Figure, width: float, height: float) -> Axes:
    fig.set_size_inches(width, height)
    return fig.subplots()


def _grid(
    fig: Figure, n: int, width: float = 5.0, height: float = 3.6, ncols: int | None = None
) -> list[Axes]:
    """n panels, at most three a row (or `ncols`), each width × height inches."""
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig.set_size_inches(width * ncols, height * nrows)
    flat = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax in flat[n:]:
        ax.remove()
    return flat[:n]


def _colors(n: int) -> list[Any]:
    """One colour per model size, small to large along a sequential map (as Fig. 2)."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]


def _method_colors(methods: Iterable[str]) -> dict[str, Any]:
    """One qualitative colour (tab10) per method: the baseline always the first, which no other
    method takes, so it reads the same in every figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    others = [m for m in method_order(methods) if m != BASELINE]
    return {BASELINE: cmap(0)} | {m: cmap(1 + i % (cmap.N - 1)) for i, m in enumerate(others)}


def _method_looks(runs: Sequence[tuple[str, str, int, str]]) -> dict[str, dict[str, Any]]:
    """Line keywords per run of (run_id, method, n_params, size), in legend order (the baseline
    first, then by method; small to large within one): the method's colour, the size's line style
    and marker, the label "method, size" (with the run id where a method has several runs of one
    size)."""
    colors = _method_colors(m for _, m, _, _ in runs)
    sizes = sorted({n for _, _, n, _ in runs})
    order = method_order(m for _, m, _, _ in runs)
    looks = {}
    for run_id, method, n, size in sorted(runs, key=lambda r: (order.index(r[1]), r[2], r[0])):
        ls, marker = SIZE_STYLES[sizes.index(n) % len(SIZE_STYLES)]
        several = sum(m == method and k == n for _, m, k, _ in runs) > 1
        label = f"{method}, {size or run_id}" + (f" ({run_id})" if several else "")
        looks[run_id] = {"color": colors[method], "ls": ls, "marker": marker, "label": label}
    return looks


def _labels(runs: Sequence[tuple[str, str]]) -> list[str]:
    """Size names, with the run id where one size has several runs."""
    sizes = [size for size, _ in runs]
    return [(size or run) if sizes.count(size) == 1 else f"{size} ({run})" for size, run in runs]


def _x(task_index: Sequence[int], options: PlotOptions) -> np.ndarray:
    """Task indices on the x axis asked for: cycles of eight (the paper's figures) or tasks."""
    tasks = np.asarray(task_index, dtype=float)
    return tasks if options.x == "task" else tasks / len(CYCLE)


def _task_axis(ax: Axes, options: PlotOptions) -> None:
    """Label and integer ticks: diagnostics are taken at whole cycles (or tasks)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("Task" if options.x == "task" else "Cycle")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _count_axis(axis) -> None:
    """Ticks as 10M, 100M, 1.8T rather than powers of ten (tokens, parameters)."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: format_count(v) if v else "0"))


def _plain_log_axis(axis) -> None:
    """Log ticks labelled 5, 10, 20, 50, 100 (tasks read better than 10^1); minor ticks unlabelled,
    or matplotlib labels them 6×10⁰ beside the plain 5 when a range spans under two decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _line_per(ax: Axes, rows: pl.DataFrame, column: str, options: PlotOptions) -> int:
    """One line per layer (or head): its mean value at each task; how many lines."""
    import polars as pl

    keys = sorted(set(rows[column].to_list()))
    for key, color in zip(keys, _colors(len(keys)), strict=True):
        k = (
            rows.filter(pl.col(column) == key)
            .group_by("task_index")
            .agg(pl.col("value").mean())
            .sort("task_index")
        )
        x = _x(k["task_index"].to_list(), options)
        ax.plot(x, k["value"], marker="o", ms=2.5, color=color, label=f"{column} {key}")
    return len(keys)


def _read_diagnose(paths: Sequence[Path], kind: str, notes: list[str]) -> pl.DataFrame:
    """The diagnose rows with a finite value (the others named in `notes`)."""
    metric_files = _metric_files(paths, kind)
    df = read_finite(metric_files, "diagnose", notes)
    if df.height == 0:
        every = read_metrics(metric_files)
        kinds = sorted(set(every["kind"].unique().to_list())) if every.height else []
        raise PlcError(
            "no diagnose rows in the input metric files (they hold "
            + (", ".join(kinds) or "no rows")
            + "); run plc diagnose first"
        )
    return df


def _onsets(paths: Sequence[Path], options: PlotOptions) -> tuple[dict[str, int], list[str]]:
    """Onset task per run where the study's verdict has one; the others get a note (one per
    reason), as every figure draws them."""
    judged = _judged(paths, options)
    if not judged.runs and not judged.unusable:
        return {}, [*judged.notes, "no probe rows: no onset marked"]
    onsets = {r.run_id: int(r.onset) for r in judged.runs if r.verdict in DETECTED}
    return onsets, [*judged.notes, *_unmarked(judged, "no onset marked for")]


def _unmarked(judged: Judged, what: str) -> list[str]:
    """One note per reason a run has no onset to draw: `what a, b: no onset detected (why)`."""
    notes = [f"{what} {run}: {why}" for run, why in judged.unusable.items()]
    none: dict[str, list[str]] = {}
    for r in judged.runs:
        if r.verdict not in DETECTED:
            none.setdefault(r.no_onset or r.verdict, []).append(r.run_id or r.size)
    for why, runs in none.items():
        notes.append(f"{what} {', '.join(runs)}: no onset detected ({why})")
    return notes


def _runs(diag: pl.DataFrame) -> list[tuple[str, str]]:
    """(run_id, label) of the runs in the rows, small to large."""
    runs = diag.select("run_id", "size", "n_params").unique().sort("n_params", "run_id")
    ids = runs["run_id"].to_list()
    return list(zip(ids, _labels(list(zip(runs["size"].to_list(), ids, strict=True))), strict=True))


# ------------------------------------------------------------------------------------ kinds


def _auc(fig: Figure, paths: Sequence[Path], options: PlotOptions) -> Drawn:
    """Fig. 2 / Fig. 4: % change of probe AUC relative to the first probe, one line per size."""
    notes: list[str] = []
    probes = read_probes(_metric_files(paths, "auc"), notes)
    series = probe_series(probes, "first", options.probe_after)
    ax = _axes(fig, 7.5, 4.5)
    if options.by:
        looks = _method_looks([(s.run_id, s.method, s.n_params, s.size) for s in series])
    else:
        labels = _labels([(s.size, s.run_id) for s in series])
        looks = {
            s.run_id: {"marker": "o", "color": color, "label": label}
            for s, label, color in zip(series, labels, _colors(len(series)), strict=True)
        }
    of_run = {s.run_id: s for s in series}
    for run_id, look in looks.items():
        s = of_run[run_id]
        xs = s.tokens_seen if options.x == "tokens" else _x(s.task_index, options)
        ax.plot(xs, s.value, ms=3, lw=1.5, **look)
    ax.axhline(0.0, color="0.4", lw=0.8, ls="--")
    if options.x == "tokens":
        ax.set_xlabel("Training tokens")
        _count_axis(ax.xaxis)
    else:
        ax.set_xlabel(options.x.capitalize())  # no integer ticks: probes fall within cycles
    # Eq. 1 divides by the first probe after a cycle's end, or by the first probe where no probe
    # follows the paper's end of cycle (the control, custom cycles).
    first = all(s.baseline_task == s.task_index[0] for s in series)
    reference = "the first probe" if first else "the first end-of-cycle probe"
    ax.set_ylabel(f"% change in AUC relative to {reference}")
    ax.set_title("Probe AUC over training")
    ax.legend(
        title="method, model size" if options.by else "model size",
        fontsize=8,
        title_fontsize=9,
        ncol=2 if len(series) > 6 else 1,
    )
    ax.grid(alpha=0.3)
    return Drawn([s.run_id for s in series], notes)


def _probing(fig: Figure, paths: Sequence[Path], options: PlotOptions) -> Drawn:
    """Fig. 9: normalised AUC per probe, its moving average and the study's verdict, one panel per
    run: the onset (red) or the minimum with no significant rise after it (open), each with its
    interval as a horizontal bar; a run still falling or with too few probes has no marker, and
    its legend says why."""
    judged = _judged(paths, options)
    judged.check_usable()
    series = judged.series
    if not series:
        raise PlcError("no probe rows in the input metric files; run plc probe first")
    axes = _grid(fig, len(series))
    labels = _labels([(s.size, s.run_id) for s in series])
    for s, ax, label in zip(series, axes, labels, strict=True):
        ax.plot(s.task_index, s.value, color="tab:blue", marker="o", ms=3, lw=1, label="probe")
        if s.n_probes >= options.window:
            ax.plot(
                s.task_index,
                moving_average(s.value, options.window),
                color="orange",
                lw=2,
                label=f"moving average ({options.window})",
            )
        _mark_verdict(ax, s.task_index, s.value, judged.of(s.run_id))
        ax.set_title(label)
        ax.set_xlabel("Task")
        ax.set_ylabel(
            "AUC / AUC of probe language alone"
            if options.normalize == "alone"
            else f"% change in AUC vs the probe at task {s.baseline_task}"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return Drawn([s.run_id for s in series], judged.notes)


def _mark_verdict(ax: Axes, tasks: Sequence[int], values: Sequence[float], r: RunOnset) -> None:
    """A run's verdict on its own series: the point inside its interval, or why there is none."""
    p = "" if r.p_value is None else f", p = {r.p_value:.3f}"
    drawn = r.drawn
    if drawn is None:  # still falling, too few probes: nothing to place
        ax.plot([], [], " ", label=f"no onset: {r.verdict}")
        return
    task, lo, hi = drawn
    y = values[list(tasks).index(int(task))]
    if r.verdict in DETECTED:
        style = {"color": "red"}
        mark = f"onset: task {task:g} [{lo:g}, {hi:g}]{p}"
        mark += " (from the start)" if r.verdict == FROM_START else ""
    else:  # the minimum, open: a rise within noise
        style = {"mfc": "none", "color": "0.4"}
        mark = f"minimum: task {task:g} [{lo:g}, {hi:g}], no onset detected{p}"
    ax.errorbar(
        [task],
        [y],
        xerr=[[task - lo], [hi - task]],
        fmt="o",
        ms=8,
        capsize=3,
        zorder=5,
        label=mark,
        **style,
    )


def _onset(fig: Figure, paths: Sequence[Path], options: PlotOptions) -> Drawn:
    """Fig. 3 / Fig. 10: onset vs model size on log-log axes with the fitted curve(s); each onset
    with its interval, and runs with no onset detected as open markers at their minimum (where
    they have one to draw: not a run still falling or with too few probes, which get a note)."""
    judged = _judged(paths, options)
    judged.check_usable()
    every = judged.runs
    drawable = [r for r in every if r.drawn is not None and r.n_params > 0 and r.drawn[0] > 0]
    runs = [r for r in drawable if r.verdict in DETECTED]
    minima = [r for r in drawable if r.verdict == NO_RISE]
    shown = runs + minima
    notes = list(judged.notes)
    unshown = [r for r in every if r not in shown]
    if unshown:
        notes.append(
            "not drawn (no point to place on log axes): "
            + ", ".join(f"{r.run_id or r.size} ({_why_not(r)})" for r in unshown)
        )
    if minima:
        notes.append(f"no onset detected: {', '.join(r.run_id or r.size for r in minima)}")
    ax = _axes(fig, 7, 4.8)
    if not shown:
        ax.text(
            0.5,
            0.5,
            "no run has an onset or a minimum to draw",
            ha="center",
            transform=ax.transAxes,
        )
        _onset_axes(ax, np.array([1.0, 10.0]))
        return Drawn([], notes)
    p = np.array([r.n_params for r in shown], dtype=float)
    t = np.array([r.drawn for r in shown], dtype=float).ravel()  # points and interval ends
    grid = np.geomspace(p.min() / 1.5, p.max() * 1.5, 200)
    if options.by:
        notes += _onset_by_method(ax, runs, minima, grid, options)
        _onset_axes(ax, t, p)
        return Drawn([r.run_id or r.size for r in shown], notes)
    fits = []
    try:
        fits = [
            fit_model(m, [r.n_params for r in runs], [r.onset for r in runs])
            for m in options.models
        ]
    except PlcError as e:
        notes.append(f"no fit: {e}")
    for group, style in ((runs, {"color": "black"}), (minima, {"mfc": "none", "color": "0.5"})):
        if not group:
            continue
        label = "observed onset" if group is runs else "no onset detected (minimum)"
        _onset_points(ax, group, label, style)
    for f in fits:
        _fit_line(ax, f, grid, MODEL_COLOR[f.model], "")
    _onset_axes(ax, t, p)
    return Drawn([r.run_id or r.size for r in shown], notes)


def _why_not(r: RunOnset) -> str:
    if r.drawn is None:
        return r.verdict
    return "n_params ≤ 0" if r.n_params <= 0 else "task ≤ 0"


def _onset_points(ax: Axes, group: Sequence[RunOnset], label: str, style: dict[str, Any]) -> None:
    """Onsets (or minima) inside their intervals (RunOnset.drawn), each marked with its size."""
    drawn = np.array([r.drawn for r in group], dtype=float)
    x = np.array([r.n_params for r in group], dtype=float)
    y, lo, hi = drawn.T
    ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o", capsize=3, zorder=5, label=label, **style)
    for r, task in zip(group, y, strict=True):
        ax.annotate(
            r.size,
            (r.n_params, task),
            textcoords="offset points",
            xytext=(5, -10),
            fontsize=8,
        )


def _fit_line(ax: Axes, f: Fit, grid: np.ndarray, color: Any, prefix: str) -> None:
    y = f.predict(grid)
    y = np.where(y > 0, y, np.nan)  # a linear form can dip below zero: no log for it
    ax.plot(
        grid,
        y,
        ls=MODEL_STYLE[f.model],
        color=color,
        lw=2,
        label=f"{prefix}{MODEL_NAME[f.model]}: {f.law} (R²={f.r2:.3f})",
    )


def _onset_by_method(
    ax: Axes,
    runs: Sequence[RunOnset],
    missing: Sequence[RunOnset],
    grid: np.ndarray,
    options: PlotOptions,
) -> list[str]:
    """Each method's onsets and its own fitted law, in the method's colour (line style: the
    model); a method whose runs cannot be fitted gets a note."""
    notes = []
    try:
        groups = fit_groups(runs, missing, options.models, "method")
    except PlcError as e:  # no method's runs can be fitted: the points alone
        groups = fit_groups(runs, missing, [], "method")
        notes.append(f"no fit: {e}")
    colors = _method_colors(g.method for g in groups)
    for g in groups:
        color = colors[g.method]
        seen = [r for r in runs if r.method == g.method]
        unseen = [r for r in missing if r.method == g.method]
        if seen:
            _onset_points(ax, seen, f"{g.method}: observed onset", {"color": color})
        if unseen:
            label = f"{g.method}: no onset detected (minimum)"
            _onset_points(ax, unseen, label, {"mfc": "none", "color": color})
        for f in g.fits:
            _fit_line(ax, f, grid, color, f"{g.method}: ")
        if g.fits_skipped:
            notes.append(f"no fit for {g.method}: {g.fits_skipped}")
    return notes


def _onset_axes(ax: Axes, t: np.ndarray, p: np.ndarray | None = None) -> None:
    """Log-log axes in model size and tasks, the ranges from the onsets shown with their
    intervals (`t`) and sizes (`p`)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(t.min() / 2, t.max() * 3)
    if p is not None:
        ax.set_xlim(p.min() / 2, p.max() * 2)  # room for the size beside the last point
    _count_axis(ax.xaxis)
    _plain_log_axis(ax.yaxis)
    ax.set_xlabel("Model size (non-embedding parameters)")
    ax.set_ylabel("Onset of plasticity loss (task)")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _correlates(fig: Figure, paths: Sequence[Path], options: PlotOptions) -> Drawn:
    """Fig. 5 / 7 top / 11: whole-model correlates vs cycle with the onset marked in red."""
    import polars as pl

    read: list[str] = []
    diag = _read_diagnose(paths, "correlates", read)
    onsets, notes = _onsets(paths, options)
    notes = read + notes
    whole = diag.filter(pl.col("layer").is_null() & pl.col("head").is_null())
    present = [(m, label) for m, label in CORRELATES if whole.filter(pl.col("metric") == m).height]
    if not present:
        names = ", ".join(m for m, _ in CORRELATES)
        raise PlcError(f"no whole-model correlates in the diagnose rows ({names})")
    runs = _runs(whole)
    if options.by:
        methods = run_methods(whole)
        sized = whole.select("run_id", "n_params", "size").unique("run_id")
        looks = _method_looks([(r, methods[r], n, size) for r, n, size in sized.iter_rows()])
    else:  # sizes apart by line style and open marker, nested small to large in size, so
        # equal values (0 % lazy heads in every run) hide none of them
        looks = {}
        for i, ((run_id, label), color) in enumerate(zip(runs, _colors(len(runs)), strict=True)):
            ls, marker = SIZE_STYLES[i % len(SIZE_STYLES)]
            looks[run_id] = {
                "color": color,
                "label": label,
                "ls": ls,
                "marker": marker,
                "mfc": "none",
                "ms": 3 + 2 * (len(runs) - 1 - i),
            }
    if len(present) == 4:  # a 2×2 block reads better than 3 + 1
        axes = _grid(fig, 4, width=5.0, height=3.5, ncols=2)
    else:
        axes = _grid(fig, len(present), width=4.8, height=3.4)
    for (metric, ylabel), ax in zip(present, axes, strict=True):
        marks = []
        rows = whole.filter(pl.col("metric") == metric)
        for run_id, look in looks.items():
            r = (
                rows.filter(pl.col("run_id") == run_id)
                .group_by("task_index")
                .agg(pl.col("value").mean())
                .sort("task_index")
            )
            if r.height == 0:
                continue
            xs, ys = _x(r["task_index"].to_list(), options), r["value"].to_numpy()
            ax.plot(xs, ys, **{"ms": 3, **look}, clip_on=False, zorder=3)  # 0 %: above the axis
            if run_id in onsets:  # the diagnosis nearest the onset, as the paper's red marker
                i = int(np.argmin(np.abs(xs - _x([onsets[run_id]], options)[0])))
                marks.append((xs[i], ys[i]))
        if marks:
            mx, my = zip(*marks, strict=True)
            ax.plot(mx, my, "o", color="red", ms=8, zorder=5, label=ONSET_LABEL)
        _task_axis(ax, options)
        ax.set_ylabel(ylabel)
        if ylabel.endswith("(%)"):  # no negative percentages, and a flat 0 % sits on the floor
            top = max(float(np.nanmax(line.get_ydata())) for line in ax.get_lines())
            ax.set_ylim(0, min(105.0, max(1.0, 1.1 * top)))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Correlates of plasticity loss over training")
    return Drawn([run_id for run_id, _ in runs], notes)


def _dormant_layers(fig: Figure, paths: Sequence[Path], options: PlotOptions) -> Drawn:
    """Fig. 6: dormant % of each MLP layer vs cycle, one panel per run."""
    import polars as pl

    notes: list[str] = []
    diag = _read_diagnose(paths, "dormant-layers", notes)
    rows = diag.filter((pl.col("metric") == "dormant_pct") & pl.col("layer").is_not_null())
    if rows.height == 0:
        raise PlcError("no per-layer dormant_pct rows in the diagnose metrics")
    runs = _runs(rows)
    axes = _grid(fig, len(runs), width=5.5, height=4)
    for (run_id, label), ax in zip(runs, axes, strict=True):
        n_layers = _line_per(ax, rows.filter(pl.col("run_id") == run_id), "layer", options)
        ax.set_title(label)
        _task_axis(ax, options)
        ax.set_ylabel("dormant MLP units (%)")
        ax.grid(alpha=0.3)
        ax.legend(
            fontsize=7, ncol=2 if n_layers > 8 else 1, title="layer (0-based)", title_fontsize=7
        )
    return Drawn([run_id for run_id, _ in runs], notes)


def _entropy(fig: Figure, paths: Sequence[Path], options: PlotOptions) -> Drawn:
    """Fig. 7 bottom: entropy of each head of one layer vs cycle, lazy/collapsed bands marked."""
    import polars as pl

    notes: list[str] = []
    diag = _read_diagnose(paths, "entropy", notes)
    rows = diag.filter((pl.col("metric") == "entropy") & pl.col("head").is_not_null())
    if rows.height == 0:
        raise PlcError("no per-head entropy rows in the diagnose metrics")
    layers = sorted(set(rows["layer"].drop_nulls().to_list()))
    layer = layers[0] if options.layer is None else options.layer
    if layer not in layers:
        raise PlcError(f"no entropy rows for layer {layer} (layers in the data: {layers})")
    rows = rows.filter(pl.col("layer") == layer)
    h_max_rows = diag.filter(pl.col("metric") == "h_max")
    runs = _runs(rows)
    axes = _grid(fig, len(runs), width=5.5, height=4)
    for (run_id, label), ax in zip(runs, axes, strict=True):
        n_heads = _line_per(ax, rows.filter(pl.col("run_id") == run_id), "head", options)
        h = h_max_rows.filter(pl.col("run_id") == run_id)["value"]
        if h.len():
            h_max = float(h.mean())
            ax.axhline(0.9 * h_max, color="tab:red", ls="--", lw=1, label="lazy (0.9·H_max)")
            ax.axhline(0.1 * h_max, color="tab:blue", ls="--", lw=1, label="collapsed (0.1·H_max)")
            ax.set_ylim(0, 1.05 * h_max)
        else:
            notes.append(f"run {run_id}: no h_max rows, lazy/collapsed thresholds not drawn")
        ax.set_title(f"{label}, layer {layer} (0-based)")
        _task_axis(ax, options)
        ax.set_ylabel("attention entropy (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if n_heads > 6 else 1)
    return Drawn([run_id for run_id, _ in runs], notes)


# Every kind draws into a bare Figure from the input paths and the options and returns a Drawn.
Drawer = Callable[["Figure", Sequence[Path], PlotOptions], Drawn]
DRAW: dict[str, Drawer] = {
    "auc": _auc,
    "probing": _probing,
    "onset": _onset,
    "correlates": _correlates,
    "dormant-layers": _dormant_layers,
    "entropy": _entropy,
}
KINDS = tuple(DRAW)
