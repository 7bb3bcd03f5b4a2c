"""Every file plc writes gets the mode the umask gives, as any other program's files do: on a
shared cluster the group reads a study (atomic writes once kept their temporary's private 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import cli
from test_report import _write_study


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)) + ("/" if p.is_dir() else ""): stat.S_IMODE(p.stat().st_mode)
        for p in sorted(root.rglob("*"))
    }


def test_every_writer_leaves_the_umask_mode(umask, tmp_path, monkeypatch, capsys, one_thread):
    from plc.data.shard import shard
    from plc.diagnose import diagnose
    from plc.export import export_hf
    from plc.init import init_checkpoint
    from plc.plot import plot
    from plc.report import report
    from plc.study import fit_onset

    study = tmp_path / "study"  # made under the umask, as everything below it
    for lang in ("vi", "ru"):
        shard(lang, study / "data" / f"{lang}.zarr")  # Zarr token stores
    init_checkpoint(study / "nano-s0" / "c0.pt", size="nano", preset="tiny")  # checkpoint
    diagnose(  # metric Parquet and the per-unit Zarr group beside it
        study / "nano-s0" / "c0.pt", data=study / "data", metrics=study / "metrics", preset="tiny"
    )
    export_hf(study / "nano-s0" / "c0.pt", study / "hf")
    probes = _write_study(study, {"a": (1_000_000, 2), "b": (4_000_000, 4), "c": (16_000_000, 6)})
    fit_onset(probes, models=["loglog"], probe_after=None, out=study / "onset.parquet")
    plot("probing", probes, study / "figures" / "probing.png", probe_after=None)  # figures
    for kind in ("continual", "snakemake"):  # each with its plan.json: a folder of its own
        name = "snake/Snakefile" if kind == "snakemake" else "Makefile"
        fmt = ["--format", kind] if kind == "snakemake" else []
        argv = ["plan", "continual", "--sizes", "nano", "--cycles", "1", "--preset", "tiny"]
        assert cli(monkeypatch, capsys, *argv, *fmt, "-o", study / name).returncode in (0, None)
    report(study, study / "report.html")

    modes = _modes(study)
    for written in (
        "nano-s0/c0.pt",
        "data/vi.zarr/zarr.json",
        "onset.parquet",
        "figures/probing.png",
        "report.html",
        "Makefile",
        "plan.json",
        "snake/Snakefile",
        "snake/plan.json",
        "hf/config.json",
    ):
        assert written in modes, sorted(modes)
    assert any(k.startswith("metrics/diagnose-") and k.endswith(".parquet") for k in modes)
    assert any(k.startswith("metrics/probe-") and k.endswith(".parquet") for k in modes)
    assert any("-units.zarr/" in k for k in modes)
    files = 0o666 & ~umask
    dirs = 0o777 & ~umask
    assert files == (0o644 if umask == 0o022 else 0o664)
    wrong = {k: oct(m) for k, m in modes.items() if m != (dirs if k.endswith("/") else files)}
    assert wrong == {}
    assert not [k for k in modes if k.endswith((".tmp", ".partial"))]  # no temporaries left
