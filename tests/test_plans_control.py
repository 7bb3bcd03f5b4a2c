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
def test_the_transfer_control_falls_then_rises_with_an_interior_onset(tmp_path):
    """The transfer control's point, loosely (issue 22; exact onsets differ between CPUs and
    seeds): on nano the probe AUC first falls — every task teaches the shared map — then rises,
    and fit-onset finds an onset that is neither the first nor the last probed task. This is the
    run nano-s0 of examples/onset-law-control to task 24 (the stores are sharded with the first
    seed, so seed 1 alone is another sample: measured, it rose from the start): −5.8 % at task 3,
    +7.6 % at task 24, onset 3 [2, 6] by the former minimum rule, minimum 2 and p = 0.055 by the
    current AR(1) test: one seed's 15 probes are marginal evidence, so the loose setting tests at
    α = 0.1 (examples/onset-law-control reads the study at 0.05)."""
    from plc.cli import run_argv
    from plc.onset import probe_series, read_probes
    from plc.runner import run_plan
    from plc.study import fit_onset

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
    values = [round(v, 1) for v in series.value]
    (run,) = fit_onset(probes, models=[], probe_after=None, alpha=0.1).runs
    assert run.onset is not None, f"no onset ({run.no_onset}); AUC change (%): {values}"
    assert series.task_index[0] < run.onset < series.task_index[-1], values
    assert min(series.value) < -1.0 and series.value[-1] > min(series.value) + 2.0, values
