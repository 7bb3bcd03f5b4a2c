"""The paper's figures from metric files (matplotlib, Agg backend, PNG/SVG/PDF by suffix).

Kinds: `auc` (Fig. 2, or Fig. 4 with x=tokens), `probing` (Fig. 9), `onset` (Fig. 3; Fig. 10 with
all four fits), `correlates` (Fig. 5, 7 top, 11), `dormant-layers` (Fig. 6), `entropy` (Fig. 7
bottom). Matplotlib and polars are imported inside the functions so `plc --help` stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from plc.errors import PlcError
from plc.onset import (
    PAPER_PROBE_AFTER,
    assess_onset,
    collect_onsets,
    expand_inputs,
    fit_model,
    format_count,
    probe_series,
    read_probes,
    split_inputs,
)
from plc.store import CYCLE

if TYPE_CHECKING:
    import polars as pl
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

KINDS = ("auc", "probing", "onset", "correlates", "dormant-layers", "entropy")
FORMATS = (".png", ".svg", ".pdf")
CORRELATES = (
    ("param_abs_mean", "average |θ|"),
    ("dormant_pct", "dormant MLP units (%)"),
    ("lazy_pct", "lazy heads (%)"),
    ("collapsed_pct", "collapsed heads (%)"),
)
MODEL_STYLE = {"linear": ":", "linlog": "-.", "exp": (0, (5, 2)), "loglog": "-"}
MODEL_NAME = {"linear": "linear", "linlog": "linear-log", "exp": "exponential", "loglog": "log-log"}


@dataclass
class PlotResult:
    path: str
    kind: str
    runs: list[str]
    notes: list[str] = field(default_factory=list)


def plot(
    kind: str,
    inputs: Iterable[str | Path],
    out: str | Path,
    *,
    x: str = "cycle",
    normalize: str = "first",
    probe_after: Sequence[str] | None | str = "default",
    window: int = 3,
    models: Sequence[str] = ("loglog",),
    layer: int | None = None,
    force: bool = False,
) -> PlotResult:
    """`plc plot KIND`: draw one figure of the paper from metric files (or an onset table)."""
    from plc.store import check_output

    if kind not in KINDS:
        raise PlcError(f"unknown plot kind {kind!r}; choose from {', '.join(KINDS)}")
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise PlcError(f"--out must end in {', '.join(FORMATS)} (got {out.name})")
    if x not in ("cycle", "tokens"):
        raise PlcError(f"--x must be cycle or tokens, not {x!r}")
    check_output(out, force)
    if probe_after == "default":  # Fig. 2 plots every probe; App. B's onset uses zh, de, ru
        probe_after = None if kind == "auc" else PAPER_PROBE_AFTER
    paths = expand_inputs(inputs)
    plt = _pyplot()
    if kind == "onset":
        fig, runs, notes = _onset(plt, paths, models, normalize, probe_after, window)
    else:
        metric_files, table = split_inputs(paths)
        if table is not None:
            raise PlcError(f"plot {kind} reads metric files; an onset table only feeds plot onset")
        if kind == "auc":
            fig, runs, notes = _auc(plt, read_probes(metric_files), x, probe_after)
        elif kind == "probing":
            fig, runs, notes = _probing(
                plt, read_probes(metric_files), normalize, probe_after, window
            )
        else:
            diag = _read_diagnose(metric_files)
            if kind == "correlates":
                onsets, notes = _onsets(metric_files, normalize, probe_after, window)
                fig, runs = _correlates(plt, diag, onsets)
            elif kind == "dormant-layers":
                (fig, runs), notes = _dormant_layers(plt, diag), []
            else:
                fig, runs, notes = _entropy(plt, diag, layer)
    _save(plt, fig, out, force)
    return PlotResult(str(out), kind, runs, notes)


# ---------------------------------------------------------------------------------- helpers


def _line_per(ax, plt, rows, column: str) -> int:
    """One line per layer (or head): its mean value at each task, against cycles; how many lines."""
    import polars as pl

    keys = sorted(set(rows[column].to_list()))
    for key, color in zip(keys, _colors(plt, len(keys)), strict=True):
        k = (
            rows.filter(pl.col(column) == key)
            .group_by("task_index")
            .agg(pl.col("value").mean())
            .sort("task_index")
        )
        x = _cycles(k["task_index"].to_list())
        ax.plot(x, k["value"], marker="o", ms=2.5, color=color, label=f"{column} {key}")
    return len(keys)


def _whole_cycles(ax) -> None:
    """Integer ticks: diagnostics are taken at the end of whole cycles."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig: Figure, out: Path, force: bool) -> None:
    from plc.store import atomic_path

    fig.tight_layout()
    with atomic_path(out, force) as tmp:
        fig.savefig(tmp, format=out.suffix.lower().lstrip("."), dpi=150)
    plt.close(fig)


def _grid(plt, n: int, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list[Axes]]:
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _colors(plt, n: int) -> list[Any]:
    """One colour per model size, small to large along a sequential map (as Fig. 2)."""
    cmap = plt.get_cmap("viridis")
    return [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]


def _labels(runs: Sequence[tuple[str, str]]) -> list[str]:
    """Size names, with the run id where one size has several runs."""
    sizes = [size for size, _ in runs]
    return [(size or run) if sizes.count(size) == 1 else f"{size} ({run})" for size, run in runs]


def _cycles(task_index: Sequence[int]) -> np.ndarray:
    return np.asarray(task_index, dtype=float) / len(CYCLE)


def _count_axis(axis) -> None:
    """Ticks as 10M, 100M, 1.8T rather than powers of ten (tokens, parameters)."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: format_count(v) if v else "0"))


def _plain_log_axis(axis) -> None:
    """Log ticks labelled 5, 10, 20, 50, 100 (tasks read better than 10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


# ------------------------------------------------------------------------------------ kinds


def _auc(plt, probes: pl.DataFrame, x: str, probe_after):
    """Fig. 2 / Fig. 4: % change of probe AUC relative to the first probe, one line per size."""
    series = probe_series(probes, "first", probe_after)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    labels = _labels([(s.size, s.run_id) for s in series])
    for s, label, color in zip(series, labels, _colors(plt, len(series)), strict=True):
        xs = s.tokens_seen if x == "tokens" else _cycles(s.task_index)
        ax.plot(xs, s.value, marker="o", ms=3, lw=1.5, color=color, label=label)
    ax.axhline(0.0, color="0.4", lw=0.8, ls="--")
    if x == "tokens":
        ax.set_xlabel("Training tokens")
        _count_axis(ax.xaxis)
    else:
        ax.set_xlabel("Cycle")
    ax.set_ylabel("% change in AUC relative to the first end-of-cycle probe")
    ax.set_title("Probe AUC over training")
    ax.legend(title="model size", fontsize=8, title_fontsize=9, ncol=2 if len(series) > 6 else 1)
    ax.grid(alpha=0.3)
    return fig, [s.run_id for s in series], []


def _probing(plt, probes: pl.DataFrame, normalize: str, probe_after, window: int):
    """Fig. 9: normalised AUC per probe, its moving average and the onset, one panel per run."""
    series = probe_series(probes, normalize, probe_after)
    evidence = [assess_onset(s, window) for s in series]
    fig, axes = _grid(plt, len(series))
    for s, ev, ax, label in zip(
        series, evidence, axes, _labels([(s.size, s.run_id) for s in series]), strict=True
    ):
        ax.plot(s.task_index, s.value, color="tab:blue", marker="o", ms=3, lw=1, label="probe")
        smooth = np.array([np.nan if v is None else v for v in s.smoothed])
        ax.plot(s.task_index, smooth, color="orange", lw=2, label=f"moving average ({window})")
        i = s.task_index.index(s.onset)
        if ev.detected:
            ax.plot(
                s.onset,
                smooth[i],
                "o",
                color="red",
                ms=8,
                zorder=5,
                label=f"onset: task {s.onset} [{ev.onset_lo:g}, {ev.onset_hi:g}]",
            )
        else:
            ax.plot(
                s.onset,
                smooth[i],
                "o",
                mfc="none",
                color="0.4",
                ms=8,
                zorder=5,
                label=f"minimum: task {s.onset}, no onset detected",
            )
        ax.set_title(label)
        ax.set_xlabel("Task")
        ax.set_ylabel(
            "AUC / AUC of probe language alone" if normalize == "alone" else "% change in AUC"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig, [s.run_id for s in series], []


def _onset(plt, paths, models, normalize, probe_after, window):
    """Fig. 3 / Fig. 10: onset vs model size on log-log axes with the fitted curve(s); each onset
    with its interval, and runs with no onset detected as open markers at their minimum."""
    every, _ = collect_onsets(paths, normalize, probe_after, window)
    runs = [r for r in every if r.onset is not None]
    missing = [r for r in every if r.onset is None and r.minimum_task is not None]
    shown = runs + missing
    p = np.array([r.n_params for r in shown], dtype=float)
    t = np.array([r.fit_value for r in shown], dtype=float)
    if not shown or (p <= 0).any() or (t <= 0).any():
        raise PlcError("plot onset uses log axes; every n_params and onset must be positive")
    notes = []
    if missing:
        notes.append(f"no onset detected: {', '.join(r.run_id or r.size for r in missing)}")
    try:
        fits = [fit_model(m, [r.n_params for r in runs], [r.onset for r in runs]) for m in models]
    except PlcError as e:
        if not missing:
            raise
        fits = []
        notes.append(f"no fit: {e}")
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for group, style in ((runs, {"color": "black"}), (missing, {"mfc": "none", "color": "0.5"})):
        if not group:
            continue
        x = np.array([r.n_params for r in group], dtype=float)
        y = np.array([r.fit_value for r in group], dtype=float)
        lo = np.array([r.fit_value if r.onset_lo is None else r.onset_lo for r in group])
        hi = np.array([r.fit_value if r.onset_hi is None else r.onset_hi for r in group])
        label = "observed onset" if group is runs else "no onset detected (smoothed minimum)"
        ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o", capsize=3, zorder=5, label=label, **style)
        for r in group:
            ax.annotate(
                r.size,
                (r.n_params, r.fit_value),
                textcoords="offset points",
                xytext=(5, -10),
                fontsize=8,
            )
    grid = np.geomspace(p.min() / 1.5, p.max() * 1.5, 200)
    colors = {
        "linear": "tab:green",
        "linlog": "tab:purple",
        "exp": "tab:orange",
        "loglog": "tab:red",
    }
    for f in fits:
        y = f.predict(grid)
        y = np.where(y > 0, y, np.nan)  # a linear form can dip below zero: no log for it
        ax.plot(
            grid,
            y,
            ls=MODEL_STYLE[f.model],
            color=colors[f.model],
            lw=2,
            label=f"{MODEL_NAME[f.model]}: {f.law} (R²={f.r2:.3f})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(t.min() / 2, t.max() * 3)
    _count_axis(ax.xaxis)
    _plain_log_axis(ax.yaxis)
    ax.set_xlabel("Model size (non-embedding parameters)")
    ax.set_ylabel("Onset of plasticity loss (task)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig, [r.run_id or r.size for r in shown], notes


def _read_diagnose(metric_files) -> pl.DataFrame:
    from plc.store import read_metrics

    df = read_metrics(metric_files, "diagnose")
    if df.height == 0:
        kinds = sorted(set(read_metrics(metric_files)["kind"].unique().to_list()))
        raise PlcError(
            "no diagnose rows in the input metric files (they hold "
            + (", ".join(kinds) or "no rows")
            + "); run plc diagnose first"
        )
    return df


def _onsets(metric_files, normalize, probe_after, window) -> tuple[dict[str, int], list[str]]:
    """Onset task per run where probe metrics allow one; the others only get a note."""
    import polars as pl

    from plc.store import read_metrics

    probes = read_metrics(metric_files, "probe")
    onsets: dict[str, int] = {}
    notes: list[str] = []
    if probes.height == 0:
        return onsets, ["no probe rows: no onset marked"]
    for run_id in sorted(set(probes["run_id"].to_list())):
        try:
            (s,) = probe_series(probes.filter(pl.col("run_id") == run_id), normalize, probe_after)
            ev = assess_onset(s, window)
        except PlcError as e:
            notes.append(f"no onset marked: {e}")
            continue
        if ev.detected:
            onsets[run_id] = ev.minimum_task
        else:
            notes.append(f"no onset marked for {run_id}: no onset detected ({ev.no_onset})")
    return onsets, notes


def _runs(diag: pl.DataFrame) -> list[tuple[str, str, int]]:
    """(run_id, size, n_params) of the runs in the rows, small to large."""
    runs = diag.select("run_id", "size", "n_params").unique().sort("n_params", "run_id")
    return [(r["run_id"], r["size"], r["n_params"]) for r in runs.iter_rows(named=True)]


def _correlates(plt, diag: pl.DataFrame, onsets: dict[str, int]):
    """Fig. 5 / 7 top / 11: whole-model correlates vs cycle with the onset marked in red."""
    import polars as pl

    whole = diag.filter(pl.col("layer").is_null() & pl.col("head").is_null())
    present = [(m, label) for m, label in CORRELATES if whole.filter(pl.col("metric") == m).height]
    if not present:
        raise PlcError(
            "no whole-model correlates in the diagnose rows (param_abs_mean, dormant_pct, "
            "lazy_pct, collapsed_pct)"
        )
    runs = _runs(whole)
    labels = _labels([(size, run) for run, size, _ in runs])
    colors = _colors(plt, len(runs))
    fig, axes = _grid(plt, len(present), width=4.8, height=3.4)
    if len(present) == 4:  # a 2×2 block reads better than 3 + 1
        plt.close(fig)
        fig, grid = plt.subplots(2, 2, figsize=(10, 7))
        axes = list(grid.flat)
    for (metric, ylabel), ax in zip(present, axes, strict=True):
        marks = []
        rows = whole.filter(pl.col("metric") == metric)
        for (run_id, _, _), label, color in zip(runs, labels, colors, strict=True):
            r = (
                rows.filter(pl.col("run_id") == run_id)
                .group_by("task_index")
                .agg(pl.col("value").mean())
                .sort("task_index")
            )
            if r.height == 0:
                continue
            xs, ys = _cycles(r["task_index"].to_list()), r["value"].to_numpy()
            ax.plot(xs, ys, marker="o", ms=3, color=color, label=label)
            if run_id in onsets:  # the probe nearest the onset, as the paper's red marker
                i = int(np.argmin(np.abs(xs - onsets[run_id] / len(CYCLE))))
                marks.append((xs[i], ys[i]))
        if marks:
            mx, my = zip(*marks, strict=True)
            ax.plot(mx, my, "o", color="red", ms=8, zorder=5, label="onset of plasticity loss")
        ax.set_xlabel("Cycle")
        _whole_cycles(ax)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig, [r[0] for r in runs]


def _dormant_layers(plt, diag: pl.DataFrame):
    """Fig. 6: dormant % of each MLP layer vs cycle, one panel per run."""
    import polars as pl

    rows = diag.filter((pl.col("metric") == "dormant_pct") & pl.col("layer").is_not_null())
    if rows.height == 0:
        raise PlcError("no per-layer dormant_pct rows in the diagnose metrics")
    runs = _runs(rows)
    fig, axes = _grid(plt, len(runs), width=5.5, height=4)
    for (run_id, _, _), label, ax in zip(
        runs, _labels([(s, r) for r, s, _ in runs]), axes, strict=True
    ):
        r = rows.filter(pl.col("run_id") == run_id)
        n_layers = _line_per(ax, plt, r, "layer")
        ax.set_title(label)
        ax.set_xlabel("Cycle")
        _whole_cycles(ax)
        ax.set_ylabel("dormant MLP units (%)")
        ax.grid(alpha=0.3)
        ax.legend(
            fontsize=7, ncol=2 if n_layers > 8 else 1, title="layer (0-based)", title_fontsize=7
        )
    return fig, [r[0] for r in runs]


def _entropy(plt, diag: pl.DataFrame, layer: int | None):
    """Fig. 7 bottom: entropy of each head of one layer vs cycle, lazy/collapsed bands marked."""
    import polars as pl

    rows = diag.filter((pl.col("metric") == "entropy") & pl.col("head").is_not_null())
    if rows.height == 0:
        raise PlcError("no per-head entropy rows in the diagnose metrics")
    layers = sorted(set(rows["layer"].drop_nulls().to_list()))
    if layer is None:
        layer = layers[0]
    if layer not in layers:
        raise PlcError(f"no entropy rows for layer {layer} (layers in the data: {layers})")
    rows = rows.filter(pl.col("layer") == layer)
    h_max_rows = diag.filter(pl.col("metric") == "h_max")
    runs = _runs(rows)
    fig, axes = _grid(plt, len(runs), width=5.5, height=4)
    notes = []
    for (run_id, _, _), label, ax in zip(
        runs, _labels([(s, r) for r, s, _ in runs]), axes, strict=True
    ):
        r = rows.filter(pl.col("run_id") == run_id)
        n_heads = _line_per(ax, plt, r, "head")
        h = h_max_rows.filter(pl.col("run_id") == run_id)["value"]
        if h.len():
            h_max = float(h.mean())
            ax.axhline(0.9 * h_max, color="tab:red", ls="--", lw=1, label="lazy (0.9·H_max)")
            ax.axhline(0.1 * h_max, color="tab:blue", ls="--", lw=1, label="collapsed (0.1·H_max)")
            ax.set_ylim(0, 1.05 * h_max)
        else:
            notes.append(f"run {run_id}: no h_max rows, lazy/collapsed thresholds not drawn")
        ax.set_title(f"{label}, layer {layer} (0-based)")
        ax.set_xlabel("Cycle")
        _whole_cycles(ax)
        ax.set_ylabel("attention entropy (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if n_heads > 6 else 1)
    return fig, [r[0] for r in runs], notes
