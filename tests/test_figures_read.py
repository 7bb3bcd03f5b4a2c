"""What a reader of the figures needs from what is drawn: the correlates' title, percentages
from 0, every size visible where values coincide, log ticks in one style."""

from __future__ import annotations

import re

import polars as pl
from test_onset import write_run
from test_plot import write_diagnose

from plc.plot import CORRELATES, build_figure
from plc.store import write_metrics

RUNS = (("a", "5M", 4_932_480, 10), ("b", "27M", 27_922_752, 18), ("c", "106M", 106_101_632, 26))


def _study(folder, lazy_zero: bool = False):
    for run_id, size, n_params, onset in RUNS:
        write_run(folder, run_id, size, n_params, onset, cycles=5)
        write_diagnose(folder, run_id, size, n_params)
    if lazy_zero:  # no lazy head in any run, as in the demo: three lines on 0 %
        for path in folder.glob("diagnose-*.parquet"):
            df = pl.read_parquet(path)
            lazy = pl.col("metric") == "lazy_pct"
            write_metrics(
                path, df.with_columns(value=pl.when(lazy).then(0.0).otherwise("value")), True
            )
    return [str(folder / "*.parquet")]


def test_correlates_have_a_title_percentages_from_zero_and_every_size_visible(tmp_path):
    fig = build_figure("correlates", _study(tmp_path / "m", lazy_zero=True)).figure
    assert fig.get_suptitle() == "Correlates of plasticity loss over training"
    panels = {ax.get_ylabel(): ax for ax in fig.axes}
    written = set(pl.read_parquet(next((tmp_path / "m").glob("diagnose-*.parquet")))["metric"])
    # A panel for each measure the diagnose files hold (these: the paper's four), in one order.
    assert list(panels) == [label for m, label in CORRELATES if m in written]
    assert len(panels) == 4
    for label, ax in panels.items():
        if label.endswith("(%)"):
            assert ax.get_ylim()[0] == 0, label  # no negative percentages
    lazy = panels["lazy heads (%)"]
    assert lazy.get_ylim() == (0, 1.0)  # all 0 %: the floor, not −0.04…0.04
    runs = [ln for ln in lazy.get_lines() if ln.get_label() in ("5M", "27M", "106M")]
    assert len(runs) == 3 and all(list(ln.get_ydata()) == [0.0] * 5 for ln in runs)
    # Lines on the same values: each size still shows, by its marker and line style (open
    # markers, unclipped at the 0 % floor).
    assert len({(ln.get_marker(), ln.get_linestyle()) for ln in runs}) == 3
    assert all(ln.get_markerfacecolor() == "none" and not ln.get_clip_on() for ln in runs)


def test_the_onset_figure_labels_its_log_ticks_in_one_plain_style(tmp_path):
    files = _study(tmp_path / "m")
    for models in (["loglog"], ["linear", "linlog", "exp", "loglog"]):
        (ax,) = build_figure("onset", files, models=models).figure.axes
        ax.figure.canvas.draw()
        shown = [t.get_text() for t in ax.yaxis.get_ticklabels(which="both") if t.get_text()]
        assert shown and all(re.fullmatch(r"\d+(\.\d+)?", t) for t in shown), shown
        assert not [t for t in ax.yaxis.get_ticklabels(minor=True) if t.get_text()]


def test_runs_with_the_same_reason_for_no_onset_get_one_note(tmp_path):
    folder = tmp_path / "m"
    for run_id, size, n_params, _ in RUNS:  # AUC still falling at the last probe in each
        write_run(folder, run_id, size, n_params, 24, cycles=3)
        write_diagnose(folder, run_id, size, n_params, cycles=3)
    (note,) = build_figure("correlates", [str(folder / "*.parquet")]).notes
    assert note.startswith("no onset marked for a, b, c: no onset detected (no onset yet: still")
