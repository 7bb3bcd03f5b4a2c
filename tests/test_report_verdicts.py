"""The report agrees with itself: one verdict per run wherever the page states one (the status
table, the onset table, the notes, the figures), captions from what the figures draw, no note
twice, every layer of every size in the entropy figures."""

from __future__ import annotations

import re

import polars as pl
from test_plot import write_diagnose
from test_report import Page, _write_study

from plc.plot import build_figure
from plc.protocol import ONSET_WINDOW as WINDOW
from plc.report import _figure_list, report
from plc.status import status

ONSET = "onset (task) [95 % interval]"


def _verdict(cell: str) -> str:
    """'6 [6, 10]', 'task 6 [6, 10]', 'onset: task 6 [6, 10]' → '6'; none, not yet, no onset
    detected → 'none'."""
    m = re.match(r"(?:onset: )?(?:task )?(\d+(?:\.\d+)?)(?: \[|$)", cell)
    return m.group(1) if m else "none"


def test_the_page_states_one_verdict_per_run(tmp_path):
    study = tmp_path / "study"
    # a, b, c: interior minima, onsets; d: its minimum is the first smoothed point (an edge, no
    # onset, though the lowest point is not the latest); e: two probes, too few to judge.
    runs = {"a": (1_000_000, 2), "b": (4_000_000, 4), "c": (16_000_000, 6), "d": (2_000_000, 0)}
    paths = _write_study(study, {**runs, "e": (8_000_000, 1, 2)})
    res = report(study, tmp_path / "r.html")
    page = Page((tmp_path / "r.html").read_text())

    stated: dict[str, set[str]] = {r: set() for r in (*runs, "e")}
    for row in page.table("run", "onset so far"):
        stated[row["run"]].add(_verdict(row["onset so far"]))
    for row in page.table("run", ONSET):
        stated[row["run"]].add(_verdict(row[ONSET]))
    for r in status(study).runs:  # plc status, as the command prints it
        stated[r.run_id].add("none" if r.onset is None else f"{r.onset:g}")
    for note in res.notes:  # "no onset marked for a, d: …", "no onset detected: d"
        for named in re.findall(r"no onset (?:marked for|detected:) ([\w, -]+)", note):
            for run in named.split(", "):
                stated[run.strip()].add("none")
    # Fig. 9 as the report draws it (e's two probes stop the figure, as fit-onset): each
    # panel's marker says onset or minimum.
    fig9 = build_figure("probing", paths[:4], probe_after=None, window=WINDOW).figure
    for ax in fig9.axes:  # titled by size, which is the run id here
        mark = [t.get_text() for t in ax.get_legend().get_texts()][-1]
        stated[ax.get_title()].add("none" if "no onset" in mark else _verdict(mark))
    # d rises from its first probe (task 8) on: an onset there, from the start (fit-onset's
    # verdict, test_report.test_onsets_fits_law_and_other_tables); e is still falling.
    assert stated == {"a": {"24"}, "b": {"40"}, "c": {"56"}, "d": {"8"}, "e": {"none"}}

    notes = [p for p in page.text if p in res.notes]
    assert len(res.notes) == len(set(res.notes)) and len(notes) == len(set(notes))


def test_captions_say_what_the_figures_draw(tmp_path):
    study = tmp_path / "study"
    _write_study(study, {"a": (1_000_000, 2), "b": (4_000_000, 4), "c": (16_000_000, 6)})
    for run, n_params in (("a", 1_000_000), ("b", 4_000_000), ("c", 16_000_000)):
        write_diagnose(study / "metrics", run, run, n_params)
    figures = report(study, tmp_path / "r.html").figures
    assert "Fig. 2: probe AUC over training: % change in AUC relative to the first probe" in figures
    assert "Fig. 3 / 10: onset against model size, 4 fit(s) of Table V" in figures
    assert "Fig. 5 / 7 / 11: correlates over training, the onset in red" in figures

    edge = tmp_path / "edge"  # one run still falling at its last probe: nothing to mark in red
    _write_study(edge, {"d": (2_000_000, 11)})
    write_diagnose(edge / "metrics", "d", "d", 2_000_000)
    figures = report(edge, tmp_path / "edge.html").figures
    assert "Fig. 5 / 7 / 11: correlates over training, no onset detected to mark" in figures

    two = tmp_path / "two"  # two onsets and a run still falling: no fit, the points drawn
    _write_study(two, {"a": (1_000_000, 3), "b": (4_000_000, 5), "d": (2_000_000, 11)})
    res = report(two, tmp_path / "two.html")
    assert "Fig. 3 / 10: onset against model size, no fit drawn" in res.figures
    assert not any("four fits" in c for c in res.figures)


def test_entropy_figures_cover_every_layer_of_every_size():
    rows = [
        {"run_id": run, "metric": "entropy", "layer": layer, "head": 0}
        for run, layers in (("nano-s0", 1), ("micro-s0", 2), ("mini-s0", 3))
        for layer in range(layers)
    ]
    figs = [(o, c) for k, o, c in _figure_list(pl.DataFrame(rows), None) if k == "entropy"]
    assert [o["layer"] for o, _ in figs] == [0, 1, 2]  # micro's last layer (1) among them
    assert [c for _, c in figs][1] == "Fig. 7 bottom: attention entropy, layer 1 (0-based)"
