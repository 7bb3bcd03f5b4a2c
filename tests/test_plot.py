"""plc.plot and `plc plot`: what each figure kind draws, from small synthetic metric files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import assert_bad_input, run_plc
from test_onset import TABLE_IV, write_probe, write_run, write_table_iv

from plc.errors import PlcError
from plc.onset import (
    find_onset,
    fit_model,
    probe_series,
    read_probes,
)
from plc.plot import (
    CORRELATES,
    DRAW,
    KINDS,
    MODEL_NAME,
    ONSET_LABEL,
    Drawn,
    PlotOptions,
    build_figure,
    plot,
)
from plc.protocol import PAPER_PROBE_AFTER, PLOT_KINDS, cycle_of
from plc.store import metric_path, metric_schema, write_metrics
from plc.study import judge_inputs

DIAGNOSE_SCHEMA = metric_schema("diagnose")
H_MAX = 6.9215
SIZES = ["5M", "27M", "106M"]  # the fixture's runs a, b, c, small to large


def write_diagnose(
    folder: Path,
    run_id: str,
    size: str,
    n_params: int,
    cycles=4,
    layers=2,
    heads=2,
    drop=(),
    measures=False,
):
    """Diagnose files at the end of each cycle, with the rows plc diagnose writes (less `drop`).

    Values: param_abs_mean 0.02 + 0.001·c, dormant_pct of layer l c·(l + 1), entropy of head h of
    layer l 1 + 0.5·c + h + l, whole-model dormant 1.5·c, lazy 5·c, collapsed 2·c at cycle c;
    with `measures` the newer ones too: perturb_loss_increase 0.1·c, init_distance 3·c,
    last_hidden_norm 8 + c, last_hidden_var 1 − 0.1·c.
    """
    for c in range(cycles + 1):
        task = 8 * c
        rows = []

        def add(metric, value, layer=None, head=None, task=task, rows=rows):
            if metric in drop:
                return
            rows.append(
                {
                    "kind": "diagnose",
                    "run_id": run_id,
                    "size": size,
                    "n_params": n_params,
                    "task_index": task,
                    "cycle": cycle_of(task),
                    "lang": "ru" if task else "",
                    "metric": metric,
                    "layer": layer,
                    "head": head,
                    "value": float(value),
                }
            )

        add("param_abs_mean", 0.02 + 0.001 * c)
        for layer in range(layers):
            add("dormant_pct", c * (layer + 1), layer)
            for head in range(heads):
                add("entropy", 1.0 + 0.5 * c + head + layer, layer, head)
        add("dormant_pct", 1.5 * c)
        add("h_max", H_MAX)
        add("lazy_pct", 5.0 * c)
        add("collapsed_pct", 2.0 * c)
        if measures:
            add("perturb_loss_increase", 0.1 * c)
            add("perturb_sigma", 1.0)  # a setting, not a correlate: not drawn
            add("init_distance", 3.0 * c)
            add("last_hidden_norm", 8.0 + c)
            add("last_hidden_var", 1.0 - 0.1 * c)
        df = pl.DataFrame(rows, schema=DIAGNOSE_SCHEMA)
        write_metrics(metric_path(folder, "diagnose", run_id, task, "ru" if task else ""), df)


@pytest.fixture(scope="module")
def metrics(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plot") / "metrics"
    for run_id, size, n_params, onset in (
        ("a", "5M", 4_932_480, 10),
        ("b", "27M", 27_922_752, 18),
        ("c", "106M", 106_101_632, 26),
    ):
        write_run(folder, run_id, size, n_params, onset, cycles=5)  # 26 needs 5 cycles to rise
        write_diagnose(folder, run_id, size, n_params)
    return folder


@pytest.fixture(scope="module")
def files(metrics) -> list[str]:
    return [str(metrics / "*.parquet")]


@pytest.fixture(scope="module")
def series(metrics):
    """The fixture's probe series with their onsets, as plc.onset computes them (App. B filter)."""
    probes = read_probes(sorted(metrics.glob("probe-*.parquet")))
    return [find_onset(s, 3) for s in probe_series(probes, "first", PAPER_PROBE_AFTER)]


def legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def line(ax, label: str):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return found


def grid_shape(ax) -> tuple[int, int]:
    return ax.get_subplotspec().get_geometry()[:2]


# --------------------------------------------------------------------------- the kind table


def test_every_kind_is_one_drawing_function_into_a_bare_figure(metrics):
    from matplotlib.figure import Figure

    assert KINDS == PLOT_KINDS  # the kinds plans draw are the kinds plot has
    paths = sorted(metrics.glob("*.parquet"))
    for kind, draw in DRAW.items():
        fig = Figure()
        drawn = draw(fig, paths, PlotOptions())
        assert isinstance(drawn, Drawn) and drawn.notes == [], kind
        assert sorted(drawn.runs) == ["a", "b", "c"] and fig.axes, kind
        # Every panel holds data: lines or marked points, none of them empty.
        for ax in fig.axes:
            data = [ln for ln in ax.get_lines() if len(ln.get_xdata())] + list(ax.containers)
            assert data, (kind, ax.get_title())


def _saved(drawing):
    """A drawing as plot saves it: PNG at 150 dpi, in memory."""
    import io

    buffer = io.BytesIO()
    drawing.figure.savefig(buffer, format="png", dpi=150)
    buffer.seek(0)
    return buffer


def _pixels(source) -> np.ndarray:
    from matplotlib.image import imread

    return imread(source, format="png")


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_saves_the_figure_it_draws(kind, files, tmp_path):
    """The PNG plot writes is the figure build_figure draws (whose content the tests below
    check), pixel for pixel, at 150 dpi; written through a temporary name."""
    out = tmp_path / f"{kind}.png"
    res = plot(kind, files, out)
    assert Path(res.path) == out and sorted(res.runs) == ["a", "b", "c"]
    drawing = build_figure(kind, files)
    saved, drawn = _pixels(out), _pixels(_saved(drawing))
    width, height = drawing.figure.get_size_inches() * 150
    assert saved.shape[:2] == (round(height), round(width))
    assert np.array_equal(saved, drawn) and saved.std() > 0  # not a blank canvas
    assert not list(tmp_path.glob(".*.tmp"))


def test_plot_builds_in_no_pyplot_state():
    """The object-oriented API: drawing and saving register no figure with pyplot (no pyplot)."""
    code = (
        "import sys; sys.path.insert(0, 'tests');"
        "from test_plot import write_diagnose; from plc.plot import build_figure;"
        "import tempfile, pathlib; d = pathlib.Path(tempfile.mkdtemp());"
        "write_diagnose(d, 'a', '5M', 4_932_480);"
        "f = build_figure('dormant-layers', [str(d / '*.parquet')]).figure;"
        "f.savefig(d / 'x.png'); print(len(f.axes), 'matplotlib.pyplot' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.split() == ["1", "False"]


# ------------------------------------------------------------------------- what is drawn


def test_auc_draws_one_line_per_run_with_its_normalised_probes(files, metrics):
    d = build_figure("auc", files)
    (ax,) = d.figure.axes
    every_probe = probe_series(read_probes(sorted(metrics.glob("probe-*.parquet"))), "first", None)
    assert len(ax.get_lines()) == 3 + 1  # a line per run and the zero line
    assert legend(ax) == SIZES and ax.get_legend().get_title().get_text() == "model size"
    for s, size in zip(every_probe, SIZES, strict=True):
        drawn = line(ax, size)
        np.testing.assert_allclose(drawn.get_xdata(), np.array(s.task_index) / 8)
        np.testing.assert_allclose(drawn.get_ydata(), s.value)
        # Eq. 1 is relative to the first end-of-cycle (ru) probe, not the first of a dense series.
        first_ru = [t % 8 for t in s.task_index].index(0)
        assert drawn.get_ydata()[first_ru] == 0.0
    assert ax.get_xlabel() == "Cycle"
    assert ax.get_ylabel() == "% change in AUC relative to the first end-of-cycle probe"
    # Fig. 4: against tokens, here only the probes after ru.
    (ax,) = build_figure("auc", files, x="tokens", probe_after=["ru"]).figure.axes
    ru = probe_series(read_probes(sorted(metrics.glob("probe-*.parquet"))), "first", ["ru"])
    assert ax.get_xlabel() == "Training tokens"
    for s, size in zip(ru, SIZES, strict=True):
        assert list(line(ax, size).get_xdata()) == s.tokens_seen
        assert set(s.lang) == {"ru"} and len(s.tokens_seen) == 5  # five cycles
    # Against the task index (cycles not of eight: the control's chains, a custom --cycle).
    (ax,) = build_figure("auc", files, x="task").figure.axes
    assert ax.get_xlabel() == "Task"
    for s, size in zip(every_probe, SIZES, strict=True):
        assert list(line(ax, size).get_xdata()) == s.task_index


def error_bars(container) -> list[tuple[float, float]]:
    """The (low, high) ends of each error bar of an errorbar container, along its bars."""
    (bars,) = container.lines[2]
    return [tuple(sorted(seg[:, i])) for seg in bars.get_segments() for i in [_axis(seg)]]


def _axis(seg) -> int:
    return 0 if seg[0, 1] == seg[1, 1] else 1  # horizontal bars vary in x


def test_probing_marks_the_studys_verdict_inside_its_interval(files, series):
    d = build_figure("probing", files)
    assert len(d.figure.axes) == 3 and d.runs == ["a", "b", "c"]
    judged = judge_inputs(files)
    for ax, s, size in zip(d.figure.axes, series, SIZES, strict=True):
        assert ax.get_title() == size
        r = judged.of(s.run_id)
        task, lo, hi = r.drawn
        assert lo <= task <= hi and r.verdict == "onset"
        mark = f"onset: task {task:g} [{lo:g}, {hi:g}], p = {r.p_value:.3f}"
        assert legend(ax) == ["probe", "moving average (3)", mark]
        (bar,) = ax.containers  # the onset, red, with its interval as a horizontal bar
        point = bar.lines[0]
        assert list(point.get_xdata()) == [task] and point.get_color() == "red"
        assert list(point.get_ydata()) == pytest.approx([s.value[s.task_index.index(task)]])
        assert error_bars(bar) == [(lo, hi)]
        smooth = line(ax, "moving average (3)").get_ydata()
        assert np.isnan(smooth[0]) and np.isnan(smooth[-1])  # no half-empty windows
        np.testing.assert_allclose(smooth[1:-1], s.smoothed[1:-1])
        assert list(line(ax, "probe").get_xdata()) == s.task_index
        assert ax.get_xlabel() == "Task"
        assert ax.get_ylabel() == f"% change in AUC vs the probe at task {s.baseline_task}"
    (ax, *_) = build_figure("probing", files, normalize="alone", window=5).figure.axes
    assert ax.get_ylabel() == "AUC / AUC of probe language alone"
    assert legend(ax)[1] == "moving average (5)"


def fit_lines(ax):
    """The fitted curves of an onset figure (not the onsets' marker lines)."""
    return [ln for ln in ax.get_lines() if ln.get_label().split(":")[0] in MODEL_NAME.values()]


def test_onset_scatter_is_the_collected_onsets_and_one_curve_per_fit(files, metrics, tmp_path):
    (ax,) = build_figure("onset", files).figure.axes
    every = judge_inputs(sorted(metrics.glob("*.parquet"))).runs
    runs = [r for r in every if r.onset is not None]
    assert len(runs) == 3  # the fixture's onsets are all detected
    (bars,) = ax.containers  # each onset with its interval
    drawn = bars.lines[0]
    points = np.column_stack([drawn.get_xdata(), drawn.get_ydata()])
    np.testing.assert_allclose(points, [(r.n_params, r.onset) for r in runs])
    (curve,) = fit_lines(ax)
    law = fit_model("loglog", [r.n_params for r in runs], [r.onset for r in runs]).law
    assert curve.get_label().startswith(f"log-log: {law} (R²=")
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert ax.get_ylabel() == "Onset of plasticity loss (task)"
    assert [t.get_text() for t in ax.texts] == SIZES  # each point named by its size
    # Fig. 10: Table IV with the four fits.
    models = ["linear", "linlog", "exp", "loglog"]
    d = build_figure("onset", [write_table_iv(tmp_path / "t4.csv")], models=models)
    (ax,) = d.figure.axes
    drawn = ax.containers[0].lines[0]
    points = np.column_stack([drawn.get_xdata(), drawn.get_ydata()])
    np.testing.assert_allclose(points, [(p, t) for _, p, t in TABLE_IV])
    assert [ln.get_label().split(":")[0] for ln in fit_lines(ax)] == [MODEL_NAME[m] for m in models]
    loglog = fit_lines(ax)[-1]
    p = np.asarray(loglog.get_xdata())
    np.testing.assert_allclose(loglog.get_ydata(), np.exp(-11.2501) * p**0.8269, rtol=1e-3)
    assert d.runs == [s for s, _, _ in TABLE_IV]


def test_correlates_four_panels_and_the_onset_at_the_nearest_diagnosis(files, series):
    d = build_figure("correlates", files)
    axes = d.figure.axes
    assert len(axes) == 4 and all(grid_shape(ax) == (2, 2) for ax in axes)
    assert [ax.get_ylabel() for ax in axes] == [label for _, label in CORRELATES[:4]]
    assert legend(axes[0]) == [*SIZES, ONSET_LABEL]
    # Diagnoses at the end of cycles 0..4: the marker sits on the one nearest onset / 8.
    nearest = [round(s.onset / 8) for s in series]
    assert nearest == [1, 2, 3]
    for ax, slope in zip(axes, (0.001, 1.5, 5.0, 2.0), strict=True):
        assert len(ax.get_lines()) == 3 + 1 and ax.get_xlabel() == "Cycle"
        marker = line(ax, ONSET_LABEL)
        assert list(marker.get_xdata()) == nearest
        offset = 0.02 if slope == 0.001 else 0.0
        np.testing.assert_allclose(marker.get_ydata(), [offset + slope * c for c in nearest])
        np.testing.assert_allclose(line(ax, "5M").get_xdata(), [0, 1, 2, 3, 4])
    # Against tasks (the control's chains): the same points at 8 × the cycle, the same marker.
    for ax in build_figure("correlates", files, x="task").figure.axes:
        assert ax.get_xlabel() == "Task"
        np.testing.assert_allclose(line(ax, "5M").get_xdata(), [0, 8, 16, 24, 32])
        assert list(line(ax, ONSET_LABEL).get_xdata()) == [8 * c for c in nearest]


def test_correlates_draw_only_the_metrics_present_and_no_onset_without_probes(tmp_path):
    folder = tmp_path / "m"
    write_diagnose(folder, "a", "5M", 4_932_480, drop=("collapsed_pct",))
    d = build_figure("correlates", [str(folder / "*.parquet")])
    assert d.notes == ["no probe rows: no onset marked"]
    assert [grid_shape(ax) for ax in d.figure.axes] == [(1, 3)] * 3
    assert [ax.get_ylabel() for ax in d.figure.axes] == [label for _, label in CORRELATES[:3]]
    assert all(len(ax.get_lines()) == 1 for ax in d.figure.axes)  # the run, no marker
    out = tmp_path / "c.png"
    assert plot("correlates", [str(folder / "*.parquet")], out).notes == d.notes
    assert np.array_equal(_pixels(out), _pixels(_saved(d)))


def test_correlates_draw_the_newer_measures_where_diagnose_wrote_them(tmp_path):
    folder = tmp_path / "m"
    write_diagnose(folder, "a", "5M", 4_932_480, measures=True)
    axes = build_figure("correlates", [str(folder / "*.parquet")]).figure.axes
    assert [ax.get_ylabel() for ax in axes] == [label for _, label in CORRELATES]
    assert len(axes) == 8 and all(grid_shape(ax) == (3, 3) for ax in axes)
    drawn = {ax.get_ylabel(): ax.get_lines()[0] for ax in axes}
    cycles = np.arange(5.0)
    for metric, expected in (
        ("perturb_loss_increase", 0.1 * cycles),
        ("init_distance", 3.0 * cycles),
        ("last_hidden_norm", 8.0 + cycles),
        ("last_hidden_var", 1.0 - 0.1 * cycles),
    ):
        label = dict(CORRELATES)[metric]
        np.testing.assert_allclose(drawn[label].get_xdata(), cycles)
        np.testing.assert_allclose(drawn[label].get_ydata(), expected)


def test_dormant_layers_one_panel_per_run_one_line_per_layer(files):
    d = build_figure("dormant-layers", files)
    assert [ax.get_title() for ax in d.figure.axes] == SIZES
    for ax in d.figure.axes:
        assert legend(ax) == ["layer 0", "layer 1"] and len(ax.get_lines()) == 2
        assert ax.get_ylabel() == "dormant MLP units (%)"
        for layer in (0, 1):
            drawn = line(ax, f"layer {layer}")
            np.testing.assert_allclose(drawn.get_xdata(), [0, 1, 2, 3, 4])
            np.testing.assert_allclose(drawn.get_ydata(), [c * (layer + 1) for c in range(5)])
    for ax in build_figure("dormant-layers", files, x="task").figure.axes:
        assert ax.get_xlabel() == "Task"
        np.testing.assert_allclose(line(ax, "layer 0").get_xdata(), [0, 8, 16, 24, 32])


def test_entropy_one_line_per_head_of_the_chosen_layer_and_the_bands(files, tmp_path):
    d = build_figure("entropy", files, layer=1)
    assert d.notes == []
    for ax, size in zip(d.figure.axes, SIZES, strict=True):
        assert ax.get_title() == f"{size}, layer 1 (0-based)"
        assert legend(ax) == ["head 0", "head 1", "lazy (0.9·H_max)", "collapsed (0.1·H_max)"]
        for head in (0, 1):
            ys = line(ax, f"head {head}").get_ydata()
            np.testing.assert_allclose(ys, [2.0 + 0.5 * c + head for c in range(5)])
        assert line(ax, "lazy (0.9·H_max)").get_ydata()[0] == pytest.approx(0.9 * H_MAX)
        assert line(ax, "collapsed (0.1·H_max)").get_ydata()[0] == pytest.approx(0.1 * H_MAX)
        assert ax.get_ylim() == pytest.approx((0, 1.05 * H_MAX))
    # The first layer by default; without h_max rows the bands are left out with a note.
    folder = tmp_path / "m"
    write_diagnose(folder, "a", "5M", 4_932_480, drop=("h_max",))
    d = build_figure("entropy", [str(folder / "*.parquet")])
    (ax,) = d.figure.axes
    assert ax.get_title() == "5M, layer 0 (0-based)" and legend(ax) == ["head 0", "head 1"]
    assert d.notes == ["run a: no h_max rows, lazy/collapsed thresholds not drawn"]
    with pytest.raises(
        PlcError, match=r"no entropy rows for layer 7 \(layers in the data: \[0, 1\]\)"
    ):
        build_figure("entropy", files, layer=7)


def test_two_runs_of_one_size_are_told_apart(tmp_path):
    folder = tmp_path / "m"
    for run_id in ("s0", "s1"):
        write_diagnose(folder, run_id, "5M", 4_932_480)
    d = build_figure("correlates", [str(folder / "*.parquet")])
    assert legend(d.figure.axes[0]) == ["5M (s0)", "5M (s1)"]


# ------------------------------------------------------------------- files and bad input


def test_svg_and_pdf_by_suffix(files, tmp_path):
    res = plot("onset", [write_table_iv(tmp_path / "t4.csv")], tmp_path / "fig10.svg")
    svg = Path(res.path).read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert len(res.runs) == len(TABLE_IV)
    res = plot("auc", files, tmp_path / "fig4.pdf", x="tokens")
    assert Path(res.path).read_bytes()[:5] == b"%PDF-"


def test_plot_bad_inputs(metrics, tmp_path):
    files = [str(metrics / "*.parquet")]
    with pytest.raises(PlcError, match="unknown plot kind"):
        plot("heatmap", files, tmp_path / "x.png")
    with pytest.raises(PlcError, match="must end in"):
        plot("auc", files, tmp_path / "x.jpg")
    probes_only = tmp_path / "probes"
    write_probe(probes_only, "p", "5M", 5, 8, 3.0)
    with pytest.raises(PlcError, match="no diagnose rows"):
        plot("dormant-layers", [str(probes_only / "*.parquet")], tmp_path / "x.png")
    with pytest.raises(PlcError, match="onset table only feeds plot onset"):
        plot("auc", [write_table_iv(tmp_path / "t.csv")], tmp_path / "x.png")
    (tmp_path / "exists.png").write_bytes(b"")
    with pytest.raises(PlcError, match="exists"):
        plot("auc", files, tmp_path / "exists.png")


def test_cli_plot_json_and_bad_input(metrics, tmp_path):
    out = tmp_path / "fig2.png"
    proc = run_plc("plot", "auc", str(metrics / "*.parquet"), "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["path"] == str(out)
    drawn = _saved(build_figure("auc", [str(metrics / "*.parquet")]))
    assert np.array_equal(_pixels(out), _pixels(drawn))
    assert_bad_input(
        run_plc("plot", "auc", str(tmp_path / "none" / "*.parquet"), "--out", tmp_path / "n.png"),
        "no input files match",
    )
    assert_bad_input(
        run_plc(
            "plot",
            "probing",
            str(metrics / "*.parquet"),
            "--out",
            out,
            "--force",
            "--probe-after",
            "ja",
        ),
        "no probes after ja",
    )


def test_probe_positions_default_to_the_plans_as_in_fit_onset(metrics, tmp_path):
    import shutil

    from plc.plan import build_plan, write_plan

    # The fixture's runs probe after zh, de and ru; their plan probes after ru alone.
    write_plan(
        build_plan(sizes=["nano"], cycles=2, probe_after=["ru"], out_dir="runs"),
        tmp_path / "Makefile",
    )
    shutil.copytree(metrics, tmp_path / "runs" / "metrics")
    files = sorted(str(p) for p in (tmp_path / "runs" / "metrics").glob("probe-*.parquet"))
    probes = read_probes(files)
    ru = probe_series(probes, "first", ("ru",))[0].task_index
    every = probe_series(probes, "first", PAPER_PROBE_AFTER)[0].task_index
    assert len(every) > len(ru)
    ax = build_figure("probing", files).figure.axes[0]
    assert list(line(ax, "probe").get_xdata()) == ru
    ax = build_figure("probing", files, probe_after=PAPER_PROBE_AFTER).figure.axes[0]
    assert list(line(ax, "probe").get_xdata()) == every
    # Fig. 2 plots every probe whatever the plan.
    (ax,) = build_figure("auc", files).figure.axes
    (every_probe,) = build_figure("auc", files, probe_after=None).figure.axes
    drawn = ax.get_lines()[0].get_xdata()
    assert list(drawn) == list(every_probe.get_lines()[0].get_xdata()) and len(drawn) > len(every)
