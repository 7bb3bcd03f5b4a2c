"""The control plan end to end, shortened: its argv are real plc commands that run and chain."""

from __future__ import annotations

import polars as pl
import pytest

from plc.plan import build_plan


@pytest.mark.slow
def test_a_short_control_plan_runs_in_process(tmp_path):
    from plc.cli import run_argv
    from plc.runner import run_plan

    plan = build_plan(
        "control",
        sizes=["nano"],
        tasks=4,
        data=str(tmp_path / "data"),
        out_dir=str(tmp_path / "runs"),
        weight_decay=0.1,
    )
    done = run_plan(plan, workers=2, log_dir=tmp_path / "logs", execute=run_argv)
    assert all(not d.skipped for d in done) and len(done) == len(plan.jobs)
    metrics = tmp_path / "runs" / "metrics"
    probes = pl.read_parquet(sorted(metrics.glob("probe-nano-s0-wd0.1-t*-m00.parquet")))
    assert sorted(set(probes["task_index"])) == [1, 2, 3, 4]
    assert set(probes["probe_lang"]) == {"m00"} and set(probes["probe_seed"]) == {0, 1}
    train = pl.read_parquet(metrics / "train-nano-s0-wd0.1-t3-m03.parquet")
    assert train["step"].max() == 127  # the control preset: 128 steps of 16 × 64 tokens
    from plc.store import load_checkpoint

    history = load_checkpoint(tmp_path / "runs" / "nano-s0-wd0.1" / "c4.pt").meta["history"]
    assert [h["lang"] for h in history] == ["m01", "m02", "m03", "m04"]
    assert {h["weight_decay"] for h in history} == {0.1} and {h["preset"] for h in history} == {
        "control"
    }
    onset = pl.read_parquet(tmp_path / "runs" / "onset.parquet")
    assert onset["run_id"].to_list() == ["nano-s0-wd0.1"]
    assert (tmp_path / "runs" / "figures" / "probing.png").stat().st_size > 1000
    again = run_plan(plan, workers=2, log_dir=tmp_path / "logs", execute=run_argv)
    assert all(d.skipped for d in again)


@pytest.mark.slow
def test_the_control_loses_plasticity_within_eight_tasks(tmp_path):
    """The positive control's point, loosely (exact numbers differ between CPUs): a nano model's
    probe AUC after tasks 6-8 is above its first probe's. Measured here: +20 % (jitter ~3 %)."""
    from plc.cli import run_argv
    from plc.onset import probe_series, read_probes
    from plc.runner import run_plan

    plan = build_plan(
        "control",
        sizes=["nano"],
        tasks=8,
        diagnose_every=0,
        data=str(tmp_path / "data"),
        out_dir=str(tmp_path / "runs"),
    )
    run_plan(plan, workers=2, log_dir=tmp_path / "logs", execute=run_argv)
    probes = sorted((tmp_path / "runs" / "metrics").glob("probe-*.parquet"))
    (series,) = probe_series(read_probes(probes), "first", None)
    assert list(series.task_index) == list(range(1, 9))
    late = sum(series.value[-3:]) / 3  # eq. 1: % change from the probe after task 1
    assert late > 5.0, f"AUC change (%) at tasks 1-8: {[round(v, 1) for v in series.value]}"


@pytest.mark.slow
def test_the_transfer_control_runs_and_every_run_gets_a_verdict(tmp_path):
    """The transfer control (issue 22) to task 24, its mechanics: every probe taken, every AUC a
    finite number, and the plan's own fit-onset giving the run one verdict whose point lies
    inside its interval. Whether this run shows an onset, and where, is not asserted: at laptop
    scale that changes with the CPU and the seed (issue 27; a nano run measured p = 0.055 on one
    CPU and 0.229 on another). The statistics are checked on synthetic series with a known
    truth (test_onset_ci, test_study_properties)."""
    import math

    from plc.cli import run_argv
    from plc.onset import VERDICTS, probe_series, read_probes
    from plc.runner import run_plan
    from plc.study import judge_inputs, verdict_options

    plan = build_plan(
        "control",
        sizes=["nano"],
        tasks=24,
        shared=0.3,
        probe_repeats=1,
        diagnose_every=0,
        data=str(tmp_path / "data"),
        out_dir=str(tmp_path / "runs"),
    )
    run_plan(plan, workers=2, log_dir=tmp_path / "logs", execute=run_argv)
    probes = sorted((tmp_path / "runs" / "metrics").glob("probe-*.parquet"))
    (series,) = probe_series(read_probes(probes), "first", None)
    planned = sorted(j.task for j in plan.jobs if j.stage == "probe" and j.task)
    assert series.task_index == planned and len(planned) == 15
    assert all(math.isfinite(v) for v in series.auc)
    table = pl.read_parquet(tmp_path / "runs" / "onset.parquet")
    assert table["run_id"].to_list() == ["nano-s0"] and table["verdict"][0] in VERDICTS
    (run,) = judge_inputs(probes, verdict_options(plan)).runs  # the one the plan's job wrote
    assert (run.verdict, run.onset, run.onset_lo) == (
        table["verdict"][0],
        table["onset"][0],
        table["onset_lo"][0],
    )
    if run.drawn is not None:
        task, lo, hi = run.drawn
        assert lo <= task <= hi and task in series.task_index
