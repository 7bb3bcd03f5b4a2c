"""Shared test helpers: run the real `plc` command line (in a subprocess or in this process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist each worker is one of `-n` processes sharing the cores: one torch thread each,
# so that two workers on 2 cores run 2 threads, not 4 that wait on each other. Set before any test
# module imports torch, which reads it once.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_plc(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 300, env=None):
    """Run `python -m plc ARGS` and return the CompletedProcess (text, captured)."""
    full_env = {**os.environ, "PLC_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "plc", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def cli(monkeypatch, capsys, *args: str):
    """`plc ARGS` through plc.cli.main in this process (exit status, stdout, stderr): a subprocess
    costs a second of imports, this a few milliseconds."""
    from plc.cli import main

    monkeypatch.setattr(sys, "argv", ["plc", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return SimpleNamespace(returncode=exit_.value.code, stdout=out.out, stderr=out.err)


def assert_bad_input(proc, *fragments: str) -> None:
    """Bad input: exit 2, one line on stderr naming the problem, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for f in fragments:
        assert f in err, (f, err)


# A tokenizer identity no real tokenizer has: stores made with it must be refused.
FOREIGN_TOKENIZER = {
    "name": "other",
    "vocab_size": 257,
    "eos_id": 256,
    "fingerprint": "feedfacefeedface",
}


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: several tests share 2 cores, and it is faster here."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """A finished tiny-preset study (`plc demo` layout: Makefile, <run id>/cN.pt, metrics/): nano and
    micro, one cycle, probes after zh, de, ru and from scratch, a diagnose at task 8, every
    checkpoint kept. Built once per test session (~30 s on 2 idle cores), by the first pytest-xdist
    worker that asks while the others wait on the lock; tests copy it before changing anything."""
    import fcntl

    from plc.cli import run_argv
    from plc.demo import demo

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above every worker's own
    out, done = root / "tiny-study" / "study", root / "tiny-study.done"
    with open(root / "tiny-study.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            demo(
                out,
                sizes=["nano", "micro"],
                cycles=1,
                preset="tiny",
                workers=2,
                control=[],
                keep_checkpoints=True,  # tests read the checkpoints of every task
                execute=run_argv,
            )
            done.touch()
    return out


def copy_with_a_second_cycle_of_probes(study: Path, to: Path, rise: float = 1.1) -> Path:
    """A copy of `study` whose nano-s0 has probes of a second cycle: after zh (task 10, 0.9× the
    AUC of task 8) and after ru (task 16, `rise`× it), so that eq. 1's latest change is
    100·(rise − 1) % at task 16, known without the code under test."""
    import shutil

    import polars as pl

    shutil.copytree(study, to)
    metrics = to / "metrics"
    first = pl.read_parquet(metrics / "probe-nano-s0-t8-ru-vi.parquet")
    for task, lang, factor in ((10, "zh", 0.9), (16, "ru", rise)):
        rows = first.with_columns(
            pl.lit(task, first["task_index"].dtype).alias("task_index"),
            pl.lit(2, first["cycle"].dtype).alias("cycle"),
            pl.lit(lang).alias("lang"),
            (pl.col("auc") * factor).cast(first["auc"].dtype),
        )
        rows.write_parquet(metrics / f"probe-nano-s0-t{task}-{lang}-vi.parquet")
    return to


def write_nonfinite_checkpoint(src: Path, dst: Path, name: str = "transformer.ln_f.bias") -> Path:
    """A copy of checkpoint `src` with weight `name` all NaN, written as a diverged run would have
    (plc's own writer refuses to)."""
    import torch

    payload = torch.load(src, weights_only=True)
    payload["model"][name].fill_(float("nan"))
    torch.save(payload, dst)
    return dst
