"""plc plan (Makefiles) and plc demo: the protocol as one graph of real plc commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import assert_bad_input, run_plc

from plc.plan import build_plan
from plc.plan.make import render_makefile
from plc.protocol import CYCLE


def test_continual_plan_has_the_protocol_shape():
    plan = build_plan(
        sizes=["nano", "micro"], cycles=2, preset="tiny", probe_after=["zh", "de", "ru"]
    )
    by_stage: dict[str, list] = {}
    for job in plan.jobs:
        by_stage.setdefault(job.stage, []).append(job)
    assert len(by_stage["data"]) == 9  # eight cycle languages and the probe language
    assert len(by_stage["train"]) == 2 * 2 * 8
    langs = [j.argv[j.argv.index("--lang") + 1] for j in by_stage["train"][:16]]
    assert langs == [*CYCLE, *CYCLE]
    # Each task trains the previous checkpoint: c(k-1) → c(k).
    first = by_stage["train"][0]
    assert first.inputs[0].endswith("nano-s0/c0.pt") and first.output.endswith("nano-s0/c1.pt")
    # Probes after zh, de, ru of both cycles, plus one from-scratch baseline, per size.
    probes = [j for j in by_stage["probe"] if "micro" in j.output]
    assert len(probes) == 1 + 3 * 2
    assert sum("--from-scratch" in j.argv for j in probes) == 1
    tasks = sorted(
        int(Path(j.inputs[0]).stem[1:]) for j in probes if "--from-scratch" not in j.argv
    )
    assert tasks == [2, 6, 8, 10, 14, 16]
    assert [Path(j.inputs[0]).stem for j in by_stage["diagnose"] if "micro" in j.output] == [
        "c8",
        "c16",
    ]
    # Analysis reads every probe and diagnose file.
    fit = next(j for j in by_stage["analysis"] if j.argv[0] == "fit-onset")
    assert (
        len(fit.inputs) == 2 * (7 + 2) and fit.command_line()[1 : 1 + len(fit.inputs)] == fit.inputs
    )


def test_stationary_plan_mixes_and_probes_every_task():
    plan = build_plan("stationary", sizes=["nano"], cycles=1, preset="tiny", diagnose_every=0)
    train = [j for j in plan.jobs if j.stage == "train"]
    assert all(j.argv[j.argv.index("--mix") + 1] == ",".join(CYCLE) for j in train)
    assert len([j for j in plan.jobs if j.stage == "probe"]) == 1 + 8
    assert not [j for j in plan.jobs if j.stage == "diagnose"]


def test_makefile_is_readable_and_uses_the_launcher():
    plan = build_plan(
        sizes=["nano"],
        cycles=2,
        preset="tiny",
        probe_after=["ru"],
        launcher="torchrun --nproc_per_node 8",
    )
    text = render_makefile(plan)
    assert "PLC_TRAIN ?= torchrun --nproc_per_node 8 -m plc" in text
    assert "$(RUNS)/nano-s0/c3.pt: $(RUNS)/nano-s0/c2.pt $(DATA)/fr.zarr/zarr.json\n" in text
    assert "\t$(PLC_TRAIN) train-task --lang fr --ckpt $(RUNS)/nano-s0/c2.pt" in text
    # One size: its onset but no fits; two probes: no moving average.
    assert "\t$(PLC) fit-onset $^ --model none --probe-after ru --window 1 " in text
    assert "figures/onset.png" not in text and "figures/probing.png" in text
    one_probe = render_makefile(
        build_plan(sizes=["nano"], cycles=1, preset="tiny", probe_after=["ru"])
    )
    assert "fit-onset" not in one_probe and "probing.png" not in one_probe
    assert "export PLC_THREADS ?= 1" in text


def test_plan_bad_inputs(tmp_path):
    assert_bad_input(run_plc("plan", "continual", "--sizes", "7M"), "unknown size")
    assert_bad_input(run_plc("plan", "control", "--sizes", "L2-d96"), "multiple of 64")
    assert_bad_input(run_plc("plan", "continual", "--cycles", "0"), "--cycles")
    assert_bad_input(run_plc("plan", "continual", "--probe-after", "vi"), "not in the cycle")
    assert_bad_input(run_plc("plan", "episodic"), "unknown problem")
    assert_bad_input(run_plc("plan", "continual", "--preset", "huge"), "unknown preset")
    (tmp_path / "Makefile").write_text("keep me")
    assert_bad_input(run_plc("plan", "continual", "-o", tmp_path / "Makefile"), "exists")
    assert (tmp_path / "Makefile").read_text() == "keep me"


@pytest.mark.slow
def test_demo_runs_in_process_and_resumes(tmp_path):
    from plc.cli import run_argv
    from plc.demo import demo

    kw = dict(sizes=["nano", "micro"], cycles=1, preset="tiny", control=[], execute=run_argv)
    res = demo(tmp_path / "d", **kw)
    assert res.skipped == 0 and res.ran == res.jobs
    assert [r.size for r in res.onsets] == ["nano", "micro"]
    # One cycle of zh, de, ru probes: three, too few for the noise model, so no onset.
    assert all(r.onset is None and r.no_onset.startswith("too few probes (3)") for r in res.onsets)
    assert all(Path(f).stat().st_size > 1000 for f in res.figures)
    assert Path(res.makefile).read_text().startswith("# plc protocol: continual")
    assert "<img" in Path(res.report).read_text()  # the study's page, figures embedded
    again = demo(tmp_path / "d", **kw)
    assert again.ran == 0 and again.skipped == again.jobs


def _make(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PLC": f"{sys.executable} -m plc"}
    return subprocess.run(
        ["make", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=900
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_makefile_end_to_end_idempotent_and_recovers(tmp_path):
    proc = run_plc(
        "plan",
        "continual",
        "--sizes",
        "nano,micro",
        "--cycles",
        "2",
        "--preset",
        "tiny",
        "--probe-after",
        "ru",
        "-o",
        tmp_path / "Makefile",
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "plan.json").exists()
    proc = _make(["-j2"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    metrics = sorted(p.name for p in (tmp_path / "runs" / "metrics").glob("*.parquet"))
    assert sum(n.startswith("train-") for n in metrics) == 2 * 16
    assert sum(n.startswith("probe-") for n in metrics) == 2 * (1 + 2)
    assert sum(n.startswith("diagnose-") and "units" not in n for n in metrics) == 2 * 2
    train = pl.read_parquet(tmp_path / "runs" / "metrics" / "train-micro-s0-t16-ru.parquet")
    assert set(train["task_index"]) == {16} and set(train["cycle"]) == {2}
    assert (tmp_path / "runs" / "onset.parquet").exists()
    assert (tmp_path / "runs" / "figures" / "probing.png").stat().st_size > 1000
    # Idempotent: everything is up to date, and a rerun does nothing.
    assert _make(["-q"], tmp_path).returncode == 0
    assert "Nothing to be done" in _make([], tmp_path).stdout
    # Recovery: a lost checkpoint is rebuilt, identical, with only what depends on it.
    last = tmp_path / "runs" / "micro-s0" / "c16.pt"
    before = last.read_bytes()
    last.unlink()
    assert _make(["-q"], tmp_path).returncode != 0
    proc = _make(["-j2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert last.read_bytes() == before
    assert "nano-s0/c" not in proc.stdout  # the other size was not touched
    assert _make(["-q"], tmp_path).returncode == 0


# A guard against a hung script, not a speed limit: a bin script's plan takes 1–3 min on 2 idle
# cores, and over 10 min beside another slow test on a loaded machine.
BIN_TIMEOUT = 1800


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, reset",
    [("plc-continual", ""), ("plc-stationary", "1"), ("plc-stationary", "")],
    ids=["continual", "stationary-reset", "stationary-continue"],
)
def test_bin_scripts_run_the_plan_of_their_kind(tmp_path, script, reset):
    env = {
        **os.environ,
        "DATA": str(tmp_path / "data"),
        "PLC": f"{sys.executable} -m plc",
        "PLC_THREADS": "1",
        "RESET_OPTIMIZER": reset,
    }
    argv = [str(Path(__file__).parents[1] / "bin" / script), "nano", "1", "tiny"]
    argv.append(str(tmp_path / "run"))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=BIN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = "nano-s0-reset" if script == "plc-stationary" and reset else "nano-s0"
    assert (tmp_path / "run" / run / "c8.pt").exists()
    outputs = sorted((tmp_path / "run").rglob("*.p*"))  # checkpoints and metric files
    probes = [p for p in outputs if p.name.startswith("probe-")]
    assert len(probes) == (1 + 3 if script == "plc-continual" else 1 + 8)
    assert len([p for p in outputs if p.name.startswith("diagnose-")]) == 1
    assert all(p.name.startswith(f"probe-{run}-t") for p in probes)
    if script == "plc-stationary":  # one run of continued tasks unless RESET_OPTIMIZER=1
        from plc.store import load_checkpoint

        history = load_checkpoint(tmp_path / "run" / run / "c8.pt").meta["history"]
        assert [bool(h.get("continued")) for h in history] == [not reset] * 8
    assert "Onset of plasticity loss per run" in proc.stdout
    # A rerun skips everything that exists (as the header promises): no file is written again.
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=BIN_TIMEOUT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps
    assert sorted((tmp_path / "run").rglob("*.p*")) == outputs


@pytest.mark.slow
def test_bin_continual_with_another_cycle_and_probe_language(tmp_path):
    env = {**os.environ, "DATA": str(tmp_path / "data"), "PLC": f"{sys.executable} -m plc"}
    script = str(Path(__file__).parents[1] / "bin" / "plc-continual")
    argv = [script, "--cycle", "en,fr", "--probe-lang", "de", "nano", "2", "tiny"]
    proc = subprocess.run(
        [*argv, str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=BIN_TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "de.zarr",
        "en.zarr",
        "fr.zarr",
    ]
    probes = sorted(p.name for p in (tmp_path / "run" / "metrics").glob("probe-*"))
    assert probes == [
        "probe-nano-s0-t0-init-de-scratch.parquet",
        "probe-nano-s0-t2-fr-de.parquet",
        "probe-nano-s0-t4-fr-de.parquet",
    ]
    diag = pl.read_parquet(tmp_path / "run" / "metrics" / "diagnose-nano-s0-t4-fr.parquet")
    assert diag.height > 0
    bad = subprocess.run(
        [script, "--probe-lang", "en", "nano"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "plc-continual: --probe-lang en is in the cycle en,zh,fr,ja,es,de,pt,ru: the probe "
        "language must be one the model never trains on"
    ]


def test_the_demo_control_line_gives_fit_onsets_verdict(tmp_path):
    """The positive control's verdict is fit-onset's: a rise from the first probe on is an onset
    at the first probe with its p-value; a flat series has none."""
    from test_onset import write_probe

    from plc.demo import _control
    from plc.study import judge, verdict_options
    from plc.study.run import StudyRun

    rng = np.random.default_rng(0)
    tasks = list(range(1, 13)) + [16, 20, 24]
    noise = rng.normal(0, 0.01, len(tasks))
    aucs = {
        run: [2.0 * (1 + slope * t) + e for t, e in zip(tasks, noise, strict=True)]
        for run, slope in (("rising", 0.02), ("flat", 0.0))
    }
    for run, values in aucs.items():
        for t, v in zip(tasks, values, strict=True):
            write_probe(tmp_path, run, "nano", 50_112, t, v)
    plan = build_plan("control", sizes=["nano"])  # every probe, as the control reads them
    judged = judge(sorted(tmp_path.glob("probe-*.parquet")), verdict_options(plan))
    by_run = {c.run.run_id: c for c in _control(StudyRun(plan, "Makefile", judged))}
    for run, values in aucs.items():
        c = by_run[run]
        # eq. 1: relative to the first end-of-cycle probe (these files name task 8's language ru)
        assert c.rise_pct == pytest.approx(100 * (values[-1] / values[tasks.index(8)] - 1))
        assert (c.run.n_probes, c.last_task) == (15, 24)
    rising, flat = by_run["rising"].run, by_run["flat"].run
    assert rising.verdict == "from the start" and rising.onset == 1
    assert rising.p_value < 0.05 and not flat.detected and flat.p_value >= 0.05


def test_every_verdict_reads_with_its_point_inside_its_interval():
    """One view of a verdict (the demo's lines, fit-onset's and the report's tables): an onset with
    its interval, the minimum where no significant rise follows it, and no point at all for a run
    still falling (whose fitted interval may lie elsewhere: the crash of issue 27) or with too
    few probes."""
    from plc.onset.table import RunOnset
    from plc.onset.view import onset_cell, verdict

    base = {"run_id": "nano-s0", "size": "nano", "n_params": 1, "n_probes": 24}
    base |= {"onset_tokens": None, "minimum_task": 6, "onset_lo": 4.0, "onset_hi": 10.0}
    onset = RunOnset(**base, onset=6.0, p_value=0.01, verdict="onset")
    assert onset.drawn == (6, 4, 10) and onset_cell(onset) == "6 [4, 10]"
    assert verdict(onset) == "nano-s0: onset at task 6 [4, 10], p = 0.010"
    start = RunOnset(**{**base, "onset_lo": 2.0, "onset_hi": 4.0}, onset=2.0, p_value=0.01)
    start.verdict = "from the start"
    assert verdict(start) == "nano-s0: onset at task 2 [2, 4] (from the start), p = 0.010"
    skewed = RunOnset(**base, onset=2.0, verdict="onset")  # an interval that misses its point
    assert skewed.drawn == (2, 2, 10) and onset_cell(skewed) == "2 [2, 10]"
    why = "no significant rise after the minimum: p = 0.3"
    none = RunOnset(**base, onset=None, detected=False, no_onset=why, verdict="no significant rise")
    assert none.drawn == (6, 4, 10) and onset_cell(none) == "none (minimum 6 [4, 10])"
    assert verdict(none) == f"nano-s0: no onset detected ({why})"
    falling = RunOnset(**{**base, "minimum_task": 24}, onset=None, detected=False)
    falling.verdict = "still falling"
    assert falling.drawn is None and onset_cell(falling) == "none (still falling)"
    few = RunOnset(**base, onset=None, detected=False, verdict="too few probes")
    assert few.drawn is None and onset_cell(few) == "none (too few probes)"  # no reason given
    # Onset tables written before the verdict column: the verdict from the columns they have.
    old = {**base, "onset": None, "detected": False}
    assert RunOnset(**old, no_onset="no onset yet: still falling").verdict == "still falling"
    assert RunOnset(**old, no_onset="too few probes (3): …").verdict == "too few probes"
    assert RunOnset(**old, no_onset=why).verdict == "no significant rise"
    assert RunOnset(**{**base, "onset": 6.0}, at_start=True).verdict == "from the start"
