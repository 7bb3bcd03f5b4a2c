"""`--by method` (plc plan --mitigation studies): fit-onset's fits per method and the figures
coloured by method, from small synthetic metric files and onset tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import assert_bad_input, cli
from matplotlib import colormaps
from matplotlib.colors import to_rgba
from test_onset import write_run
from test_plot import legend, line, write_diagnose

from plc.errors import PlcError
from plc.onset import fit_model, probe_series, read_probes
from plc.plot import BY_KINDS, KINDS, SIZE_STYLES, build_figure
from plc.study import fit_onset, judge_inputs

TAB10 = colormaps["tab10"]
SIZES = (("5M", 4_932_480), ("27M", 27_922_752), ("106M", 106_101_632))
# Each method's onsets (tasks) at the three sizes: clipping delays every one. All are probe tasks
# after zh, de or ru, so plc.onset finds them exactly.
ONSETS = {"none": (14, 22, 40), "clip1": (22, 30, 46)}


def write_method_run(folder: Path, run_id, size, n_params, onset, method, diagnose=False):
    """A run as write_run makes it, its rows labelled with `method` as plc probe and diagnose
    label them (a from-scratch probe is a never-trained copy: 'none')."""
    own = folder / run_id
    write_run(own, run_id, size, n_params, onset, cycles=8, en_probes=False)
    if diagnose:
        write_diagnose(own, run_id, size, n_params)
    for f in own.glob("*.parquet"):
        df = pl.read_parquet(f)
        scratch = pl.col("from_scratch") if "from_scratch" in df.columns else pl.lit(False)
        df.with_columns(
            pl.when(scratch).then(pl.lit("none")).otherwise(pl.lit(method)).alias("method")
        ).write_parquet(f)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("by-method")
    for method, onsets in ONSETS.items():
        for (size, n), onset in zip(SIZES, onsets, strict=True):
            tag = "" if method == "none" else f"-{method}"
            write_method_run(folder, f"{size}-s0{tag}", size, n, onset, method, diagnose=True)
    return folder


@pytest.fixture(scope="module")
def files(study) -> list[str]:
    return [str(study / "*" / "*.parquet")]


def loglog_exponent(p, t) -> float:
    return float(np.polyfit(np.log(p), np.log(t), 1)[0])


# ------------------------------------------------------------------------------- fit-onset


def test_each_method_gets_its_own_law(files):
    res = fit_onset(files, models=["loglog", "linear"], by="method")
    assert res.by == "method" and res.methods == ["none", "clip1"]
    assert {r.run_id: r.method for r in res.runs} == {
        f"{size}-s0{'' if m == 'none' else '-' + m}": m for m in ONSETS for size, _ in SIZES
    }
    assert [(r.method, r.onset) for r in res.runs if r.method == "clip1"] == [
        ("clip1", t) for t in ONSETS["clip1"]
    ]
    assert res.fits == [] and res.law is None  # the fits are the groups'
    p = [n for _, n in SIZES]
    for g, method in zip(res.groups, ONSETS, strict=True):
        assert g.method == method and g.fits_skipped is None and len(g.runs) == 3
        loglog, linear = g.fits
        assert loglog.n_points == 3 and loglog.b == pytest.approx(
            loglog_exponent(p, ONSETS[method])
        )
        assert linear.b == pytest.approx(np.polyfit(p, ONSETS[method], 1)[0])
        assert g.law == fit_model("loglog", p, ONSETS[method]).law
    assert res.groups[0].fits[0].b != pytest.approx(res.groups[1].fits[0].b)
    # Ungrouped, the same files give one fit to all six runs.
    pooled = fit_onset(files, models=["loglog"])
    assert pooled.groups == [] and pooled.fits[0].n_points == 6


def test_exact_power_laws_per_method_with_bootstrap_and_predictions(tmp_path):
    """Onsets exactly on T = c·P^b, a different law per method: each group's fit is its law, and
    every bootstrap resample of a group refits it exactly."""
    p = np.array([5e6, 2e7, 1e8, 3e8])
    laws = {"none": (1e-5, 0.8), "l2init0.01": (2e-4, 0.6)}
    table = tmp_path / "t.csv"
    pl.DataFrame(
        {
            "n_params": np.tile(p, 2),
            "onset": np.concatenate([c * p**b for c, b in laws.values()]),
            "method": np.repeat(list(laws), p.size),
        }
    ).write_csv(table)
    res = fit_onset([table], models=["loglog"], by="method", bootstrap=100, predict=[1e9])
    assert [g.method for g in res.groups] == ["none", "l2init0.01"]
    for g, (c, b) in zip(res.groups, laws.values(), strict=True):
        (f,) = g.fits
        assert f.b == pytest.approx(b, abs=1e-9) and math.exp(f.a) == pytest.approx(c, rel=1e-9)
        assert f.b_ci == pytest.approx([b, b], abs=1e-9)
        assert g.bootstrap.resamples == 100 and g.bootstrap.failed == {"loglog": 0}
        (pred,) = g.predictions
        assert pred.onset_tasks == pytest.approx(c * 1e9**b, rel=1e-9)
        assert pred.onset_tasks_ci == pytest.approx([c * 1e9**b] * 2, rel=1e-9)
    d = res.to_dict()
    assert [g["method"] for g in d["groups"]] == ["none", "l2init0.01"]
    assert [g["fits"][0]["b"] for g in d["groups"]] == pytest.approx([0.8, 0.6])
    assert d["groups"][0]["exponent"] == "b = 0.80 [0.80, 0.80]"


def test_onset_table_keeps_the_method(files, tmp_path):
    out = tmp_path / "onsets.parquet"
    first = fit_onset(files, models=["loglog"], out=out)  # written without --by
    table = pl.read_parquet(out)
    assert table.select("run_id", "method").rows() == [(r.run_id, r.method) for r in first.runs]
    again = fit_onset([out], models=["loglog"], by="method")
    direct = fit_onset(files, models=["loglog"], by="method")
    assert [(g.method, g.fits[0].b) for g in again.groups] == [
        (g.method, pytest.approx(g.fits[0].b)) for g in direct.groups
    ]
    # A table without a method column (Table IV, older tables) is the baseline.
    old = tmp_path / "old.csv"
    table.drop("method").select("n_params", "onset").drop_nulls().write_csv(old)
    assert {r.method for r in judge_inputs([old]).runs} == {"none"}


def test_files_without_a_method_are_the_baseline(tmp_path):
    """Metric files from before rows carried a method: one group, 'none', the ungrouped fit."""
    folder = tmp_path / "old"
    for (size, n), onset in zip(SIZES, ONSETS["none"], strict=True):
        write_run(folder, size, size, n, onset)
    files = [str(folder / "*.parquet")]
    assert "method" not in pl.read_parquet(next(folder.glob("probe-*.parquet"))).columns
    res = fit_onset(files, models=["loglog"], by="method")
    (g,) = res.groups
    assert g.method == "none" and g.fits[0].b == fit_onset(files, models=["loglog"]).fits[0].b


def table_of(tmp_path, rows) -> Path:
    path = tmp_path / "t.csv"
    pl.DataFrame(rows, schema=["n_params", "onset", "method"], orient="row").write_csv(path)
    return path


def test_a_method_too_few_runs_for_is_skipped_not_an_error(tmp_path):
    rows = [
        (5e6, 6, "none"),
        (2e7, 12, "none"),
        (1e8, 30, "none"),
        (5e6, 9, "cbp"),
        (2e7, 15, "cbp"),
    ]
    res = fit_onset([table_of(tmp_path, rows)], models=["loglog"], by="method")
    none, cbp = res.groups
    assert none.fits and none.fits_skipped is None
    assert cbp.fits == [] and cbp.runs == ["5M", "20M"]
    assert cbp.fits_skipped.startswith("a fit needs at least 3") and "got 2" in cbp.fits_skipped
    # No method can be fitted: too few points is no error (one rule, issue 28), each method
    # says why; one method: exactly the ungrouped reason.
    none_only = fit_onset([table_of(tmp_path, rows[:2] + rows[3:])], by="method").groups
    assert [g.fits_skipped.endswith("got 2") for g in none_only] == [True, True]
    grouped = fit_onset([table_of(tmp_path, rows[:2])], by="method").groups[0].fits_skipped
    assert grouped == fit_onset([table_of(tmp_path, rows[:2])]).fits_skipped


def test_cli_fit_onset_by_method(files, monkeypatch, capsys):
    proc = cli(monkeypatch, capsys, "fit-onset", *files, "--model", "loglog", "--by", "method")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    # One fits section per method, headed by it, baseline first; then the comparison.
    assert text.index("method none") < text.index("method clip1") < text.index("Onset per size")
    assert text.count("Fits of the onset T (tasks) to model size P (3 points)") == 2
    res = fit_onset(files, models=["loglog"], by="method")
    for g in res.groups:
        assert f"loglog law: {g.law}" in text
    comparison = text[text.index("Onset per size and method") :]
    header = next(ln for ln in comparison.splitlines() if "none" in ln and "clip1" in ln)
    assert header.index("none") < header.index("clip1")
    row = next(ln for ln in comparison.splitlines() if ln.strip("│ ").startswith("27M"))
    by_method = {r.method: r for r in res.runs if r.size == "27M"}
    cells = [f"{r.onset:g} [{r.onset_lo:g}, {r.onset_hi:g}]" for r in by_method.values()]
    assert cells[0].startswith("22 [") and cells[1].startswith("30 [")
    assert row.index(cells[0]) < row.index(cells[1])
    law_row = next(ln for ln in comparison.splitlines() if "log-log law" in ln)
    assert all(g.law in law_row for g in res.groups)
    proc = cli(
        monkeypatch, capsys, "fit-onset", *files, "--model", "loglog", "--by", "method", "--json"
    )
    d = json.loads(proc.stdout)
    assert d["by"] == "method" and d["fits"] == []
    assert [(g["method"], g["law"]) for g in d["groups"]] == [(g.method, g.law) for g in res.groups]
    assert {r["method"] for r in d["runs"]} == {"none", "clip1"}


def test_cli_fit_onset_reports_a_skipped_method(tmp_path, monkeypatch, capsys):
    rows = [(5e6, 6, "none"), (2e7, 12, "none"), (1e8, 30, "none"), (5e6, 9, "cbp")]
    proc = cli(monkeypatch, capsys, "fit-onset", table_of(tmp_path, rows), "--by", "method")
    assert proc.returncode == 0, proc.stderr
    assert "No fit for cbp: no law: one model size" in " ".join(proc.stdout.split())


def test_cli_by_bad_input(files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "x.png"
    for args in (("fit-onset", *files), ("plot", "onset", *files, "--out", out)):
        assert_bad_input(
            cli(monkeypatch, capsys, *args, "--by", "size"), "--by takes method, not 'size'"
        )
    assert_bad_input(
        cli(monkeypatch, capsys, "plot", "entropy", *files, "--out", out, "--by", "method"),
        "--by method colours plot auc, onset, correlates; plot entropy draws one panel per run",
    )
    assert not out.exists()


# ------------------------------------------------------------------------------------ plot


def method_color(i: int):
    return to_rgba(TAB10(i))


def test_by_method_kinds_and_refusals(files):
    assert BY_KINDS == ("auc", "onset", "correlates")
    for kind in set(KINDS) - set(BY_KINDS):
        with pytest.raises(PlcError, match=f"plot {kind} draws one panel per run"):
            build_figure(kind, files, by="method")
    with pytest.raises(PlcError, match="--by takes method, not 'seed'"):
        build_figure("auc", files, by="seed")


def test_auc_one_colour_per_method_sizes_by_line_style(files, study):
    (ax,) = build_figure("auc", files, by="method").figure.axes
    assert ax.get_legend().get_title().get_text() == "method, model size"
    assert legend(ax) == [f"{m}, {size}" for m in ONSETS for size, _ in SIZES]
    series = probe_series(read_probes(sorted(study.glob("*/probe-*.parquet"))), "first", None)
    for s in series:
        drawn = line(ax, f"{s.method}, {s.size}")
        assert to_rgba(drawn.get_color()) == method_color(list(ONSETS).index(s.method))
        ls, marker = SIZE_STYLES[[size for size, _ in SIZES].index(s.size)]
        assert drawn.get_marker() == marker
        assert drawn.get_linestyle() == ls  # the three sizes take "-", "--", ":"
        np.testing.assert_allclose(drawn.get_ydata(), s.value)


def test_the_baseline_keeps_the_first_colour(files, study):
    """Without the baseline no other method takes its colour; a third method takes the next."""
    clipped = [str(study / "*clip1" / "*.parquet")]
    (ax,) = build_figure("auc", clipped, by="method").figure.axes
    assert {to_rgba(ln.get_color()) for ln in ax.get_lines()[:-1]} == {method_color(1)}


def test_onset_points_and_law_per_method(files, study):
    d = build_figure("onset", files, by="method")
    (ax,) = d.figure.axes
    assert d.notes == []
    p = [n for _, n in SIZES]
    bars = ax.containers
    assert [b.get_label() for b in bars] == [f"{m}: observed onset" for m in ONSETS]
    for i, (method, onsets) in enumerate(ONSETS.items()):
        drawn = bars[i].lines[0]
        assert to_rgba(drawn.get_color()) == method_color(i)
        np.testing.assert_allclose(drawn.get_xdata(), p)
        np.testing.assert_allclose(drawn.get_ydata(), onsets)
        law = fit_model("loglog", p, onsets)
        (curve,) = [ln for ln in ax.get_lines() if ln.get_label().startswith(f"{method}: log-log")]
        assert curve.get_label().startswith(f"{method}: log-log: {law.law} (R²=")
        assert to_rgba(curve.get_color()) == method_color(i)
        np.testing.assert_allclose(curve.get_ydata(), law.predict(curve.get_xdata()))
    # From the onset table fit-onset wrote, the same figure.
    table = fit_onset(files, models=[], out=study.parent / "onsets.parquet").out
    (again,) = build_figure("onset", [table], by="method").figure.axes
    for b, c in zip(bars, again.containers, strict=True):
        np.testing.assert_allclose(c.lines[0].get_ydata(), b.lines[0].get_ydata())
        assert c.lines[0].get_color() == b.lines[0].get_color()


def test_onset_notes_a_method_it_cannot_fit(tmp_path):
    rows = [(5e6, 6, "none"), (2e7, 12, "none"), (1e8, 30, "none"), (5e6, 9, "cbp")]
    d = build_figure("onset", [table_of(tmp_path, rows)], by="method")
    assert len(d.notes) == 1 and d.notes[0].startswith("no fit for cbp: no law: one model size")
    (ax,) = d.figure.axes
    assert [
        ln.get_label().split(":")[0] for ln in ax.get_lines() if "log-log" in ln.get_label()
    ] == ["none"]


def test_correlates_by_method(files):
    axes = build_figure("correlates", files, by="method").figure.axes
    labels = [f"{m}, {size}" for m in ONSETS for size, _ in SIZES]
    assert legend(axes[0]) == [*labels, "onset of plasticity loss"]
    for ax in axes:
        for label in labels:
            method, size = label.split(", ")
            drawn = line(ax, label)
            assert to_rgba(drawn.get_color()) == method_color(list(ONSETS).index(method))
            assert drawn.get_marker() == SIZE_STYLES[[s for s, _ in SIZES].index(size)][1]
    # write_diagnose's whole-model dormant % is 1.5·cycle for every run.
    np.testing.assert_allclose(
        line(axes[1], "clip1, 106M").get_ydata(), [1.5 * c for c in range(5)]
    )
