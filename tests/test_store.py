"""Checkpoints: safe loading, atomic writes, the metric-file contract."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from plc.errors import PlcError
from plc.init import init_checkpoint
from plc.store import (
    COMMON_COLUMNS,
    cycle_of,
    load_checkpoint,
    metric_path,
    read_metrics,
    write_metrics,
)


@pytest.fixture
def c0(tmp_path):
    init_checkpoint(tmp_path / "c0.pt", size="nano", tokenizer="byte", context=32, seed=7)
    return tmp_path / "c0.pt"


def test_roundtrip_keeps_config_weights_and_metadata(c0):
    import torch

    ck = load_checkpoint(c0)
    assert ck.config.vocab_size == 320 and ck.config.context == 32
    m = ck.meta
    assert (m["run_id"], m["seed"], m["size"], m["task_index"], m["tokens_seen"]) == (
        "nano-s7",
        7,
        "nano",
        0,
        0,
    )
    assert m["n_params"] == 50_112 and m["history"] == []
    assert m["tokenizer"]["name"] == "byte" and len(m["tokenizer"]["fingerprint"]) == 16
    # Same seed, same weights; the file holds only tensors and plain values.
    init_checkpoint(c0.parent / "again.pt", size="nano", tokenizer="byte", context=32, seed=7)
    again = load_checkpoint(c0.parent / "again.pt")
    for k, v in ck.model.items():
        assert torch.equal(v, again.model[k])
    torch.load(c0, weights_only=True)


def test_other_seed_other_weights(c0, tmp_path):
    import torch

    init_checkpoint(tmp_path / "s8.pt", size="nano", tokenizer="byte", context=32, seed=8)
    a, b = load_checkpoint(c0).model, load_checkpoint(tmp_path / "s8.pt").model
    assert not torch.equal(a["transformer.wte.weight"], b["transformer.wte.weight"])


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_that_runs_code_is_refused_without_running(tmp_path):
    canary = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"format": "plc-checkpoint", "x": _Evil(str(canary))}, f)
    with pytest.raises(PlcError, match="not a safe plc checkpoint"):
        load_checkpoint(bad)
    assert not canary.exists()


def test_text_truncated_and_foreign_files_are_refused(c0, tmp_path):
    import torch

    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(PlcError, match="not a plc checkpoint"):
        load_checkpoint(tmp_path / "notes.pt")
    data = c0.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(PlcError, match="not a plc checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(PlcError, match="not a plc checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(PlcError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


KILL_DURING_SAVE = """
import os, signal, sys, torch
from plc.init import init_checkpoint
def dying_save(obj, f, *a, **k):
    fh = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
    fh.write(b"PK half a checkpoint")
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
init_checkpoint(sys.argv[1], size="nano", vocab_size=320, context=32, force=True)
"""


def test_a_kill_during_save_leaves_no_half_file(c0, tmp_path):
    before = c0.read_bytes()
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(c0)], capture_output=True)
    assert proc.returncode == -9
    assert c0.read_bytes() == before  # the old checkpoint is intact under its name
    fresh = tmp_path / "fresh.pt"
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(fresh)], capture_output=True)
    assert proc.returncode == -9 and not fresh.exists()


def test_existing_output_needs_force(c0):
    with pytest.raises(PlcError, match="--force"):
        init_checkpoint(c0, size="nano", vocab_size=320, context=32)
    init_checkpoint(c0, size="nano", vocab_size=320, context=32, force=True, seed=1)
    assert load_checkpoint(c0).meta["seed"] == 1


def test_cycles_and_metric_files(tmp_path):
    assert [cycle_of(t) for t in (0, 1, 8, 9, 16, 17)] == [0, 1, 1, 2, 2, 3]
    p = metric_path(tmp_path / "m", "probe", "micro-s0", 8, "ru")
    assert p.name == "probe-micro-s0-t8-ru.parquet"
    assert (
        metric_path(tmp_path, "diagnose", "r", 0, "", "units").name
        == "diagnose-r-t0-init-units.parquet"
    )
    row = dict(kind="probe", run_id="r", size="micro", n_params=1, task_index=8, cycle=1, lang="ru")
    probe = {**row, "auc": 4.5}
    write_metrics(p, [{**probe, "step": 0, "val_loss": 5.0}, {**probe, "step": 4, "val_loss": 4.0}])
    with pytest.raises(PlcError, match="--force"):
        write_metrics(p, [row])
    other = metric_path(tmp_path / "m", "train", "r", 8, "ru")
    write_metrics(other, [{**row, "kind": "train", "step": 1, "loss": 3.0}])
    df = read_metrics([p, other], kind="probe")
    assert df.height == 2 and set(COMMON_COLUMNS) <= set(df.columns)
    assert read_metrics([p, other]).height == 3
    with pytest.raises(ValueError, match="lack columns"):
        write_metrics(tmp_path / "bad.parquet", [{"kind": "probe"}])
    (tmp_path / "junk.parquet").write_text("no")
    with pytest.raises(PlcError, match="not a Parquet"):
        read_metrics([tmp_path / "junk.parquet"])
