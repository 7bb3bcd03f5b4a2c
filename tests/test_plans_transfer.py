"""plc transfer-table: Table III from probe metric files (synthetic files with known AUCs)."""

from __future__ import annotations

import math

import polars as pl
import pytest
from conftest import cli

from plc.errors import PlcError
from plc.store import metric_frame, metric_path, write_metrics
from plc.transfer import transfer_table

SIZES = {"nano": 50_112, "micro": 396_800}


def probe_file(folder, size, seed, lang, auc, task=1, scratch=False, probe_lang="vi"):
    run = f"{size}-s{seed}"
    rows = [
        {
            "kind": "probe",
            "run_id": run,
            "size": size,
            "n_params": SIZES[size],
            "task_index": task,
            "cycle": 1 if task else 0,
            "lang": lang,
            "probe_lang": probe_lang,
            "step": step,
            "val_loss": 3.0 - step / 10,
            "auc": auc,
            "tokens_seen": 0,
            "from_scratch": scratch,
        }
        for step in (0, 4, 8)  # a probe file repeats its AUC on every evaluation row
    ]
    suffix = f"{probe_lang}-scratch" if scratch else probe_lang
    path = metric_path(folder, "probe", run, task, "" if scratch else lang, suffix)
    write_metrics(path, metric_frame("probe", rows))
    return path


@pytest.fixture
def study(tmp_path):
    """micro listed first, languages out of cycle order: the table orders both itself."""
    files = []
    for seed, shift in ((0, 0.0), (1, 0.2)):
        for lang, auc in (("ja", 3.1), ("en", 3.0), ("zh", 3.2)):
            files.append(probe_file(tmp_path, "micro", seed, lang, auc - 0.5 + shift))
    for lang, auc in (("en", 3.0), ("ja", 3.6)):
        files.append(probe_file(tmp_path, "nano", 0, lang, auc))
    files.append(probe_file(tmp_path, "nano", 0, "", 4.0, task=0, scratch=True))
    files.append(probe_file(tmp_path, "nano", 0, "ru", 9.9, task=8))  # a later task: not Table III
    return tmp_path, files


def test_table_rows_columns_average_and_scratch(study):
    folder, files = study
    res = transfer_table(files)
    assert res.probe_lang == "vi"
    assert res.sizes == ["nano", "micro"] and res.n_params == [50_112, 396_800]
    assert res.langs == ["en", "zh", "ja"]  # the paper's cycle order; ru of task 8 left out
    assert res.seeds == [1, 2]
    # micro: the mean of its two seeds (AUC − 0.5 and AUC − 0.3).
    assert res.auc[0] == pytest.approx([3.0, 2.6]) and res.auc[2] == pytest.approx([3.6, 2.7])
    assert res.auc[1][0] is None and res.auc[1][1] == pytest.approx(2.8)
    assert res.average == pytest.approx([3.3, (2.6 + 2.8 + 2.7) / 3])
    assert res.scratch[0] == pytest.approx(4.0) and res.scratch[1] is None
    csv = folder / "t.csv"
    transfer_table(files, out=csv)
    table = pl.read_csv(csv)
    assert table.columns == ["lang", "nano", "micro"]
    assert table["lang"].to_list() == ["en", "zh", "ja", "average", "scratch"]
    assert table.filter(pl.col("lang") == "average")["micro"][0] == pytest.approx(2.7)
    assert table.filter(pl.col("lang") == "zh")["nano"][0] is None
    png = folder / "t.png"
    transfer_table(files, out=png)
    # The PNG is the figure whose bars test_figure_draws_each_language_relative_to_its_size reads.
    import io

    from matplotlib.image import imread

    from plc.transfer import _figure

    drawn = io.BytesIO()
    _figure(res).savefig(drawn, format="png", dpi=150)
    drawn.seek(0)
    assert (imread(png) == imread(drawn, format="png")).all()
    with pytest.raises(PlcError, match="exists"):
        transfer_table(files, out=png)


def test_figure_draws_each_language_relative_to_its_size(study):
    from plc.transfer import _figure

    res = transfer_table(study[1])
    ax = _figure(res).axes[0]
    heights = [p.get_height() for p in ax.patches]
    nano = heights[: len(res.langs)]
    assert nano[0] == pytest.approx(100 * (3.0 / 3.3 - 1)) and math.isnan(nano[1])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["en", "zh", "ja"]


def test_bad_inputs(study, tmp_path):
    folder, files = study
    with pytest.raises(PlcError, match="--out must end in"):
        transfer_table(files, out=folder / "t.txt")
    other = probe_file(tmp_path / "o", "nano", 0, "en", 3.0, probe_lang="de")
    with pytest.raises(PlcError, match="probes on one language"):
        transfer_table([*files, other])
    late = probe_file(tmp_path / "l", "nano", 0, "en", 3.0, task=5)
    with pytest.raises(PlcError, match="no probes of one-task checkpoints"):
        transfer_table([late])


def test_cli_prints_table_iii(study, monkeypatch, capsys):
    folder, files = study
    r = cli(monkeypatch, capsys, "transfer-table", *files, "--out", folder / "t.parquet")
    assert r.returncode == 0, r.stderr
    assert "Table III" in r.stdout and "micro (396,800), 2 seeds" in r.stdout
    assert "│ average" in r.stdout and "3.3000" in r.stdout
    assert pl.read_parquet(folder / "t.parquet").height == 5
    r = cli(monkeypatch, capsys, "transfer-table", folder / "missing.parquet")
    assert r.returncode == 2 and "no input file" in r.stderr
