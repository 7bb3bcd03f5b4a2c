"""TensorBoard: event files read back hold the numbers of the Parquet metric files."""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import pytest
from conftest import assert_bad_input, run_plc

from plc.errors import PlcError
from plc.tracking import (
    ENV,
    TensorBoardTracker,
    check_writable,
    diagnose_tag,
    metrics_to_tensorboard,
    open_tracker,
    step_offsets,
    tensorboard_dir,
)

STEPS = 8  # steps per task of the tiny preset


def _scalars(run_dir) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every event file in a TensorBoard run folder."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _close(actual: dict[int, float], steps, values) -> None:
    """Float32 in TensorBoard: equal to the Parquet float64 to float32 precision."""
    assert sorted(actual) == sorted(int(s) for s in steps)
    got = np.array([actual[int(s)] for s in steps])
    np.testing.assert_allclose(got, np.asarray(values, dtype=np.float32), rtol=1e-7, atol=0)


@pytest.fixture(scope="module")
def converted(tiny_study, tmp_path_factory):
    pytest.importorskip("tensorboard")
    out = tmp_path_factory.mktemp("tb")
    return metrics_to_tensorboard([tiny_study / "metrics"], out), out


def test_converted_events_hold_the_parquet_numbers(tiny_study, converted):
    res, out = converted
    metrics = tiny_study / "metrics"
    assert res.runs == ["micro-s0", "nano-s0"]
    assert res.metric_files == len(list(metrics.glob("*.parquet")))
    for run in res.runs:
        tb = _scalars(out / run)
        train = pl.concat(
            [pl.read_parquet(p) for p in metrics.glob(f"train-{run}-t*.parquet")]
        ).sort("task_index", "step")
        assert train.height == 8 * STEPS
        global_step = (train["task_index"] - 1) * STEPS + train["step"]
        for col in ("loss", "lr", "grad_norm", "tokens_per_s"):
            _close(tb[f"train/{col}"], global_step, train[col])
        assert tb["train/task"] == {STEPS * (k - 1): k for k in range(1, 9)}

        aucs = {}
        for p in metrics.glob(f"probe-{run}-*.parquet"):
            probe = pl.read_parquet(p)
            first = probe.row(0, named=True)
            name = (
                "scratch"
                if first["from_scratch"]
                else f"t{first['task_index']:03d}-{first['lang']}"
            )
            _close(tb[f"probe-vi/{name}/val_loss"], probe["step"], probe["val_loss"])
            if not first["from_scratch"]:
                aucs[first["task_index"]] = first["auc"]
            else:
                _close(tb["probe-vi/auc_scratch"], [0], [first["auc"]])
        _close(tb["probe-vi/auc"], list(aucs), list(aucs.values()))

        diag = pl.read_parquet(metrics / f"diagnose-{run}-t8-ru.parquet")
        for r in diag.iter_rows(named=True):
            _close(tb[diagnose_tag(r["metric"], r["layer"], r["head"])], [8], [r["value"]])


def test_live_tracker_writes_what_the_converter_writes(tiny_study, converted, tmp_path):
    """Fed the rows the loop hands to on_step and the probe's evaluations, the live tracker
    writes the same tags and numbers as the conversion of the files those runs wrote."""
    _, out = converted
    metrics = tiny_study / "metrics"
    run = "nano-s0"
    live = tmp_path / "live"
    for task in (1, 2):
        (path,) = metrics.glob(f"train-{run}-t{task}-*.parquet")
        rows = pl.read_parquet(path).to_dicts()
        with TensorBoardTracker(
            live, run, task, "train", lang=rows[0]["lang"], step_offset=(task - 1) * STEPS
        ) as tracker:
            for row in rows:
                tracker.step(row, STEPS)
    probe = pl.read_parquet(metrics / f"probe-{run}-t2-zh-vi.parquet")
    with TensorBoardTracker(live, run, 2, "probe", lang="zh") as tracker:
        for row in probe.iter_rows(named=True):
            tracker.eval(row["step"], row["val_loss"])
        tracker.auc(probe["auc"][0])
    diag = pl.read_parquet(metrics / f"diagnose-{run}-t8-ru.parquet")
    with TensorBoardTracker(live, run, 8, "diagnose") as tracker:
        tracker.diagnose(diag.to_dicts())

    got, want = _scalars(live / run), _scalars(out / run)
    for tag, values in got.items():
        assert {s: want[tag][s] for s in values} == values, tag
    assert len(list((live / run).glob("events.out.tfevents.*"))) == 4  # one per job


def test_conversion_refuses_to_overwrite_without_force(tiny_study, converted, tmp_path):
    pytest.importorskip("tensorboard")
    metrics = tiny_study / "metrics"
    out = tmp_path / "tb"
    first = metrics_to_tensorboard([metrics / "train-nano-s0-t1-en.parquet"], out)
    assert first.runs == ["nano-s0"] and first.scalars == 4 * STEPS + 1
    proc = run_plc("metrics", "tensorboard", metrics, "--out", out)
    assert_bad_input(proc, "already holds TensorBoard event files", "--force")
    again = metrics_to_tensorboard([f"{metrics}/train-nano-s0-t*.parquet"], out, force=True)
    (event,) = (out / "nano-s0").glob("events.out.tfevents.*")  # replaced, not added
    assert again.event_files == [str(event)]
    assert len(_scalars(out / "nano-s0")["train/loss"]) == 8 * STEPS
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_step_offsets():
    assert step_offsets({1: 8, 2: 8, 3: 10}) == {1: 0, 2: 8, 3: 16}
    # A task without its file counts at the median steps per task.
    assert step_offsets({1: 8, 2: 8, 4: 8}) == {1: 0, 2: 8, 4: 24}
    assert step_offsets({}) == {}


def test_folder_resolution_and_bad_folders(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert tensorboard_dir(None) is None and open_tracker(None, "r", 1, "train") is None
    monkeypatch.setenv(ENV, str(tmp_path / "env"))
    assert tensorboard_dir(None) == tmp_path / "env"
    assert tensorboard_dir(tmp_path / "flag") == tmp_path / "flag"  # the flag wins
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PlcError, match="is not writable"):
        check_writable(blocker / "tb")
    assert check_writable(tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the write test leaves nothing


def test_without_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as if not installed
    with pytest.raises(PlcError, match=r"pip install 'plc\[track\]'"):
        open_tracker(tmp_path, "r", 1, "train")
    with pytest.raises(PlcError, match=r"pip install 'plc\[track\]'"):
        metrics_to_tensorboard([tmp_path], tmp_path / "tb")


def test_training_commands_write_live_scalars_under_tensorboard(tiny_study, tmp_path):
    """--tensorboard on train-task, probe and diagnose: the numbers their Parquet files hold."""
    pytest.importorskip("tensorboard")
    import shutil

    from plc.diagnose import diagnose
    from plc.probe import probe
    from plc.task import train_task

    c8 = tmp_path / "c8.pt"
    shutil.copy(tiny_study / "nano-s0" / "c8.pt", c8)
    tb, data = tmp_path / "tb", tiny_study / "data"
    res = train_task(c8, "en", data=data, metrics=tmp_path / "m", tensorboard=str(tb), device="cpu")
    got = _scalars(tb / res.run_id)
    rows = pl.read_parquet(res.metrics)
    _close(got["train/loss"], 8 * STEPS + rows["step"], rows["loss"])  # after 8 tasks of 8 steps
    p = probe(tmp_path / "c9.pt", data=data, metrics=tmp_path / "m", tensorboard=str(tb))
    got = _scalars(tb / res.run_id)
    curve = pl.read_parquet(p.metrics_path)
    _close(got["probe-vi/t009-en/val_loss"], curve["step"], curve["val_loss"])
    _close(got["probe-vi/auc"], [9], [p.auc])
    d = diagnose(tmp_path / "c9.pt", data=data, metrics=tmp_path / "m", tensorboard=tb)
    _close(_scalars(tb / res.run_id)["diagnose/param_abs_mean"], [9], [d.param_abs_mean])
