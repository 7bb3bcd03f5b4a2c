"""Fault injection: what the system refuses, bad files, bugs, hostile plan paths and a diverged
rate in App. A's grid. Each case asserts one line on stderr, the exit status, and that every
file that existed before is byte-identical afterwards (and no temporary file is left)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import assert_bad_input, cli

from plc.errors import refusal, user_path, writing
from plc.init import init_checkpoint
from plc.plan import build_plan, plan_json
from plc.store import load_checkpoint, metric_path, save_checkpoint, write_metrics

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------ helpers


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (outside a mount point's own files): relative path → bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def assert_kept(before: dict[str, bytes], folder: Path) -> None:
    """Every earlier file byte-identical, and no temporary file left behind."""
    after = snapshot(folder)
    for name, content in before.items():
        assert after.get(name) == content, f"{name} changed or went"
    left = [n for n in after if n not in before and re.search(r"\.tmp$|\.partial", n)]
    assert not left, left


def one_line(r, status: int, *fragments: str) -> str:
    """Exit `status`, one line on stderr holding each fragment, no traceback."""
    err = r.stderr.strip()
    assert r.returncode == status, (r.returncode, r.stdout, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, (f, err)
    return err


def _mount(*args: str) -> bool:
    try:
        return subprocess.run(["mount", *args], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (the tests run as root where it can be mounted), else None: the tests
    then make the OS's answer with a patch."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)):
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The embedded corpus's en, as `plc shard` makes it."""
    from plc.data.shard import shard

    d = tmp_path_factory.mktemp("data")
    shard("en", d / "en.zarr", seed=0)
    return d


@pytest.fixture
def c0(tmp_path) -> Path:
    path = tmp_path / "c0.pt"
    init_checkpoint(path, size="nano", tokenizer="byte", context=32, seed=1)
    return path


# ----------------------------------------------------------------------- what the OS refuses


def test_a_full_disk_is_one_line_and_keeps_the_checkpoint_it_would_replace(
    small_disk, tmp_path, monkeypatch, capsys
):
    folder = small_disk or tmp_path / "full"
    args = ["init", "--size", "nano", "--tokenizer", "byte", "--context", "32"]
    assert cli(monkeypatch, capsys, *args, "--out", folder / "c0.pt").returncode == 0
    before = snapshot(folder)
    if small_disk is None:  # no tmpfs here: torch's writer meets a full disk half-way
        import torch

        def full(obj, f, *a, **k):
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(torch, "save", full)
    r = cli(monkeypatch, capsys, *args, "--seed", "1", "--out", folder / "c0.pt", "--force")
    one_line(r, 2, f"{folder / 'c0.pt'}: no space left on device (ENOSPC)", "write elsewhere")
    assert_kept(before, folder)


def test_a_read_only_metrics_folder_is_one_line_naming_the_file(
    small_disk, tmp_path, data, c0, monkeypatch, capsys
):
    metrics = small_disk or tmp_path / "ro"
    metrics.mkdir(exist_ok=True)
    earlier = metric_path(metrics, "train", "other", 1, "en")
    write_metrics(earlier, [dict(kind="train", run_id="other", size="nano", n_params=1,
                                 task_index=1, cycle=1, lang="en", step=0, loss=3.0)])  # fmt: skip
    if small_disk is not None:
        assert _mount("-o", "remount,ro", str(small_disk))
    else:  # no tmpfs: the OS refuses every new file in the folder (root ignores chmod)
        real_open = os.open

        def read_only(path, flags, *a, **k):
            if Path(path).parent == metrics and flags & os.O_CREAT:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", read_only)
    before, kept = snapshot(metrics), snapshot(c0.parent)
    r = cli(monkeypatch, capsys, "train-task", "--ckpt", c0, "--lang", "en", "--data", data,
            "--preset", "tiny", "--out", tmp_path / "c1.pt", "--metrics", metrics, "--json")  # fmt: skip
    written = metric_path(metrics, "train", "nano-s1", 1, "en")
    one_line(r, 2, f"{written}: read-only file system (EROFS); write elsewhere")
    assert_kept(before, metrics)
    assert_kept(kept, c0.parent)


def test_an_output_that_is_a_folder_is_one_line_even_with_force(tmp_path, monkeypatch, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("years of work")
    before = snapshot(tmp_path)
    r = cli(monkeypatch, capsys, "init", "--size", "nano", "--tokenizer", "byte", "--out", out,
            "--force")  # fmt: skip
    one_line(r, 2, str(out))  # EISDIR, or refused before writing: a folder plc did not make
    assert_kept(before, tmp_path)


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("x" * 300 + ".pt", "file name too long (ENAMETOOLONG); choose a shorter name"),
        ("a-file/c0.pt", "a-file: file exists (EEXIST)"),  # a file where a folder must be
    ],
)
def test_names_the_os_refuses_are_one_line(name, fragment, tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    before = snapshot(tmp_path)
    r = cli(monkeypatch, capsys, "init", "--size", "nano", "--tokenizer", "byte", "--out",
            tmp_path / name)  # fmt: skip
    one_line(r, 2, fragment)
    assert_kept(before, tmp_path)


def test_refusal_names_the_file_the_user_asked_for():
    tmp = OSError(
        errno.EISDIR, "Is a directory", "runs/.c0.pt.0123456789abcdef.tmp", None, "runs/c0.pt"
    )
    assert refusal(tmp) == "runs/c0.pt: is a directory (EISDIR); it is a folder: give a file's path"
    assert user_path("data/.en.zarr.partial/val/c/0") == "data/en.zarr"
    assert user_path("data/en.zarr.partial") == "data/en.zarr.partial"  # not plc's name
    # torch reports a full disk as a RuntimeError raised while the OSError is handled.
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("unexpected pos 84608 vs 84560")  # noqa: B904
    except RuntimeError as e:
        assert refusal(e) == "no space left on device (ENOSPC); free space there or write elsewhere"
    # polars reports a full disk as its own error, the OS's code in the message.
    with pytest.raises(OSError) as caught, writing("m/x.parquet"):
        raise RuntimeError("parquet: underlying IO error: No space left on device (os error 28)")
    assert refusal(caught.value).startswith("m/x.parquet: no space left on device (ENOSPC); ")
    assert refusal(RuntimeError("Permission denied (os error 13)")).startswith(
        "permission denied (EACCES); check the permissions"
    )
    assert refusal(MemoryError()).startswith("out of memory; ")
    assert refusal(ValueError("x")) is None


# ------------------------------------------------------------------------------ bad files


def _probe_rows(task: int, auc) -> list[dict]:
    return [dict(kind="probe", run_id="nano-s0", size="nano", n_params=50_112, task_index=task,
                 cycle=1, lang="ru", probe_lang="vi", step=s, val_loss=3.0, auc=auc)
            for s in (0, 4)]  # fmt: skip


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda df: df.drop("auc"), "has no column 'auc' (a probe metric file has"),
        (lambda df: df.with_columns(pl.col("auc").cast(pl.String)), "column 'auc' holds String"),
        (lambda df: df.drop("run_id"), "has no column 'run_id'"),
    ],
)
def test_a_metric_file_without_a_column_or_with_another_type_is_one_line(
    change, fragment, tmp_path, monkeypatch, capsys
):
    for task in (2, 6, 8):
        write_metrics(metric_path(tmp_path, "probe", "nano-s0", task, "ru", "vi"),
                      _probe_rows(task, 3.0 + task / 100))  # fmt: skip
    bad = metric_path(tmp_path, "probe", "nano-s0", 6, "ru", "vi")
    change(pl.read_parquet(bad)).write_parquet(bad)
    before = snapshot(tmp_path)
    for command in (["fit-onset"], ["plot", "auc", "--out", tmp_path / "auc.png"]):
        r = cli(monkeypatch, capsys, *command, *sorted(tmp_path.glob("*.parquet")))
        one_line(r, 2, str(bad), fragment)
    assert_kept(before, tmp_path)


def test_a_checkpoint_whose_weights_do_not_match_its_config_is_named(c0, data, monkeypatch, capsys):
    import dataclasses

    ckpt = load_checkpoint(c0)
    ckpt.config = dataclasses.replace(ckpt.config, n_layer=ckpt.config.n_layer + 1)
    bad = c0.with_name("edited.pt")
    save_checkpoint(bad, ckpt)
    before = snapshot(c0.parent)
    r = cli(monkeypatch, capsys, "eval", bad, "--data", data, "--lang", "en", "--seqs", "2")
    one_line(r, 2, f"{bad}: its weights do not match its config (n_layer 2", "Missing key")
    assert_kept(before, c0.parent)


# ------------------------------------------------------------------------------------- a bug


def test_a_bug_is_one_line_naming_its_traceback_and_debug(tmp_path, monkeypatch, capsys):
    import plc.init

    (tmp_path / "c0.pt").write_bytes(b"an earlier checkpoint")
    before = snapshot(tmp_path)

    def broken(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(plc.init, "init_checkpoint", broken)
    args = ["init", "--size", "nano", "--out", tmp_path / "c0.pt", "--force"]
    err = one_line(cli(monkeypatch, capsys, *args), 1, "bug in plc (ZeroDivisionError: division",
                   "--debug shows it; please report it")  # fmt: skip
    log = Path(re.search(r"the traceback is in (\S+),", err).group(1))
    text = log.read_text()
    assert "Traceback" in text and "ZeroDivisionError" in text and "plc init --size nano" in text
    log.unlink()
    assert_kept(before, tmp_path)
    with pytest.raises(ZeroDivisionError):  # --debug: the traceback itself
        cli(monkeypatch, capsys, *args, "--debug")


def test_plc_error_keeps_its_brackets(tmp_path, monkeypatch, capsys):
    # One line is printed as text: a path with [brackets] is not taken for rich markup.
    r = cli(monkeypatch, capsys, "inspect", tmp_path / "[red]x[/red].pt")
    one_line(r, 2, "[red]x[/red].pt")


# ------------------------------------------------------------------- init's shape, plan --json


def test_init_refuses_a_size_with_a_custom_shape(tmp_path, monkeypatch, capsys):
    for extra in (["--layers", "4"], ["--d-model", "128", "--heads", "2"]):
        r = cli(monkeypatch, capsys, "init", "--size", "nano", *extra, "--out", tmp_path / "c.pt")
        one_line(r, 2, "--size nano sets the whole shape", f"(got {extra[0]}")
    assert not list(tmp_path.iterdir())
    ok = cli(monkeypatch, capsys, "init", "--layers", "4", "--d-model", "128", "--tokenizer",
             "byte", "--out", tmp_path / "c.pt", "--json")  # fmt: skip
    assert ok.returncode == 0 and json.loads(ok.stdout)["size"] == "L4-d128"


def test_plan_json(tmp_path, monkeypatch, capsys):
    args = ["plan", "lr-grid", "--sizes", "nano,micro", "--preset", "tiny", "--lrs", "1e-3"]
    r = cli(monkeypatch, capsys, *args, "--json")
    got = json.loads(r.stdout)
    assert r.returncode == 0 and got["plan_file"] is None and got["format"] == "make"
    assert (got["jobs"], got["tasks"]) == (6, 2)
    plan = build_plan("lr-grid", sizes=["nano", "micro"], preset="tiny", lrs=[1e-3])
    assert got["plan"] == json.loads(json.dumps(plan_json(plan)))
    r = cli(monkeypatch, capsys, *args, "--json", "-o", tmp_path / "Makefile")
    got = json.loads(r.stdout)
    assert got["plan_file"] == str(tmp_path / "Makefile")
    assert json.loads((tmp_path / "plan.json").read_text()) == got["plan"]


# ------------------------------------------------------------------------ hostile plan paths

# A stand-in for `plc`: records its arguments and makes the file a job's target is, so that make
# runs a whole plan in a second; fit-lr (what make's last job runs) is the real command.
FAKE_PLC = r"""
import json, os, sys
from pathlib import Path
argv = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\n")
if argv[0] not in ("shard", "init", "train-task"):
    os.execv(sys.executable, [sys.executable, "-m", "plc", *argv])
out = Path(argv[argv.index("--out") + 1])
if argv[0] == "shard":
    out.mkdir(parents=True, exist_ok=True)
    (out / "zarr.json").write_text("{}")
    sys.exit(0)
out.parent.mkdir(parents=True, exist_ok=True)
if argv[0] == "init":
    out.write_bytes(b"c0")
    sys.exit(0)
import polars as pl
run = Path(argv[argv.index("--ckpt") + 1]).parent.name
lr = float(argv[argv.index("--lr") + 1])
size = run.split("-")[0]
metrics = Path(argv[argv.index("--metrics") + 1]) / f"train-{run}-t1-en.parquet"
metrics.parent.mkdir(parents=True, exist_ok=True)
# The runner's contract: a diverged task writes its train metric file, status "diverged" on
# every row, and no checkpoint. Here any rate above 1 diverges, after step 3.
diverged = lr > 1
fail = os.environ.get("FAKE_FAIL", "")  # "record": diverge without the record; "crash": exit 1
row = dict(kind="train", run_id=run, size=size, n_params=1, task_index=1, cycle=1, lang="en",
           grad_norm=1.0, tokens_per_s=1000.0)
rows = [dict(row, step=s, tokens=256 * (s + 1), loss=3.0, lr=lr, val_loss=(None if diverged else
        2.0 + 1e3 * (lr - 0.0025) ** 2 + (0.1 if size == "nano" else 0.0)),
        status="diverged" if diverged else "ok") for s in range(4)]
if fail == "crash":
    sys.exit(1)
if not (diverged and fail == "record"):
    pl.DataFrame(rows).write_parquet(metrics)
if diverged:
    print("error: training diverged at step 3", file=sys.stderr)
    sys.exit(3)
out.write_bytes(b"c1")
"""


def _make(folder: Path, *args: str, log: Path, **env: str) -> subprocess.CompletedProcess:
    fake = folder.parent / "fake_plc.py"
    fake.write_text(FAKE_PLC)
    cmd = f"{sys.executable} {fake}"
    environ = {**os.environ, "FAKE_LOG": str(log), "PLC_THREADS": "1", **env}
    return subprocess.run(["make", f"PLC={cmd}", f"PLC_TRAIN={cmd}", *args], cwd=folder,
                          capture_output=True, text=True, env=environ, timeout=600)  # fmt: skip


def _lr_grid(folder: Path, monkeypatch, capsys, *extra: str):
    args = ["plan", "lr-grid", "--sizes", "nano,micro", "--preset", "tiny", *extra]
    r = cli(monkeypatch, capsys, *args, "-o", folder / "Makefile")
    assert r.returncode == 0, r.stderr
    from plc.plan import read_plan

    return read_plan(folder / "plan.json")


@pytest.mark.parametrize("fmt", ["make", "snakemake"])
def test_a_path_make_cannot_carry_is_refused_before_anything_is_written(
    fmt, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    out_dir = "r$(shell touch X)" if fmt == "make" else "r{x}"
    r = cli(monkeypatch, capsys, "plan", "lr-grid", "--sizes", "nano,micro", "--preset", "tiny",
            "--out-dir", out_dir, "--format", fmt, "-o", "plan.mk")  # fmt: skip
    one_line(r, 2, f"the plan's path '{out_dir}/")
    assert not list(tmp_path.iterdir())
    r = cli(monkeypatch, capsys, "plan", "continual", "--cycle", "en,zh\nall:", "-o", "p.mk")
    one_line(r, 2, "'zh\\nall:' is not a language code")
    r = cli(monkeypatch, capsys, "plan", "continual", "--out-dir", "-rf", "-o", "p.mk")
    one_line(r, 2, "--out-dir '-rf' would read as a flag", "write it ./-rf")
    assert not list(tmp_path.iterdir())


@needs_make
def test_hostile_paths_reach_the_commands_as_file_names_and_run_nothing(
    tmp_path, monkeypatch, capsys
):
    study = tmp_path / "study"
    monkeypatch.chdir(tmp_path)  # the plan's paths are relative to where make runs
    hostile = "my runs/$HOME`touch Y`'q\"#x:*"
    plan = _lr_grid(study, monkeypatch, capsys, "--lrs", "1e-3,3e-3", "--out-dir", hostile,
                    "--data", "da ta$HOME`touch X`")  # fmt: skip
    text = (study / "Makefile").read_text()
    assert "$$HOME" in text and not re.search(r"(?<!\$)\$HOME", text)
    log = tmp_path / "argv.jsonl"
    dry = _make(study, "-n", log=log)
    assert dry.returncode == 0, dry.stderr
    assert not log.exists() and not list(study.glob("*[XY]")) and not (study / "my runs").exists()
    real = _make(study, "-j2", log=log)
    assert real.returncode == 0, real.stderr
    assert not list(study.rglob("X")) and not list(study.rglob("Y"))
    # Each command got its paths as the plan has them, word for word.
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(map(tuple, calls)) == sorted(tuple(j.command_line()) for j in plan.jobs)
    for job in plan.jobs:
        assert (study / job.output).is_file(), job.output
    assert _make(study, "-q", log=log).returncode == 0  # up to date: nothing to redo


@pytest.mark.slow
def test_snakemake_dry_run_of_a_hostile_path_runs_nothing(tmp_path, monkeypatch, capsys):
    pytest.importorskip("snakemake")
    monkeypatch.chdir(tmp_path)
    r = cli(monkeypatch, capsys, "plan", "lr-grid", "--sizes", "nano,micro", "--preset", "tiny",
            "--lrs", "1e-3", "--out-dir", "r$(touch X) `touch Y`;'\"#%=|\\", "--format",
            "snakemake", "-o", "Snakefile")  # fmt: skip
    assert r.returncode == 0, r.stderr
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-c1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "6 jobs" in dry.stdout + dry.stderr or "total" in dry.stdout + dry.stderr
    assert not (tmp_path / "X").exists() and not (tmp_path / "Y").exists()


# ------------------------------------------------------------------ a diverged rate in App. A


@needs_make
def test_a_diverged_rate_finishes_the_grid_and_make_stays_done(tmp_path, monkeypatch, capsys):
    study = tmp_path / "study"
    study.mkdir()
    monkeypatch.chdir(study)
    plan = _lr_grid(study, monkeypatch, capsys, "--lrs", "1e-3,3e-3,1e3")
    log = tmp_path / "argv.jsonl"
    first = _make(study, "-j2", log=log)
    assert first.returncode == 0, first.stderr
    fit = (study / "runs" / "lr-fit.txt").read_text()
    assert "diverged: nano (d 64) at η 1e3 after step 3; left out of the fit" in fit
    assert "diverged: micro (d 128) at η 1e3 after step 3; left out of the fit" in fit
    assert "law: η = 3e-3·(64/d)^" in fit  # the best of the rates that trained
    assert not (study / "runs" / "nano-s0-lr1000" / "c1.pt").exists()
    # Done: `make -q` agrees, and a second make trains nothing again.
    ran = len(log.read_text().splitlines())
    assert _make(study, "-q", log=log).returncode == 0
    before = snapshot(study)
    again = _make(study, log=log)
    assert again.returncode == 0 and len(log.read_text().splitlines()) == ran
    assert_kept(before, study)
    # status shows the two runs as diverged, the others as done (the stand-in's checkpoints
    # become real ones: status reads their metadata; --force replaces only real checkpoints).
    for run in plan.runs:
        folder = study / run.folder
        trained = (folder / "c1.pt").exists()
        (folder / "c0.pt").unlink()
        c0 = init_checkpoint(folder / "c0.pt", size=run.size, tokenizer="byte", context=32,
                             run_id=run.run_id)  # fmt: skip
        if trained:
            (folder / "c1.pt").unlink()
            ckpt = load_checkpoint(c0.path)
            ckpt.meta.update(task_index=1, history=[{"lang": "en", "tokens": 2048}])
            save_checkpoint(folder / "c1.pt", ckpt)
    r = cli(monkeypatch, capsys, "status", study, "--json")
    states = {run["run_id"]: run["state"] for run in json.loads(r.stdout)["runs"]}
    assert states == {j.run_id: "diverged" if "lr1000" in j.run_id else "done"
                      for j in plan.jobs if j.stage == "train"}  # fmt: skip


@needs_make
@pytest.mark.parametrize("fail", ["record", "crash"])
def test_a_failed_training_is_still_a_failure(fail, tmp_path, monkeypatch, capsys):
    # Exit 3 without the diverged record, or a crash: make fails, and a rerun tries again.
    study = tmp_path / "study"
    monkeypatch.chdir(tmp_path)
    _lr_grid(study, monkeypatch, capsys, "--lrs", "1e-3,1e3", "--out-dir", "runs")
    log = tmp_path / "argv.jsonl"
    r = _make(study, "-k", log=log, FAKE_FAIL=fail)
    assert r.returncode != 0 and "lr-fit.txt" not in "".join(p.name for p in study.rglob("*"))
    trained = sum(json.loads(x)[0] == "train-task" for x in log.read_text().splitlines())
    _make(study, "-k", log=log, FAKE_FAIL=fail)
    again = sum(json.loads(x)[0] == "train-task" for x in log.read_text().splitlines())
    assert again > trained


def test_fit_lr_reports_a_diverged_rate_and_fits_the_rest(tmp_path, monkeypatch, capsys):
    def run(run_id, size, lr, status, val, steps=12):
        rows = [dict(kind="train", run_id=run_id, size=size, n_params=1, task_index=1, cycle=1,
                     lang="en", step=s, loss=3.0, lr=lr * min(1, (s + 1) / 4), val_loss=val,
                     status=status) for s in range(steps)]  # fmt: skip
        write_metrics(metric_path(tmp_path, "train", run_id, 1, "en"), rows)

    for size, best in (("nano", 3e-3), ("micro", 1e-3)):
        for lr in (1e-3, 3e-3):
            run(f"{size}-s0-lr{lr:g}", size, lr, "ok", 3.0 if lr == best else 3.5)
        # Diverged after step 1, in its warm-up: its scheduled lr is half its peak, the run id's.
        run(f"{size}-s0-lr1000", size, 1000.0, "diverged", None, steps=2)
    from plc.lrsearch import fit_lr

    res = fit_lr(sorted(tmp_path.glob("*.parquet")))
    assert [(g.size, g.lr, g.runs, g.step) for g in res.diverged] == [
        ("nano", 1000.0, 1, 1),
        ("micro", 1000.0, 1, 1),
    ]
    assert [(w.size, w.lr) for w in res.winners] == [("nano", 3e-3), ("micro", 1e-3)]
    assert all(g.lr < 1 for g in res.grid)
    # Every rate at one size diverged: no law, and the line says why.
    for p in tmp_path.glob("train-micro-s0-lr0.00*"):
        p.unlink()
    r = cli(monkeypatch, capsys, "fit-lr", *sorted(tmp_path.glob("*.parquet")))
    assert_bad_input(r, "got d_model 64; every rate at d_model 128 diverged")


@pytest.mark.slow
@needs_make
def test_a_real_make_of_a_grid_under_a_hostile_path(tmp_path, monkeypatch, capsys):
    study = tmp_path / "study"
    study.mkdir()
    monkeypatch.chdir(study)
    hostile = "my runs/$HOME`touch Y`'#x"
    plan = _lr_grid(study, monkeypatch, capsys, "--lrs", "1e-3,3e-3", "--out-dir", hostile)
    env = {**os.environ, "PLC_THREADS": "1"}
    proc = subprocess.run(["make", "-j2", f"PLC={sys.executable} -m plc"], cwd=study,
                          capture_output=True, text=True, env=env, timeout=1800)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(study.rglob("Y"))
    for job in plan.jobs:
        assert (study / job.output).is_file(), job.output
    assert "law: η = " in (study / hostile / "lr-fit.txt").read_text()
    load_checkpoint(study / hostile / "micro-s0-lr0.003" / "c1.pt")  # a real checkpoint


@pytest.mark.slow
def test_snakemake_finishes_a_grid_with_a_diverged_rate(tmp_path, monkeypatch, capsys):
    pytest.importorskip("snakemake")
    monkeypatch.chdir(tmp_path)
    r = cli(monkeypatch, capsys, "plan", "lr-grid", "--sizes", "nano,micro", "--preset", "tiny",
            "--lrs", "1e-3,3e-3,1e3", "--format", "snakemake", "-o", "Snakefile")  # fmt: skip
    assert r.returncode == 0, r.stderr
    fake = tmp_path / "fake_plc.py"
    fake.write_text(FAKE_PLC)
    cmd = f"{sys.executable} {fake}"
    env = {**os.environ, "FAKE_LOG": str(tmp_path / "argv.jsonl"), "PLC_THREADS": "1"}
    snake = [sys.executable, "-m", "snakemake", "-c2", "--config", f"plc={cmd}", f"plc_train={cmd}"]
    proc = subprocess.run(snake, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "diverged: micro (d 128) at η 1e3" in (tmp_path / "runs" / "lr-fit.txt").read_text()
    again = subprocess.run([*snake, "-n"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_status_of_a_train_file_without_a_rate_is_no_time_left_not_a_bug(
    tmp_path, monkeypatch, capsys
):
    rows = [dict(kind="train", run_id="nano-s0", size="nano", n_params=50_112, task_index=1,
                 cycle=1, lang="ru", step=s, loss=3.0) for s in (0, 4)]  # fmt: skip
    write_metrics(metric_path(tmp_path, "train", "nano-s0", 1, "ru"), rows)
    r = cli(monkeypatch, capsys, "status", tmp_path, "--json")
    assert r.returncode == 0, r.stderr
    (run,) = json.loads(r.stdout)["runs"]
    assert (run["tasks_done"], run["tokens_per_s"], run["seconds_left"]) == (1, None, None)
