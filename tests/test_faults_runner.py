"""Faults where a task runs and writes (issue 28's "nothing lost" and "finite or nothing", issue 31's
resumable jobs): concurrent writers, a second process on one output, --force on what plc did not
write, non-finite weights, a diverged task's record, a failure between the two writes of a pair,
and SIGTERM/SIGUSR1/SIGKILL mid-task. Each asserts the one line, the exit status, and that every
earlier file is byte-identical afterwards."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import assert_bad_input, cli, run_plc, write_nonfinite_checkpoint

import plc.diagnose
import plc.taskrun
import plc.train
from plc.data.sampling import BatchSampler
from plc.data.tokenizers import ByteTokenizer
from plc.data.tokenstore import open_lang, write_store
from plc.diagnose import diagnose, units_path_for
from plc.errors import PlcError
from plc.init import init_checkpoint
from plc.model import GPT, GPTConfig
from plc.options import TrainOptions
from plc.probe import probe
from plc.store import (
    atomic_path,
    metric_frame,
    output_lock,
    progress_path,
    read_metrics,
    save_checkpoint,
    write_metrics,
)
from plc.task import state_path_for, train_task
from plc.train import Interrupts, TrainingDiverged, TrainingInterrupted, train_loop

CORPUS = Path(__file__).resolve().parents[1] / "plc" / "data" / "corpus"
TINY = dict(preset="tiny", device="cpu")
# A task long enough to be interrupted mid-way, small enough to finish in seconds.
LONG = ("--steps", "200", "--batch-tokens", "256")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    for lang in ("en", "vi"):
        raw = np.frombuffer((CORPUS / f"{lang}.txt").read_bytes(), dtype=np.uint8)
        tokens = raw.astype(np.uint32)
        n = int(len(tokens) * 0.9)
        write_store(
            d / f"{lang}.zarr",
            tokens[:n],
            tokens[n:],
            lang=lang,
            tokenizer=ByteTokenizer().identity(),
        )
    return d


@pytest.fixture
def c0(tmp_path) -> Path:
    path = tmp_path / "c0.pt"
    init_checkpoint(path, size="nano", tokenizer="byte", context=32, seed=2)
    return path


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _train_argv(c0: Path, data: Path, *extra: str) -> list[str]:
    metrics = c0.parent / "m"
    argv = ["train-task", "--lang", "en", "--ckpt", str(c0), "--data", str(data)]
    return [*argv, "--preset", "tiny", "--metrics", str(metrics), *extra]


# ---------------------------------------------------------------------------- nothing lost


def test_a_late_writer_never_replaces_a_result_file(tmp_path):
    """The check and the rename are one step: a file that appears while a writer works is kept."""
    target = tmp_path / "probe-x.parquet"
    with pytest.raises(PlcError, match="written by another process while this one ran"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"late")
            target.write_bytes(b"early")  # another process finishes first
    assert target.read_bytes() == b"early"
    assert [p.name for p in tmp_path.iterdir()] == ["probe-x.parquet"]  # no temporary left


def test_a_file_system_without_hard_links_keeps_the_check(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with atomic_path(tmp_path / "a") as tmp:
        tmp.write_bytes(b"new")
    assert (tmp_path / "a").read_bytes() == b"new"
    with pytest.raises(PlcError, match="written by another process"):
        with atomic_path(tmp_path / "b") as tmp:
            tmp.write_bytes(b"late")
            (tmp_path / "b").write_bytes(b"early")
    assert (tmp_path / "b").read_bytes() == b"early"


def test_a_probe_that_finishes_second_refuses_and_keeps_the_first(tmp_path, data, c0):
    """Two probes of one checkpoint into one metric file: the one that finishes later is refused
    and the earlier file stays byte-identical."""
    first = probe(c0, data=data, metrics=tmp_path / "a", steps=4, **TINY)
    target = tmp_path / "b" / Path(first.metrics_path).name
    earlier = Path(first.metrics_path).read_bytes()

    def other_probe_finishes(row, total):
        if row["step"] == 1:
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(earlier)

    with pytest.raises(PlcError, match="probe-nano-s2-t0-init-vi.parquet exists"):
        probe(c0, data=data, metrics=tmp_path / "b", steps=4, on_step=other_probe_finishes, **TINY)
    assert target.read_bytes() == earlier
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no lock, no state


def test_a_second_process_on_the_same_output_refuses_at_once(tmp_path, data, c0):
    """Two `train-task --save-every` on one output: the second refuses before training; the first
    finishes with every row."""
    argv = _train_argv(c0, data, "--steps", "6", "--batch-tokens", "256", "--save-every", "2")
    seen = {}

    def second_process(row, total):
        if row["step"] == 2:
            seen["proc"] = run_plc(*argv)
            seen["state"] = state_path_for(tmp_path / "c1.pt").read_bytes()

    res = train_task(
        c0,
        "en",
        data=data,
        metrics=tmp_path / "m",
        steps=6,
        batch_tokens=256,
        save_every=2,
        on_step=second_process,
        **TINY,
    )
    assert_bad_input(seen["proc"], "c1.pt is being written by another process", "c1.pt.lock")
    assert len(seen["state"]) > 0  # the first run's state was there, and stayed its own
    rows = pl.read_parquet(res.metrics)
    assert rows["step"].to_list() == list(range(6)) and set(rows["status"]) == {"ok"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c0.pt", "c1.pt", "m"]


def test_the_lock_is_the_systems_and_a_killed_holder_leaves_none(tmp_path):
    out = tmp_path / "c1.pt"
    with output_lock(out) as lock:
        assert lock.exists()
        with pytest.raises(PlcError, match="being written by another process"):
            with output_lock(out):
                pass
    assert not lock.exists()
    lock.write_text("")  # a killed holder's file: no lock on it any more
    with output_lock(out):
        pass


@pytest.mark.parametrize("what", ["folder", "foreign file"])
def test_force_never_replaces_a_folder_or_a_file_plc_did_not_write(
    tmp_path, data, c0, monkeypatch, capsys, what
):
    def put(path: Path) -> None:
        if what == "folder":
            path.mkdir(parents=True)
            (path / "thesis.tex").write_text("years of work")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("someone's notes")

    out = tmp_path / "c1.pt"
    put(out)
    before = _snapshot(tmp_path)
    argv = _train_argv(c0, data, "--steps", "1", "--force")
    assert_bad_input(cli(monkeypatch, capsys, *argv), "c1.pt", "not a plc checkpoint")
    assert _snapshot(tmp_path) == before

    # A train metric file's name holding something else.
    other = tmp_path / "other"
    other.mkdir()
    put(other / "m" / "train-nano-s2-t1-en.parquet")
    argv = _train_argv(c0, data, "--steps", "1", "--force", "--out", str(other / "c1.pt"))
    argv[argv.index("--metrics") + 1] = str(other / "m")
    before = _snapshot(other)
    assert_bad_input(cli(monkeypatch, capsys, *argv), "not a plc train metric file")
    assert _snapshot(other) == before

    # Diagnose's units store: only its own store is replaced.
    units = units_path_for(tmp_path / "d" / "diagnose-nano-s2-t0-init.parquet")
    put(units)
    before = _snapshot(tmp_path / "d")
    argv = ["diagnose", c0, "--data", data, "--metrics", tmp_path / "d", "--preset", "tiny"]
    proc = cli(monkeypatch, capsys, *argv, "--entropy-lang", "vi", "--force")
    assert_bad_input(proc, "not a plc diagnose units store")
    assert _snapshot(tmp_path / "d") == before


def test_force_replaces_the_commands_own_outputs(tmp_path, data, c0):
    kw = dict(data=data, metrics=tmp_path / "m", steps=2, batch_tokens=256, **TINY)
    train_task(c0, "en", **kw)
    with pytest.raises(PlcError, match="c1.pt exists"):
        train_task(c0, "en", **kw)
    again = train_task(c0, "en", force=True, **kw)
    assert pl.read_parquet(again.metrics)["step"].to_list() == [0, 1]


def test_a_failure_between_the_two_writes_is_completed_by_the_rerun(
    tmp_path, data, c0, monkeypatch
):
    """Metric file first, checkpoint last: a disk that fills between them leaves the metric file,
    which the same command's rerun owns and completes (instead of refusing with 'exists')."""
    kw = dict(data=data, metrics=tmp_path / "m", steps=4, batch_tokens=256, **TINY)
    whole = train_task(c0, "en", out=tmp_path / "whole.pt", **{**kw, "metrics": tmp_path / "w"})

    def disk_full(path, ckpt, force=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(plc.taskrun, "save_checkpoint", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train_task(c0, "en", **kw)
    metrics = tmp_path / "m" / "train-nano-s2-t1-en.parquet"
    assert metrics.exists() and not (tmp_path / "c1.pt").exists()
    monkeypatch.setattr(plc.taskrun, "save_checkpoint", save_checkpoint)
    done = train_task(c0, "en", **kw)  # no --force: the metric file is this command's
    assert Path(done.out).exists()
    assert (
        pl.read_parquet(metrics)["loss"].to_list()
        == pl.read_parquet(whole.metrics)["loss"].to_list()
    )
    # Another command (another output) is still refused the file.
    with pytest.raises(PlcError, match="train-nano-s2-t1-en.parquet exists"):
        train_task(c0, "en", out=tmp_path / "elsewhere.pt", **kw)


def test_a_probe_keep_pair_is_completed_by_the_rerun(tmp_path, data, c0, monkeypatch):
    kw = dict(data=data, metrics=tmp_path / "m", steps=4, keep=tmp_path / "kept.pt", **TINY)

    def disk_full(path, ckpt, force=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(plc.taskrun, "save_checkpoint", disk_full)
    with pytest.raises(OSError):
        probe(c0, **kw)
    [metrics] = (tmp_path / "m").glob("probe-*.parquet")
    first = pl.read_parquet(metrics)
    monkeypatch.setattr(plc.taskrun, "save_checkpoint", save_checkpoint)
    res = probe(c0, **kw)
    assert Path(res.kept).exists() and pl.read_parquet(metrics).equals(first)
    with pytest.raises(PlcError, match="kept.pt exists"):  # the pair is complete now
        probe(c0, **kw)


def test_diagnose_completes_its_pair_after_a_failure_between_the_writes(
    tmp_path, data, c0, monkeypatch
):
    kw = dict(data=data, metrics=tmp_path / "m", entropy_lang="vi", **TINY)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plc.diagnose, "write_metrics", disk_full)
    with pytest.raises(OSError):
        diagnose(c0, **kw)
    monkeypatch.setattr(plc.diagnose, "write_metrics", write_metrics)
    [units] = (tmp_path / "m").glob("*-units.zarr")
    res = diagnose(c0, **kw)
    assert Path(res.metrics_path).exists() and res.units_path == str(units)
    with pytest.raises(PlcError, match="exists"):  # a finished pair is not replaced
        diagnose(c0, **kw)


# ---------------------------------------------------------------------------- finite or nothing


def test_an_update_that_overflows_the_weights_writes_no_checkpoint(tmp_path, data, c0):
    proc = run_plc(*_train_argv(c0, data, "--steps", "1", "--lr", "1e39", "--json"))
    assert proc.returncode == 3, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "diverged at step 0" in err and "non-finite" in err
    assert not (tmp_path / "c1.pt").exists() and not state_path_for(tmp_path / "c1.pt").exists()
    record = pl.read_parquet(tmp_path / "m" / "train-nano-s2-t1-en.parquet")
    assert record["step"].to_list() == [0] and record["status"].to_list() == ["diverged"]


def test_measuring_a_checkpoint_with_nan_weights_is_one_line(
    tmp_path, data, c0, monkeypatch, capsys
):
    bad = write_nonfinite_checkpoint(c0, tmp_path / "c9.pt")
    before = _snapshot(tmp_path)
    base = ["--data", data, "--preset", "tiny"]
    for argv in (
        ["eval", bad, *base, "--lang", "vi"],
        ["probe", bad, *base, "--metrics", tmp_path / "m"],
        ["diagnose", bad, *base, "--metrics", tmp_path / "m"],
        [
            "intervene",
            "shrink-perturb",
            bad,
            "--shrink-perturb",
            "0.5,0.01",
            "--out",
            tmp_path / "x.pt",
        ],
    ):
        proc = cli(monkeypatch, capsys, *argv)
        assert_bad_input(proc, "c9.pt has non-finite weights", "transformer.ln_f.bias")
    assert _snapshot(tmp_path) == before


def test_a_diverged_task_writes_its_record_and_no_checkpoint(tmp_path, data, c0):
    with pytest.raises(TrainingDiverged, match="diverged at step 1") as caught:
        train_task(c0, "en", data=data, metrics=tmp_path / "m", steps=4, lr=1e39, **TINY)
    assert caught.value.step == 1
    assert not (tmp_path / "c1.pt").exists() and not state_path_for(tmp_path / "c1.pt").exists()
    path = tmp_path / "m" / "train-nano-s2-t1-en.parquet"
    rows = pl.read_parquet(path)
    assert rows["step"].to_list() == [0, 1]  # the steps up to the one that diverged
    assert rows["status"].to_list() == ["diverged", "diverged"]
    assert np.isfinite(rows["loss"][0]) and not np.isfinite(rows["loss"][1])
    assert set(read_metrics([path], "train")["status"]) == {"diverged"}


def test_a_train_file_without_the_status_column_reads_as_ok(tmp_path, data, c0):
    res = train_task(c0, "en", data=data, metrics=tmp_path / "m", steps=2, **TINY)
    old = pl.read_parquet(res.metrics).drop("status")
    old.write_parquet(tmp_path / "old.parquet")
    assert read_metrics([tmp_path / "old.parquet"], "train")["status"].to_list() == ["ok", "ok"]
    unset = old.with_columns(status=pl.lit(None, pl.String))  # a writer that left it out
    unset.write_parquet(tmp_path / "unset.parquet")
    assert read_metrics([tmp_path / "unset.parquet"], "train")["status"].to_list() == ["ok", "ok"]
    assert metric_frame("train", []).schema["status"] == pl.String


# ---------------------------------------------------------------------------- resumable jobs


def test_a_signal_saves_and_stops_the_loop_and_the_rerun_is_exact(tmp_path, data, monkeypatch):
    monkeypatch.setattr(plc.train, "HOST_SYNC_SECONDS", 0.0)  # the host reads after every step
    store = open_lang(data, "en")
    opts = TrainOptions(steps=8, lr=1e-3, batch_tokens=128, seq_len=32).resolve()

    def run(state: Path, **kw):
        torch.manual_seed(0)
        model = GPT(GPTConfig(1, 64, 1, 320, 32))
        sampler = BatchSampler([store], 32, 4, 0, 1)
        res = train_loop(model, sampler, opts, state_path=state, signature={"a": 1}, **kw)
        return model, res

    whole, _ = run(tmp_path / "whole.resume")

    def usr1_at_step_2(row, total):
        if row["step"] == 2:
            os.kill(os.getpid(), signal.SIGUSR1)

    state = tmp_path / "s.resume"
    with Interrupts() as interrupts, pytest.raises(TrainingInterrupted) as caught:
        run(state, interrupts=interrupts, on_step=usr1_at_step_2)
    # Noted after step 2; the loop reads it in step 3 (where ranks agree on it) and stops after it.
    assert caught.value.step == 4 and caught.value.exit_status == 128 + signal.SIGUSR1
    assert "SIGUSR1" in str(caught.value) and torch.load(state, weights_only=True)["step"] == 4
    resumed, res = run(state)
    assert res.resumed_from == 4
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # handlers restored


def test_a_time_budget_saves_resumable_state(tmp_path, data, monkeypatch):
    monkeypatch.setattr(plc.train, "HOST_SYNC_SECONDS", 0.0)  # the host reads after every step
    store = open_lang(data, "en")
    saved = []
    opts = TrainOptions(
        steps=4, lr=1e-3, batch_tokens=128, seq_len=32, save_every_minutes=1e-9
    ).resolve()
    train_loop(
        GPT(GPTConfig(1, 64, 1, 320, 32)),
        BatchSampler([store], 32, 4, 0, 1),
        opts,
        state_path=tmp_path / "s.resume",
        signature={},
        on_save=lambda r: saved.append(len(r.rows)),
    )
    assert saved == [1, 2, 3]  # after every step but the last


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert path.exists(), f"{path} never appeared (exit {proc.poll()})"


def _popen(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PLC_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "plc", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def uninterrupted(tmp_path_factory, data) -> bytes:
    """The checkpoint of the LONG task from c0 (seed 2), run straight through."""
    d = tmp_path_factory.mktemp("straight")
    init_checkpoint(d / "c0.pt", size="nano", tokenizer="byte", context=32, seed=2)
    steps, batch = int(LONG[1]), int(LONG[3])
    train_task(d / "c0.pt", "en", data=data, metrics=None, steps=steps, batch_tokens=batch, **TINY)
    return (d / "c1.pt").read_bytes()


def test_sigterm_saves_exits_143_and_the_rerun_finishes_bit_exact(
    tmp_path, data, c0, uninterrupted
):
    argv = _train_argv(c0, data, *LONG, "--json")  # no progress bar: stderr is the one line
    proc = _popen(argv)
    _wait_for(tmp_path / "c1.pt.lock", proc)  # the job holds its output: mid-task from here on
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    line = err.strip()
    assert len(line.splitlines()) == 1 and "SIGTERM received: stopped after step" in line
    assert "rerun the same command" in line
    stopped_at = int(line.split("after step ")[1].split(",")[0])
    assert state_path_for(tmp_path / "c1.pt").exists() and not (tmp_path / "c1.pt").exists()
    # The rows saved so far wait under a hidden name: a metric file under its final name is a
    # finished task (an lr-grid job's make target), and this one is not.
    metric = tmp_path / "m" / "train-nano-s2-t1-en.parquet"
    assert not metric.exists()
    assert pl.read_parquet(progress_path(metric))["step"].max() == stopped_at - 1
    rerun = run_plc(*argv)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["resumed_from"] == stopped_at
    assert (tmp_path / "c1.pt").read_bytes() == uninterrupted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c0.pt", "c1.pt", "m"]
    assert [p.name for p in (tmp_path / "m").iterdir()] == [metric.name]
    rows = pl.read_parquet(tmp_path / "m" / "train-nano-s2-t1-en.parquet")
    assert rows["step"].to_list() == list(range(int(LONG[1])))


@pytest.mark.slow
def test_sigkill_after_a_timed_save_and_the_rerun_finishes_bit_exact(
    tmp_path, data, c0, uninterrupted
):
    argv = _train_argv(c0, data, *LONG, "--save-every-minutes", "0.0005")
    proc = _popen(argv)
    _wait_for(state_path_for(tmp_path / "c1.pt"), proc)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "c1.pt").exists()
    rerun = run_plc(*argv, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["resumed_from"] > 0
    assert (tmp_path / "c1.pt").read_bytes() == uninterrupted


def test_a_probe_stopped_by_sigusr1_resumes_to_the_same_curve(tmp_path, data, c0):
    steps, batch = int(LONG[1]), int(LONG[3])
    whole = probe(c0, data=data, metrics=tmp_path / "a", steps=steps, batch_tokens=batch, **TINY)
    argv = ["probe", str(c0), "--data", str(data), "--preset", "tiny", *LONG]
    argv += ["--metrics", str(tmp_path / "b")]
    proc = _popen(argv)
    metrics = tmp_path / "b" / Path(whole.metrics_path).name
    _wait_for(metrics.with_name(metrics.name + ".lock"), proc)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGUSR1, err
    assert "SIGUSR1 received" in err and not metrics.exists()
    rerun = run_plc(*argv, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["curve"] == whole.curve
    assert pl.read_parquet(metrics).equals(pl.read_parquet(whole.metrics_path))
    assert sorted(p.name for p in metrics.parent.iterdir()) == [metrics.name]
