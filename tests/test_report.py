"""plc report: one self-contained HTML page; its tables hold the numbers of the metric files."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import assert_bad_input, copy_with_a_second_cycle_of_probes, run_plc

from plc.errors import PlcError
from plc.report import report

PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Images, tables (as lists of rows of cell text), headings and outside references."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a and not a[key].startswith(("data:", "#")):
                self.external.append(a[key])
        if tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag in ("h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data):
        self.text.append(data)
        for buf in (self._cell, self._heading):
            if buf is not None:
                buf.append(data)

    def table(self, *columns: str) -> list[dict[str, str]]:
        """The first table with these columns, as one dict per row."""
        for t in self.tables:
            if t and set(columns) <= set(t[0]):
                return [dict(zip(t[0], row, strict=True)) for row in t[1:]]
        raise AssertionError(f"no table with columns {columns}")


@pytest.fixture(scope="module")
def tiny_report(tiny_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    return report(tiny_study, out), out


def _onset_rows(page: Page) -> dict[str, dict[str, str]]:
    return {r["run"]: r for r in page.table("run", "onset (task) [95 % interval]")}


def _expected_cells(res, r) -> dict[str, str]:
    """The onset table's cells for one of fit-onset's runs: the view fit-onset prints."""
    from plc.onset import view

    cells = {c.name: c.cell(r) for c in view.run_columns(res)}
    return {**cells, "no onset: why": r.no_onset or ""}


def test_report_of_a_tiny_study(tiny_study, tiny_report):
    from plc.onset import MODELS
    from plc.study import fit_onset

    res, out = tiny_report
    text = out.read_text()
    page = Page(text)
    assert page.external == []  # viewable without a network
    assert len(page.images) == len(res.figures) >= 6
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
    # Each image is the figure plot draws: Fig. 2 (the first) pixel for pixel.
    from matplotlib.image import imread

    from plc.plot import build_figure

    first = io.BytesIO(base64.b64decode(page.images[0].split(",", 1)[1]))
    drawn = io.BytesIO()
    inputs = sorted((tiny_study / "metrics").glob("*.parquet"))
    build_figure("auc", inputs).figure.savefig(drawn, format="png", dpi=150)
    drawn.seek(0)
    assert (imread(first, format="png") == imread(drawn, format="png")).all()
    drawn = " ".join(res.figures)
    for fig in ("Fig. 2", "Fig. 4", "Fig. 9", "Fig. 5", "Fig. 6", "Fig. 7"):
        assert fig in drawn
    assert "Fig. 3" not in drawn  # no run has probes enough for a minimum to draw

    # Three probes per run: too few for the noise model, so fit-onset detects no onset, fits none.
    metrics = tiny_study / "metrics"
    probes = sorted(metrics.glob("probe-*.parquet"))
    fit = fit_onset(probes, models=list(MODELS), probe_after=None, window=3, bootstrap=1000)
    assert [r.detected for r in fit.runs] == [False, False]
    assert f"No fit: {fit.fits_skipped}" in res.notes
    assert "after leaving out 2 runs with no onset detected" in fit.fits_skipped
    assert not any(t[0][:1] == ["model"] for t in page.tables)  # no fits table
    onsets = _onset_rows(page)
    assert sorted(onsets) == ["micro-s0", "nano-s0"]
    for r in fit.runs:
        row = onsets[r.run_id]
        assert {k: row[k] for k in _expected_cells(fit, r)} == _expected_cells(fit, r)
        assert row["no onset: why"].startswith("too few probes (3): the noise model")
        assert row["onset (tokens)"] == ""
        # One cycle: the latest probe is eq. 1's baseline (a later one: the next test).
        assert row["latest ΔAUC"] == "+0.00 % (task 8)"
    assert (
        "The fits leave out 2 run(s) with no onset detected: nano-s0, micro-s0 (fit-onset --keep-no-onset"
        in text
    )

    rows = page.table("run", "task", "cycle", "dormant %")
    diag = pl.read_parquet(metrics / "diagnose-nano-s0-t8-ru.parquet")
    param = diag.filter(pl.col("metric") == "param_abs_mean")["value"][0]
    nano = next(r for r in rows if r["run"] == "nano-s0")
    assert (nano["task"], nano["cycle"]) == ("8", "1")
    assert nano["mean |θ|"] == f"{param:.5g}"
    for metric, column in (
        ("init_distance", "‖θ − θ₀‖₂"),
        ("perturb_loss_increase", "loss increase under perturbation"),
        ("last_hidden_norm", "last hidden norm"),
        ("last_hidden_var", "last hidden variance"),
    ):
        value = diag.filter(pl.col("metric") == metric)["value"][0]
        assert nano[column] == f"{value:.4g}", metric

    histories = [t for t in page.tables if t[0] == ["tasks", "languages", "settings"]]
    assert len(histories) == 2  # a table per run, one row each: 8 tasks of the same settings
    for t in histories:
        assert t[1][:2] == ["1–8", "en zh fr ja es de pt ru"]
        assert "preset tiny" in t[1][2] and "grad_clip none" in t[1][2]
    assert "Makefile" in text and "plc 0.1.0" in text


def test_report_latest_auc_change_against_the_first_ru_probe(tiny_study, tmp_path):
    study = copy_with_a_second_cycle_of_probes(tiny_study, tmp_path / "study", rise=1.1)
    out = report(study, tmp_path / "report.html").path
    row = _onset_rows(Page(Path(out).read_text()))["nano-s0"]
    assert row["latest ΔAUC"] == "+10.00 % (task 16)"  # 1.1× the task-8 AUC, by construction


def _probe_rows(
    run_id: str, n_params: int, dip: int, n: int = 12, method: str | None = None
) -> list[dict]:
    """A V-shaped AUC series over tasks 8, 16, … with its minimum at index `dip`, its slope 20×
    the noise (seeded by n_params), so that an interior dip is an onset fit-onset detects."""
    rng = np.random.default_rng(n_params)
    rows = []
    for i in range(n):
        task = 8 * (i + 1)
        auc = 1.0 + 0.05 * abs(i - dip) + rng.normal(0, 0.0025)
        for step, loss in ((0, auc + 0.5), (10, auc - 0.5)):
            rows.append(
                {
                    "kind": "probe",
                    "run_id": run_id,
                    "size": run_id,
                    "n_params": n_params,
                    "task_index": task,
                    "cycle": task // 8,
                    "lang": "ru",
                    "probe_lang": "vi",
                    "step": step,
                    "val_loss": loss,
                    "auc": auc,
                    "tokens_seen": task * 1000,
                    "from_scratch": False,
                    "method": method,
                }
            )
    return rows


def _write_study(study, runs: dict[str, tuple]) -> list:
    """Probe files of runs {run_id: (n_params, dip[, n[, method]])}; their paths."""
    from plc.store import metric_frame, metric_path, write_metrics

    paths = []
    for run_id, spec in runs.items():
        path = metric_path(study / "metrics", "probe", run_id, 0, "ru", "vi")
        write_metrics(path, metric_frame("probe", _probe_rows(run_id, *spec)))
        paths.append(path)
    return paths


def _fit_cells(f) -> dict[str, str]:
    return {
        "a ± SE": f"{f.a:.6g} ± {f.a_se:.3g}",
        "b ± SE": f"{f.b:.6g} ± {f.b_se:.3g}",
        "a 95 % interval": f"[{f.a_ci[0]:.4g}, {f.a_ci[1]:.4g}]",
        "b 95 % interval": f"[{f.b_ci[0]:.4g}, {f.b_ci[1]:.4g}]",
        "R²": f"{f.r2:.4f}",
        "RMSE": f"{f.rmse:.3f}",
        "RMSE leave-one-out": f"{f.loo_rmse:.3f}",
        "law": f.law,
    }


def test_onsets_fits_law_and_other_tables(tmp_path):
    from plc.onset import MODELS
    from plc.study import fit_onset

    study = tmp_path / "study"
    # d rises from its first probe on: an onset there; e is still falling at its last probe.
    runs = {"a": (1_000_000, 2), "b": (4_000_000, 4), "c": (16_000_000, 6), "d": (2_000_000, 0)}
    runs["e"] = (8_000_000, 11)
    paths = _write_study(study, runs)
    pl.DataFrame({"lang": ["en", "zh"], "auc": [1.25, 1.5]}).write_csv(study / "transfer.csv")

    res = report(study, tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    page = Page(text)
    fit = fit_onset(paths, models=list(MODELS), probe_after=None, window=3, bootstrap=1000)
    onsets = _onset_rows(page)
    assert list(onsets) == ["a", "d", "b", "e", "c"]  # by size
    got = {r.run_id: r.onset for r in fit.runs}
    assert got == {"a": 24, "d": 8, "b": 40, "e": None, "c": 56}
    for r in fit.runs:
        row = onsets[r.run_id]
        assert {k: row[k] for k in _expected_cells(fit, r)} == _expected_cells(fit, r)
        assert row["onset (tokens)"] == ("" if r.onset is None else f"{r.onset:g}k")
        assert row["p"] == f"{r.p_value:.3f}"
    assert onsets["c"]["onset (task) [95 % interval]"].startswith("56 [")
    assert onsets["d"]["onset (task) [95 % interval]"].endswith("(from the start)")
    assert onsets["e"]["onset (task) [95 % interval]"] == "none (still falling)"
    assert onsets["e"]["no onset: why"].startswith("no onset yet: still falling at the last probe")
    assert "AR(1) residuals" in text and "α = 0.05" in text
    assert (
        "The fits leave out 1 run(s) with no onset detected: e (fit-onset --keep-no-onset" in text
    )

    fits = {r["model"]: r for r in page.table("model")}
    assert list(fits) == ["linear", "linlog", "exp", "loglog"]
    for f in fit.fits:
        assert {k: fits[f.model][k] for k in _fit_cells(f)} == _fit_cells(f)
    assert fit.exponent.startswith("b = 0.")
    assert f"The law (eq. 2, log-log): {fit.law}" in "".join(page.text)
    assert f"Log-log exponent: {fit.exponent}" in "".join(page.text)
    assert "Fig. 3 / 10" in " ".join(res.figures)
    assert "transfer.csv" in page.headings
    assert page.table("lang") == [{"lang": "en", "auc": "1.25"}, {"lang": "zh", "auc": "1.5"}]
    assert any("Fig. 6" in n and "no diagnose rows" in n for n in res.notes)

    with pytest.raises(PlcError, match="exists"):
        report(study, tmp_path / "r.html")
    with pytest.raises(PlcError, match=r"\.html"):
        report(study, tmp_path / "r.txt")


def test_two_sizes_onsets_without_a_fit(tmp_path):
    """Two runs with an onset, of two sizes: fit-onset cannot fit, the onsets stay. A third run
    has two probes, too few for the noise model: a row with the reason, not an error."""
    from plc.study import fit_onset

    study = tmp_path / "study"
    paths = _write_study(study, {"a": (1_000_000, 3), "b": (4_000_000, 5)})
    _write_study(study, {"e": (8_000_000, 1, 2)})
    res = report(study, tmp_path / "r.html")
    page = Page((tmp_path / "r.html").read_text())
    fit = fit_onset(paths, models=[], probe_after=None, window=3)
    why = fit_onset(paths, probe_after=None, window=3).fits_skipped  # too few: no error
    assert f"No fit: {why} (after leaving out 1 runs with no onset detected)" in res.notes
    assert why.startswith("a fit needs at least 3 (n_params, onset) points")
    onsets = _onset_rows(page)
    assert list(onsets) == ["a", "b", "e"]
    assert onsets["e"]["onset (task) [95 % interval]"] == "none (too few probes (2))"
    assert onsets["e"]["no onset: why"].startswith("too few probes (2): the noise model")
    assert onsets["e"]["probes"] == "2"
    assert [onsets[r.run_id]["onset (task) [95 % interval]"] for r in fit.runs] == [
        f"{r.onset:g} [{r.onset_lo:g}, {r.onset_hi:g}]" for r in fit.runs
    ]
    assert [r.onset for r in fit.runs] == [32, 48]
    assert not any(t[0][:1] == ["model"] for t in page.tables)


def test_methods_get_a_column_and_fits_of_their_own(tmp_path):
    from plc.onset import MODELS
    from plc.study import fit_onset

    study = tmp_path / "study"
    base = {k: (n, dip, 12, "none") for k, n, dip in (("a", 1e6, 2), ("b", 4e6, 4), ("c", 16e6, 6))}
    wd = {"a-wd": (1_000_000, 5, 12, "wd0.1"), "b-wd": (4_000_000, 7, 12, "wd0.1")}
    paths = _write_study(study, {k: (int(v[0]), *v[1:]) for k, v in {**base, **wd}.items()})
    report(study, tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    page = Page(text)
    fit = fit_onset(
        paths, models=list(MODELS), probe_after=None, window=3, bootstrap=1000, by="method"
    )
    onsets = _onset_rows(page)
    assert {k: r["method"] for k, r in onsets.items()} == {r.run_id: r.method for r in fit.runs}
    assert onsets["b-wd"]["method"] == "wd0.1" and onsets["b"]["method"] == "none"
    for r in fit.runs:
        assert {k: onsets[r.run_id][k] for k in _expected_cells(fit, r)} == _expected_cells(fit, r)
    assert "method none" in page.headings and "method wd0.1" in page.headings
    none, wd01 = fit.groups
    assert (none.method, wd01.method) == ("none", "wd0.1")
    assert f"No fit for wd0.1: {wd01.fits_skipped}" in text
    assert len([t for t in page.tables if t[0][:1] == ["model"]]) == 1  # none's fits only
    fits = {r["model"]: r for r in page.table("model")}
    for f in none.fits:
        assert {k: fits[f.model][k] for k in _fit_cells(f)} == _fit_cells(f)
    assert f"Log-log exponent: {none.exponent}" in "".join(page.text)


def test_folder_without_plc_files(tmp_path):
    assert_bad_input(run_plc("report", tmp_path, "-o", tmp_path / "r.html"), "no plc files")
    assert not (tmp_path / "r.html").exists()


def _chromium() -> str | None:
    """A headless Chromium where .ci/browser finds or installs one: on PATH, or Playwright's."""
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    on_path = [p for p in map(shutil.which, names) if p]
    playwright = sorted(Path.home().glob(".cache/ms-playwright/chromium-*/chrome-linux*/chrome"))
    return next(iter(on_path + [str(p) for p in playwright[::-1]]), None)


CHROMIUM = _chromium()


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no headless Chromium on PATH or in Playwright's cache: .ci/browser installs one as CI does",
)
def test_chromium_renders_the_report(tiny_report, tmp_path):
    """Headless Chromium draws the page without a console message, and every image decodes."""
    res, out = tiny_report
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    flags += ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [*flags, "--window-size=1200,4000", f"--screenshot={shot}", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == PNG and shot.stat().st_size > 50_000
    assert "CONSOLE" not in proc.stderr, proc.stderr

    # The same page with a check appended: which images did the browser decode?
    check = tmp_path / "check.html"
    probe = (
        "<script>addEventListener('load', () => { const imgs = [...document.images];"
        " const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;"
        " document.body.dataset.check = imgs.length + ' images, ' + bad + ' broken'; });</script>"
    )
    check.write_text(out.read_text().replace("</body>", probe + "</body>"))
    proc = subprocess.run(
        [*flags, "--dump-dom", check.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f'data-check="{len(res.figures)} images, 0 broken"' in proc.stdout


def test_the_auc_figure_is_drawn_against_tasks_when_the_cycle_is_not_eight(tmp_path):
    from plc.plan import build_plan
    from plc.report import _figure_list

    control = build_plan("control", sizes=["nano"], tasks=24)
    paper = build_plan(sizes=["nano"], cycles=2, preset="tiny")
    empty = pl.DataFrame()
    assert _figure_list(empty, control)[0][:2] == ("auc", {"x": "task"})
    over_training = [o for k, o, _ in _figure_list(empty, control) if k != "auc"]
    assert [o.get("x") for o in over_training] == [None, None, "task", "task", "task"]
    assert _figure_list(empty, paper)[0][:2] == ("auc", {})
    assert _figure_list(empty, None)[0][:2] == ("auc", {})
