"""plc.plot and `plc plot`: every figure kind from small synthetic metric files."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import assert_bad_input, run_plc
from test_onset import TABLE_IV, write_probe, write_run, write_table_iv

from plc.errors import PlcError
from plc.plot import KINDS, plot
from plc.store import cycle_of, metric_path, metric_schema, write_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DIAGNOSE_SCHEMA = metric_schema("diagnose")


def write_diagnose(
    folder: Path, run_id: str, size: str, n_params: int, cycles=4, layers=2, heads=2
):
    """Diagnose files at the end of each cycle, with the rows plc diagnose writes."""
    for c in range(cycles + 1):
        task = 8 * c
        rows = []

        def add(metric, value, layer=None, head=None, task=task, rows=rows):
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
        add("h_max", 6.9215)
        add("lazy_pct", 5.0 * c)
        add("collapsed_pct", 2.0 * c)
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


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5_000


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "onset"])
def test_each_kind_renders_a_png(kind, metrics, tmp_path):
    out = tmp_path / f"{kind}.png"
    res = plot(kind, [str(metrics / "*.parquet")], out)
    assert Path(res.path) == out and is_png(out)
    assert sorted(res.runs) == ["a", "b", "c"]
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary name


def test_onset_from_metrics_and_from_table_with_all_fits(metrics, tmp_path):
    res = plot("onset", [str(metrics / "*.parquet")], tmp_path / "fig3.png")
    assert is_png(Path(res.path)) and len(res.runs) == 3
    table = write_table_iv(tmp_path / "t4.csv")
    res = plot(
        "onset", [table], tmp_path / "fig10.svg", models=["linear", "linlog", "exp", "loglog"]
    )
    svg = Path(res.path).read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert len(res.runs) == len(TABLE_IV)


def test_auc_against_tokens_and_probing_normalised_alone(metrics, tmp_path):
    out = tmp_path / "fig4.svg"
    plot("auc", [str(metrics / "*.parquet")], out, x="tokens", probe_after=["ru"])
    assert "<svg" in out.read_text()
    out = tmp_path / "fig9.png"
    plot("probing", [str(metrics / "*.parquet")], out, normalize="alone")
    assert is_png(out)


def test_entropy_layer_choice_and_notes(metrics, tmp_path):
    res = plot("entropy", [str(metrics / "*.parquet")], tmp_path / "e.png", layer=1)
    assert is_png(Path(res.path)) and res.notes == []
    with pytest.raises(
        PlcError, match=r"no entropy rows for layer 7 \(layers in the data: \[0, 1\]\)"
    ):
        plot("entropy", [str(metrics / "*.parquet")], tmp_path / "e7.png", layer=7)


def test_correlates_without_probes_draw_no_onset(tmp_path):
    folder = tmp_path / "m"
    write_diagnose(folder, "a", "5M", 4_932_480)
    res = plot("correlates", [str(folder / "*.parquet")], tmp_path / "c.png")
    assert is_png(Path(res.path)) and res.notes == ["no probe rows: no onset marked"]


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
    assert json.loads(proc.stdout)["path"] == str(out) and is_png(out)
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
