"""plc report: one self-contained HTML page; its tables hold the numbers of the metric files."""

from __future__ import annotations

import base64
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest
from conftest import assert_bad_input, run_plc

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


def test_report_of_a_tiny_study(tiny_study, tiny_report):
    res, out = tiny_report
    text = out.read_text()
    page = Page(text)
    assert page.external == []  # viewable without a network
    assert len(page.images) == len(res.figures) >= 6
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG
    drawn = " ".join(res.figures)
    for fig in ("Fig. 2", "Fig. 4", "Fig. 9", "Fig. 5", "Fig. 6", "Fig. 7"):
        assert fig in drawn
    # Two sizes: no fit, said so; the onset figure shows the runs' minima (no onset detected).
    assert any("A fit needs onsets of at least 3 runs" in n for n in res.notes)
    assert "Fig. 3" in drawn

    metrics = tiny_study / "metrics"
    onsets = {r["run"]: r for r in page.table("run", "onset (task)")}
    for run in ("nano-s0", "micro-s0"):
        aucs = [
            float(pl.read_parquet(next(metrics.glob(f"probe-{run}-t{t}-*-vi.parquet")))["auc"][0])
            for t in (2, 6, 8)
        ]
        change = 100 * (aucs[-1] / aucs[-1] - 1)  # eq. 1's baseline: the first ru probe (task 8)
        assert onsets[run]["latest ΔAUC"] == f"{change:+.2f} % (task 8)"
        assert onsets[run]["probes"] == "3"
        assert onsets[run]["onset (task)"] == "6"  # three probes: the one smoothed point

    rows = page.table("run", "task", "cycle", "dormant %")
    diag = pl.read_parquet(metrics / "diagnose-nano-s0-t8-ru.parquet")
    param = diag.filter(pl.col("metric") == "param_abs_mean")["value"][0]
    nano = next(r for r in rows if r["run"] == "nano-s0")
    assert (nano["task"], nano["cycle"]) == ("8", "1")
    assert nano["mean |θ|"] == f"{param:.5g}"

    histories = [t for t in page.tables if t[0] == ["tasks", "languages", "settings"]]
    assert len(histories) == 2  # a table per run, one row each: 8 tasks of the same settings
    for t in histories:
        assert t[1][:2] == ["1–8", "en zh fr ja es de pt ru"]
        assert "preset tiny" in t[1][2] and "grad_clip none" in t[1][2]
    assert "Makefile" in text and "plc 0.1.0" in text


def _probe_rows(run_id: str, n_params: int, dip: int, n: int = 9) -> list[dict]:
    """A V-shaped AUC series over tasks 8, 16, … whose smoothed minimum is at index `dip`."""
    rows = []
    for i in range(n):
        task = 8 * (i + 1)
        auc = 1.0 + 0.01 * abs(i - dip)
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
                }
            )
    return rows


def test_fits_law_and_other_tables(tmp_path):
    from plc.onset import fit_model
    from plc.store import metric_frame, metric_path, write_metrics

    study = tmp_path / "study"
    points = {"a": (1_000_000, 2), "b": (4_000_000, 4), "c": (16_000_000, 6)}
    for run_id, (n_params, dip) in points.items():
        path = metric_path(study / "metrics", "probe", run_id, 0, "ru", "vi")
        write_metrics(path, metric_frame("probe", _probe_rows(run_id, n_params, dip)))
    pl.DataFrame({"lang": ["en", "zh"], "auc": [1.25, 1.5]}).write_csv(study / "transfer.csv")

    res = report(study, tmp_path / "r.html")
    page = Page((tmp_path / "r.html").read_text())
    onsets = {r["run"]: int(r["onset (task)"]) for r in page.table("run", "onset (task)")}
    assert onsets == {"a": 24, "b": 40, "c": 56}  # the task at each dip
    p = np.array([v[0] for v in points.values()], dtype=float)
    t = np.array([24, 40, 56], dtype=float)
    fits = {r["model"]: r for r in page.table("model")}
    assert list(fits) == ["linear", "linlog", "exp", "loglog"]
    for model, row in fits.items():
        f = fit_model(model, p, t)
        assert row["law"] == f.law
        assert row["R²"] == f"{f.r2:.4f}"
        assert row["RMSE leave-one-out"] == f"{f.loo_rmse:.3f}"
    assert f"The law (eq. 2, log-log): {fit_model('loglog', p, t).law}" in "".join(page.text)
    assert "Fig. 3 / 10" in " ".join(res.figures)
    assert "transfer.csv" in page.headings
    assert page.table("lang") == [{"lang": "en", "auc": "1.25"}, {"lang": "zh", "auc": "1.5"}]
    assert any("Fig. 6" in n and "no diagnose rows" in n for n in res.notes)

    with pytest.raises(PlcError, match="exists"):
        report(study, tmp_path / "r.html")
    with pytest.raises(PlcError, match=r"\.html"):
        report(study, tmp_path / "r.txt")


def test_folder_without_plc_files(tmp_path):
    assert_bad_input(run_plc("report", tmp_path, "-o", tmp_path / "r.html"), "no plc files")
    assert not (tmp_path / "r.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
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
