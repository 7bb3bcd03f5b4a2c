"""What a plan costs before it starts (plan.json's `costs`, printed by `plc plan`), the checkpoint
retention policy (--keep-every) under make and Snakemake, and multi-node training jobs (--nodes)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_bad_input, cli

from plc.errors import PlcError
from plc.plan import build_plan, read_plan, write_plan
from plc.plan.costs import QWEN3_BYTES_PER_TOKEN
from plc.plan.make import render_makefile
from plc.plan.snakefile import model_config, render_snakefile
from plc.presets import get_preset
from plc.sizes import train_flops_per_token

PAPER = dict(
    preset="paper",
    sizes=["5M", "12M", "27M", "39M", "53M", "83M", "106M", "314M"],
    cycles=48,
    probe_after=["zh", "de", "ru"],
    tokenizer="qwen3",
    source="hf:uonlp/CulturaX",
    launcher="torchrun --nproc_per_node 8",
)


@pytest.fixture(scope="module")
def paper():
    return build_plan("continual", **PAPER)


def test_the_paper_plan_costs_what_its_jobs_add_up_to(paper):
    c = paper.costs
    p = get_preset("paper")
    tokens = p.steps * p.batch_tokens
    rate = 0.45 * 989e12 * 3600  # FLOPs an H100-hour at 45 % MFU
    # 48 cycles of 8 tasks and 3 probes (the probes' evaluations a little more) per size.
    train = sum(
        train_flops_per_token(model_config(s, "qwen3", p), p.seq_len) * tokens
        for s in PAPER["sizes"]
    )
    assert 528 * train / rate < c["hours"] < 528 * train / rate * 1.01  # + diagnoses
    assert 16_000 < c["hours"] < 16_300 and c["device"] == "h100" and c["devices_per_job"] == 8
    # 8 languages of 101B tokens and vi of 21B, 2.14 bytes a token; 2^27 tokens a shard file.
    assert c["store_tb"] == pytest.approx(829e9 * QWEN3_BYTES_PER_TOKEN / 1e12)
    assert c["store_files"] == 8 * (5 + 746 + 8) + (5 + 150 + 8)
    # Every checkpoint: c0 and 384 tasks a run, fp32 weights (no optimizer: reset every task).
    params = {s: model_config(s, "qwen3", p).n_params_total for s in PAPER["sizes"]}
    assert c["checkpoint_files"] == 8 * 385
    assert c["checkpoint_tb"] == pytest.approx(385 * 4 * sum(params.values()) / 1e12)
    # The critical path: the 314M run's 384 tasks one after the other, its last probe and the
    # analysis, after a language's shard parts.
    big = next(s for s in c["sizes"] if s["size"] == "314M")
    chain = 384 * big["task_hours"] / 24
    assert chain < c["critical_path_days"] < chain + 0.5
    assert c["mean_devices"] == pytest.approx(c["hours"] / (c["critical_path_days"] * 24))
    # How each size trains on an 80 GB H100: as before, DDP at the preset's micro-batch.
    assert [(s["strategy"], s["micro_batch"], s["fits"]) for s in c["sizes"]] == [
        ("ddp", 16, True)
    ] * 8
    assert 30 < big["gpu_memory_gib"] < 45


def test_costs_are_in_plan_json_and_printed(tmp_path, monkeypatch, capsys):
    args = ["plan", "continual", "--preset", "paper", "--sizes", "5M,L32-d4096", "--cycles", "1"]
    args += [
        "--tokenizer",
        "qwen3",
        "--source",
        "hf:x",
        "--launcher",
        "torchrun --nproc_per_node 8",
    ]
    r = cli(monkeypatch, capsys, *args, "--keep-every", "8", "-o", tmp_path / "Makefile")
    assert r.returncode == 0, r.stderr
    costs = read_plan(tmp_path / "plan.json").costs
    assert costs == json.loads((tmp_path / "plan.json").read_text())["costs"]
    seven = costs["sizes"][1]
    assert (seven["strategy"], seven["fits"]) == ("fsdp", True)
    for text in (
        "H100-hours at 45% MFU of 989 TFLOP/s (assumed, not measured)",
        f"token stores: {costs['store_tb']:.2f} TB in {costs['store_files']:,} files",
        "keeping every 8th and what probes and diagnoses read",
        f"critical path: {costs['critical_path_days']:.1f} days",
        " L32-d4096   7,074M     fsdp ",
    ):
        assert text in r.stderr, text
    # A CPU preset counts CPU thread-hours and says so.
    r = cli(monkeypatch, capsys, "plan", "continual", "--sizes", "nano", "--cycles", "1")
    assert "CPU thread-hours at 10 GFLOP/s a thread (assumed)" in r.stderr
    assert "GPU" not in r.stderr.split("CPU thread-hours")[0]


def test_plan_json_reads_back_the_costs_and_the_cluster_settings(tmp_path):
    plan = build_plan(
        "continual", **{**PAPER, "cycles": 1}, nodes=2, keep_every=4, gpu="h200", mfu=0.3
    )
    write_plan(plan, tmp_path / "Snakefile", "snakemake")
    assert read_plan(tmp_path / "plan.json") == plan
    obj = json.loads((tmp_path / "plan.json").read_text())
    # A plan.json of an earlier plc (none of them written) reads with their defaults.
    old = {k: v for k, v in obj.items() if k not in ("nodes", "keep_every", "gpu", "mfu", "costs")}
    (tmp_path / "plan.json").write_text(json.dumps(old))
    again = read_plan(tmp_path / "plan.json")
    assert (again.nodes, again.keep_every, again.gpu, again.mfu, again.costs) == (
        1,
        None,
        "h100",
        0.45,
        None,
    )
    # A hand-edited one is one line naming the field, inside costs too.
    for edit, message in [
        (("nodes", 0), "plan.json: nodes must be a positive integer, not 0"),
        (("gpu", "tpu"), "plan.json: gpu must be one of h100, "),
        (("mfu", 1.5), "plan.json: mfu must be a number in (0, 1], not 1.5"),
        (("costs", []), "plan.json: costs must be an object or null, not []"),
        (("costs", {**obj["costs"], "hours": "many"}), 'costs.hours must be a number, not "many"'),
        (
            ("costs", {k: v for k, v in obj["costs"].items() if k != "sizes"}),
            "costs.sizes is missing",
        ),
    ]:
        (tmp_path / "plan.json").write_text(json.dumps({**obj, edit[0]: edit[1]}))
        with pytest.raises(PlcError, match=re.escape(message)):
            read_plan(tmp_path / "plan.json")
    sizes = [dict(obj["costs"]["sizes"][0]), {**obj["costs"]["sizes"][1], "strategy": "zero3"}]
    (tmp_path / "plan.json").write_text(
        json.dumps({**obj, "costs": {**obj["costs"], "sizes": sizes}})
    )
    with pytest.raises(
        PlcError, match=re.escape("costs.sizes[1].strategy must be one of ddp, fsdp or null")
    ):
        read_plan(tmp_path / "plan.json")


def test_keep_every_bounds_the_disk_and_keeps_what_probes_read(paper):
    kept = build_plan("continual", **PAPER, keep_every=8).costs
    c = paper.costs
    # Probes after zh, de and ru and the diagnose after ru read 3 of every 8; c0 and the last.
    assert kept["checkpoint_files"] == 8 * (1 + 3 * 48)
    assert kept["checkpoint_tb"] == pytest.approx(c["checkpoint_tb"] * 145 / 385)
    first_stage = build_plan("continual", **{**PAPER, "probe_after": ["ru"]}, keep_every=8)
    assert first_stage.costs["checkpoint_files"] == 8 * (1 + 48)
    assert kept["hours"] == c["hours"]  # nothing retrained


# A stand-in for `plc`: makes the target of the job of plan.json whose command line it was given
# (and records it), so that make runs a whole plan in a second.
FAKE_PLC = r"""
import json, os, sys
from pathlib import Path
from plc.plan import read_plan
argv = sys.argv[1:]
plan = read_plan(os.environ["FAKE_PLAN"])
(job,) = [j for j in plan.jobs if j.command_line() == argv]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(job.output + "\n")
out = Path(job.output)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text("made")
"""


def _make(folder: Path, *args: str) -> list[str]:
    fake = folder / "fake_plc.py"
    fake.write_text(FAKE_PLC)
    log = folder / "log"
    log.unlink(missing_ok=True)
    cmd = f"{sys.executable} {fake}"
    env = {**os.environ, "FAKE_PLAN": str(folder / "plan.json"), "FAKE_LOG": str(log)}
    proc = subprocess.run(
        ["make", f"PLC={cmd}", f"PLC_TRAIN={cmd}", *args],
        cwd=folder, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_removes_what_keep_every_lets_go_and_does_not_remake_it(tmp_path):
    kw = dict(sizes=["nano"], cycles=2, preset="tiny", keep_every=4, data="d", out_dir="r")
    plan = build_plan("continual", **kw, probe_after=["ru"])  # App. B's first stage
    write_plan(plan, tmp_path / "Makefile")
    made = _make(tmp_path, "-j2")
    assert len(made) == len(plan.jobs)
    gone = plan.transient_checkpoints()
    # ru probed (8, 16), every 4th kept (4, 12), the last: the rest go.
    assert sorted(int(Path(c).stem[1:]) for c in gone) == [1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15]
    checkpoints = {str(p.relative_to(tmp_path)) for p in (tmp_path / "r").rglob("*.pt")}
    assert checkpoints == {j.output for j in plan.jobs if j.output.endswith(".pt")} - gone
    assert _make(tmp_path) == []  # done: nothing is retrained for the removed checkpoints
    # A lost probe result is redone from its kept checkpoint alone.
    probe = next(j for j in plan.jobs if j.stage == "probe" and j.task == 8)
    (tmp_path / probe.output).unlink()
    assert _make(tmp_path, probe.output) == [probe.output]
    # The second stage probes after zh and de in cycle 2 too: their checkpoints (10, 14) are
    # retrained from the kept ones before them (8, 12), and nothing after them is.
    dense = build_plan("continual", **kw, probe_after=["ru"], dense_cycles=(2, 2))
    write_plan(dense, tmp_path / "Makefile", force=True)
    redone = _make(tmp_path, "-j2")
    trained = sorted(int(Path(o).stem[1:]) for o in redone if o.endswith(".pt"))
    assert trained == [9, 10, 13, 14]
    probes = {j.output for j in dense.jobs if j.stage == "probe"} - {
        j.output for j in plan.jobs if j.stage == "probe"
    }
    assert len(probes) == 2 and probes <= set(redone)
    assert set(redone) - probes - {f"r/nano-s0/c{k}.pt" for k in trained} <= {
        j.output for j in dense.jobs if j.stage == "analysis"
    }
    assert _make(tmp_path) == []


def test_the_snakefile_marks_them_temporary_and_leaves_them_out_of_all():
    plan = build_plan("continual", sizes=["nano"], cycles=1, preset="tiny", keep_every=4)
    text = render_snakefile(plan)
    gone = sorted(plan.transient_checkpoints())
    assert len(gone) == 4
    for c in gone:
        assert f'temp("{c}")' in text
        assert text.split("rule all:")[1].split("\nrule ")[0].count(f'"{c}"') == 0
    assert text.count('temp("') == len(gone)
    assert ".SECONDARY: " + " ".join("$(RUNS)" + c[len("runs") :] for c in gone) in render_makefile(
        plan
    )


def test_a_multi_node_training_job_runs_torchrun_on_every_node(tmp_path):
    plan = build_plan(
        "continual",
        preset="paper",
        sizes=["L32-d4096"],
        cycles=1,
        tokenizer="qwen3",
        source="hf:x",
        launcher="torchrun --nproc_per_node 8",
        nodes=4,
    )
    text = render_snakefile(plan)
    train = text.split("rule train_L32_d4096_s0_c1:")[1].split("\nrule ")[0]
    for res in ("nodes=4", "tasks=4", "tasks_per_gpu=0", 'mpi="srun"', "gpu=32"):
        assert f"        {res}," in train, res
    diagnose = next(b for b in text.split("\nrule ") if b.startswith("diagnose_"))
    assert "nodes=" not in diagnose and "gpu=1," in diagnose
    launch = json.loads(text.split('PLC_TRAIN = config.get("plc_train", ')[1].split(")\n")[0])
    assert launch.startswith("srun --nodes 4 --ntasks-per-node 1 torchrun --nnodes 4 ")
    assert '--rdzv-id "$SLURM_JOB_ID"' in launch and "--nproc_per_node 8 -m plc" in launch
    assert plan.costs["devices_per_job"] == 32
    # The wall time asked for: the task's FLOPs on 32 GPUs.
    assert "gpus=32)" in train
    with pytest.raises(PlcError, match="--format snakemake"):
        render_makefile(plan)
    with pytest.raises(PlcError, match="--launcher 'torchrun"):
        build_plan("continual", sizes=["nano"], nodes=2)


def test_bad_cost_flags_are_one_line(monkeypatch, capsys):
    for args, message in (
        (["--gpu", "v100"], "unknown --gpu 'v100'"),
        (["--mfu", "1.5"], "--mfu is a fraction"),
        (["--keep-every", "0"], "--keep-every must be positive"),
        (["--nodes", "0"], "--nodes must be positive"),
    ):
        r = cli(monkeypatch, capsys, "plan", "continual", "--sizes", "nano", *args)
        assert_bad_input(r, message)


def test_hours_scale_with_the_stated_mfu_and_gpu(paper):
    slower = build_plan("continual", **PAPER, mfu=0.3, gpu="a100").costs
    assert slower["hours"] == pytest.approx(
        paper.costs["hours"] * 0.45 * 989 / (0.3 * 312), rel=1e-3
    )
    assert math.isclose(slower["store_tb"], paper.costs["store_tb"])


def test_checkpointing_costs_its_recomputed_forward_passes():
    kw = dict(preset="paper", sizes=["L32-d4096"], cycles=1, tokenizer="qwen3", source="hf:x")
    one = build_plan("continual", **kw, launcher="torchrun --nproc_per_node 1")
    eight = build_plan("continual", **kw, launcher="torchrun --nproc_per_node 8")
    (a,), (b,) = one.costs["sizes"], eight.costs["sizes"]
    assert a["activation_checkpointing"] and not b["activation_checkpointing"]
    assert b["strategy"] == "fsdp" and not a["fits"]  # 7B does not fit one 80 GB GPU at all
    assert a["task_hours"] == pytest.approx(8 * b["task_hours"] * 8 / 6)
    # The Snakefile asks for the time of the FLOPs done, recomputation included.
    runtime = {}
    for plan in (one, eight):
        rule = render_snakefile(plan).split("rule train_L32_d4096_s0_c1:")[1].split("\nrule ")[0]
        runtime[plan.launcher] = float(rule.split("runtime=minutes(")[1].split(",")[0])
    assert runtime[one.launcher] == pytest.approx(runtime[eight.launcher] * 8 / 6, rel=1e-3)
