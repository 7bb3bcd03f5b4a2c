"""plc status: a study's state from its files alone, checked against the files themselves."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import assert_bad_input, copy_with_a_second_cycle_of_probes, run_plc

from plc.errors import PlcError
from plc.plan import read_plan
from plc.status import planned_work, status
from plc.store import progress_path
from plc.study import find_study_files


def _probe_auc(metrics, run_id: str, task: int) -> float:
    (path,) = metrics.glob(f"probe-{run_id}-t{task}-*-vi.parquet")
    return float(pl.read_parquet(path)["auc"][0])


def _median_rate(path) -> float:
    return statistics.median(pl.read_parquet(path)["tokens_per_s"].to_list())


def test_finished_study(tiny_study):
    res = status(tiny_study)
    metrics = tiny_study / "metrics"
    assert [r.run_id for r in res.runs] == ["micro-s0", "nano-s0"]
    for r in res.runs:
        assert (r.tasks_done, r.tasks_planned, r.cycles_done, r.cycles_planned) == (8, 8, 1, 1)
        assert r.last_checkpoint == str(tiny_study / r.run_id / "c8.pt") and r.last_lang == "ru"
        assert (r.probes_done, r.probes_planned) == (4, 4)  # from scratch, after zh, de, ru
        assert r.state == "done" and r.jobs == [] and r.seconds_left == 0
        # eq. 1 against the first end-of-cycle probe (task 8, after ru): one cycle, so the latest
        # probe is that baseline (a later one: test_auc_change_is_eq_1_at_the_latest_probe).
        assert (r.auc_change, r.auc_change_task) == (0.0, 8)
        # Three probes: fit-onset's verdict, too few to measure the noise, no onset.
        assert r.onset is None and r.onset_note.startswith("none (too few probes (3)")
        diag = pl.read_parquet(metrics / f"diagnose-{r.run_id}-t8-ru.parquet")
        whole = diag.filter(pl.col("metric") == "dormant_pct", pl.col("layer").is_null())
        assert r.last_diagnose == 8
        assert r.diagnose["dormant_pct"] == pytest.approx(whole["value"][0])
        assert r.tokens_per_s == pytest.approx(
            _median_rate(metrics / f"train-{r.run_id}-t8-ru.parquet")
        )
    assert res.seconds_left == 0 and res.jobs == []


def test_auc_change_is_eq_1_at_the_latest_probe(tiny_study, tmp_path):
    study = copy_with_a_second_cycle_of_probes(tiny_study, tmp_path / "study", rise=1.1)
    nano = next(r for r in status(study).runs if r.run_id == "nano-s0")
    assert nano.auc_change == pytest.approx(10.0, abs=1e-4) and nano.auc_change_task == 16
    # Independently of status: the same from the two files eq. 1 names.
    first = _probe_auc(study / "metrics", "nano-s0", 8)
    assert nano.auc_change == pytest.approx(
        100 * (_probe_auc(study / "metrics", "nano-s0", 16) / first - 1)
    )


def test_run_in_progress_in_the_plan_layout(tiny_study, tmp_path):
    """`plc plan -o DIR/Makefile` layout (DIR/runs/<run id>/, DIR/runs/metrics/); nano stopped
    after task 6 with task 7 saving resumable state, a stale temporary file, micro not started."""
    from plc.plan import build_plan, write_plan

    plan = build_plan(
        "continual",
        sizes=["nano", "micro"],
        cycles=1,
        preset="tiny",
        probe_after=["zh", "de", "ru"],
        out_dir="runs",
    )
    write_plan(plan, tmp_path / "Makefile")
    runs = tmp_path / "runs"
    shutil.copytree(tiny_study / "nano-s0", runs / "nano-s0")
    metrics = runs / "metrics"
    metrics.mkdir()
    for f in (tiny_study / "metrics").glob("*nano-s0*.parquet"):
        if f.name.startswith("train-") and "-t7-" in f.name:  # the rows its last save wrote
            shutil.copy(f, progress_path(metrics / f.name))
        elif "-t8-" not in f.name and "-t7-" not in f.name:
            shutil.copy(f, metrics)
    for k in (7, 8):
        (runs / "nano-s0" / f"c{k}.pt").unlink()
    (runs / "nano-s0" / "c7.pt.resume").write_bytes(b"state")
    old = runs / "nano-s0" / ".c7.pt.abcd.tmp"
    old.write_bytes(b"")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    # A token store being written: its chunks are fresh, its top folder's own time is not.
    store = tmp_path / "data" / ".vi.zarr.partial"
    (store / "train").mkdir(parents=True)
    (store / "train" / "c0").write_bytes(b"tokens")
    os.utime(store, (two_hours_ago, two_hours_ago))

    res = status(tmp_path, stale_minutes=30)
    (shard,) = res.jobs
    assert (shard.path, shard.what, shard.run_id, shard.stale) == (
        str(store),
        "partial",
        None,
        False,
    )
    nano, micro = res.runs
    assert (nano.run_id, nano.tasks_done, nano.tasks_planned) == ("nano-s0", 6, 8)
    assert (nano.probes_done, nano.probes_planned) == (3, 4)
    assert nano.last_checkpoint.endswith("c6.pt") and nano.last_lang == "de"
    assert nano.state == "stale"
    jobs = {os.path.basename(j.path): j for j in nano.jobs}
    assert jobs["c7.pt.resume"].what == "resume" and not jobs["c7.pt.resume"].stale
    assert jobs[".c7.pt.abcd.tmp"].stale and jobs[".c7.pt.abcd.tmp"].minutes >= 119
    # Two tasks and one probe of 2,048 tokens are left, less task 7's saved 2,048 tokens, at the
    # median rate of task 6 (the latest finished task).
    rate = _median_rate(metrics / "train-nano-s0-t6-de.parquet")
    assert nano.tokens_per_s == pytest.approx(rate)
    assert nano.seconds_left == pytest.approx((3 * 2048 - 2048) / rate)
    assert (micro.size, micro.state, micro.tasks_planned) == ("micro", "not started", 8)
    assert res.seconds_left is None  # micro has no measured rate yet


def test_metrics_folder_alone(tiny_study):
    res = status(tiny_study / "metrics")
    nano = next(r for r in res.runs if r.run_id == "nano-s0")
    assert nano.last_checkpoint is None and nano.tasks_done == 8 and nano.last_lang == "ru"
    assert (nano.probes_done, nano.probes_planned, nano.state) == (4, None, "")
    assert nano.size == "nano" and nano.n_params > 0


def test_planned_work_of_a_plan_json(tmp_path):
    from plc.plan import build_plan, write_plan

    plan = build_plan(
        "continual", sizes=["nano"], cycles=2, preset="tiny", probe_after=["zh", "de", "ru"]
    )
    _, data = write_plan(plan, tmp_path / "Makefile")
    work = planned_work(read_plan(data))
    assert work.tasks == {"nano-s0": 16}
    probed = [(2, "zh"), (6, "de"), (8, "ru"), (10, "zh"), (14, "de"), (16, "ru")]
    assert work.probes == {
        "nano-s0": {"probe-nano-s0-t0-init-vi-scratch.parquet"}
        | {f"probe-nano-s0-t{t}-{lang}-vi.parquet" for t, lang in probed}
    }
    assert work.cycle_length == 8
    # A cycle is the plan's own: the control's 24 chains are one, a two-language cycle is two.
    control = build_plan("control", sizes=["nano"], tasks=24)
    _, data = write_plan(control, tmp_path / "control" / "Snakefile", "snakemake")
    assert planned_work(read_plan(data)).cycle_length == 24
    short = build_plan("continual", sizes=["nano"], cycles=3, preset="tiny", cycle=["en", "fr"])
    _, data = write_plan(short, tmp_path / "Makefile.short")
    assert (
        data.name == "Makefile.short.plan.json" and planned_work(read_plan(data)).cycle_length == 2
    )
    # A Makefile alone is shown, not parsed: nothing is planned without its plan.json.
    (tmp_path / "plan.json").unlink()
    files = find_study_files(tmp_path)
    assert files.plan == tmp_path / "Makefile" and files.plan_data is None


def test_a_transfer_study_is_done_when_its_branches_and_probes_are(tiny_study, tmp_path):
    from plc.plan import build_plan, write_plan

    # The transfer plan trains c1-<lang>.pt from one c0.pt, and probes each and c0 from scratch.
    plan = build_plan("transfer", sizes=["nano"], preset="tiny")
    _, data = write_plan(plan, tmp_path / "Makefile")
    work = planned_work(read_plan(data))
    langs = [Path(j.output).stem.split("-")[1] for j in plan.jobs if j.stage == "train"]
    assert work.tasks == {"nano-s0": 1} and len(langs) == 8
    run = tmp_path / "runs" / "nano-s0"
    run.mkdir(parents=True)
    shutil.copy(tiny_study / "nano-s0" / "c0.pt", run / "c0.pt")
    for lang in langs[:3]:
        shutil.copy(tiny_study / "nano-s0" / "c1.pt", run / f"c1-{lang}.pt")
    (nano,) = status(tmp_path).runs
    assert (nano.tasks_done, nano.tasks_planned, nano.probes_planned) == (1, 1, 9)
    assert nano.state == "pending"  # no probe yet
    metrics = tmp_path / "runs" / "metrics"
    metrics.mkdir()
    probe = next((tiny_study / "metrics").glob("probe-nano-s0-t8-*.parquet"))
    for name in sorted(work.probes["nano-s0"]):
        shutil.copy(probe, metrics / name)
    (nano,) = status(tmp_path).runs
    assert nano.probes_done == 9 and nano.state == "done"
    assert nano.last_checkpoint == str(run / f"c1-{min(langs[:3])}.pt")  # the first, by name


def test_a_folder_with_its_own_plan_is_another_study(tiny_study, tmp_path):
    # The demo's control/ reuses run ids (nano-s0): walked into, its probes would join this
    # study's nano-s0 series.
    study = tmp_path / "study"
    shutil.copytree(tiny_study, study)
    nested = study / "control"
    shutil.copytree(study / "metrics", nested / "metrics")
    shutil.copy(study / "Makefile", nested / "Makefile")
    files = find_study_files(study)
    assert files.nested == [nested]
    assert not [m for m in files.metrics if nested in m.path.parents]
    assert len(find_study_files(nested).metrics) == len(files.metrics)
    proc = run_plc("status", study)
    assert proc.returncode == 0 and f"plc status {nested}" in proc.stdout.replace("\n", "")


def test_folder_without_plc_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PlcError, match="no plc files"):
        find_study_files(tmp_path)
    assert_bad_input(run_plc("status", tmp_path), "no plc files")
    assert_bad_input(run_plc("status", tmp_path / "absent"), "no folder")


def test_cli_json(tiny_study):
    proc = run_plc("status", tiny_study, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [r["run_id"] for r in out["runs"]] == ["micro-s0", "nano-s0"]
    assert all(r["state"] == "done" and r["probes_planned"] == 4 for r in out["runs"])
