"""plc plan --format snakemake: the Makefile's jobs as a Snakefile, run locally and on Slurm."""

from __future__ import annotations

import ast
import importlib.util
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, assert_bad_input, run_plc

from plc.errors import PlcError
from plc.plan import build_plan
from plc.plan.snakefile import job_resources, launcher_procs, render_snakefile
from plc.presets import get_preset

HAS_SNAKEMAKE = importlib.util.find_spec("snakemake") is not None
needs_snakemake = pytest.mark.skipif(
    not HAS_SNAKEMAKE, reason="needs the snakemake extra: pip install -e '.[snakemake]'"
)
needs_slurm_plugin = pytest.mark.skipif(
    importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
    reason="needs the snakemake extra (the Slurm executor plugin)",
)
PLC = f"{sys.executable} -m plc"


def parse_rules(text: str) -> dict[str, dict]:
    """name → {input, output, threads, resources, shell} of each rule of a generated Snakefile."""
    rules = {}
    for block in text.split("\nrule ")[1:]:
        name, body = block.split(":\n", 1)
        rule: dict = {"input": [], "output": [], "resources": {}}
        section = None
        for line in body.splitlines():
            if m := re.match(r"    (\w+):(.*)$", line):
                section, rest = m.group(1), m.group(2).strip()
                if rest:
                    rule[section] = rest
            elif line.startswith("        ") and section in ("input", "output"):
                rule[section].append(ast.literal_eval(line.strip().rstrip(",")))
            elif line.startswith("        ") and section == "resources":
                key, value = line.strip().rstrip(",").split("=", 1)
                rule["resources"][key] = value
            elif line.startswith("        ") and section == "shell":
                rule["shell"] = ast.literal_eval(line.strip())
        rules[name] = rule
    return rules


def test_snakefile_has_the_makefile_jobs_one_rule_per_file():
    # Spaces, quotes, `$` and backquotes in a path: a Python string, quoted for the shell.
    data = "da ta$(x)`y`'q\""
    plan = build_plan(sizes=["nano", "micro"], cycles=2, preset="tiny", data=data)
    rules = parse_rules(render_snakefile(plan))
    everything = rules.pop("all")["input"]
    assert everything == [job.output for job in plan.jobs]
    assert len(rules) == len(plan.jobs)
    for job, rule in zip(plan.jobs, rules.values(), strict=True):
        assert rule["output"] == [job.output]
        assert rule["input"] == job.inputs
        prog = "{PLC_TRAIN}" if job.launch else "{PLC}"
        shell = rule["shell"].replace("{input:q}", shlex.join(job.inputs))
        assert (
            shell.replace("{{", "{").replace("}}", "}")
            == f"{prog} {shlex.join(job.command_line())}"
        )
    assert {int(r["threads"]) for r in rules.values()} == {1}  # CPU presets: one thread per job
    assert not any("gpu" in r["resources"] for r in rules.values())
    # Braces: Snakemake reads them as wildcards (doubled or not, in `rule all`): refused.
    braces = build_plan(sizes=["nano"], cycles=1, preset="tiny", data="da ta{1}")
    with pytest.raises(PlcError, match="brace, which Snakemake reads as a wildcard"):
        render_snakefile(braces)


def test_plan_json_beside_either_file_is_the_plan_status_reads(tmp_path):
    from plc.plan import read_plan, write_plan
    from plc.status import planned_work

    plan = build_plan(sizes=["nano", "micro"], cycles=2, preset="tiny", probe_after=["zh", "ru"])
    _, make_json = write_plan(plan, tmp_path / "make" / "Makefile")
    _, snake_json = write_plan(plan, tmp_path / "snake" / "Snakefile", "snakemake")
    assert make_json == tmp_path / "make" / "plan.json"
    # The data round-trips, and the Snakefile (its resources included) renders from it alone.
    assert read_plan(snake_json) == read_plan(make_json) == plan
    assert render_snakefile(read_plan(snake_json)) == (tmp_path / "snake" / "Snakefile").read_text()
    work = planned_work(read_plan(make_json))
    assert work.tasks == {"nano-s0": 16, "micro-s0": 16} and work.cycle_length == 8
    # zh is task 2 of a cycle, ru task 8: two cycles of each, and the from-scratch probe.
    for size in ("nano", "micro"):
        expected = {f"probe-{size}-s0-t0-init-vi-scratch.parquet"}
        expected |= {f"probe-{size}-s0-t{8 * c + k}-{lang}-vi.parquet" for c in (0, 1)
                     for k, lang in ((2, "zh"), (8, "ru"))}  # fmt: skip
        assert work.probes[f"{size}-s0"] == expected
    assert work.runs == {"nano-s0": ("nano-s0", "nano"), "micro-s0": ("micro-s0", "micro")}


def test_gpu_jobs_ask_for_the_launchers_gpus_and_the_presets_compute():
    plan = build_plan(
        sizes=["5M", "314M"],
        cycles=1,
        preset="paper",
        probe_after=["zh", "de", "ru"],
        tokenizer="qwen3",
        launcher="torchrun --nproc_per_node 8",
    )
    rules = parse_rules(render_snakefile(plan))
    train = rules["train_314M_s0_c8"]
    assert train["resources"]["gpu"] == "8" and train["threads"] == "32"
    assert 'PLC_TRAIN = config.get("plc_train", "torchrun --nproc_per_node 8 -m plc")' in (
        render_snakefile(plan)
    )
    # Only training and probing run under torchrun; diagnose takes one GPU, the rest none.
    assert rules["diagnose_314M_s0_t8_ru"]["resources"]["gpu"] == "1"
    for name in ("shard_en", "init_314M_s0_c0", "fit_onset", "plot_auc"):
        assert "gpu" not in rules[name]["resources"] and rules[name]["threads"] == "1"

    # The FLOPs of a task are those of examples/slurm/README.md's table (PFLOP per task).
    paper = get_preset("paper")
    kw = dict(tokenizer="qwen3", preset=paper, launcher=plan.launcher)
    jobs = {j.output: j for j in plan.jobs}
    for size, pflop in (("5M", 1_683), ("314M", 16_528)):
        r = job_resources(jobs[f"runs/{size}-s0/c1.pt"], size=size, **kw)
        assert round(r.flops / 1e15) == pflop
        runtime = re.fullmatch(
            r"minutes\((.+), gpus=8\)", rules[f"train_{size}_s0_c1"]["resources"]["runtime"]
        )
        assert float(runtime.group(1)) == pytest.approx(r.flops, rel=1e-3)
        probe = job_resources(
            jobs[f"runs/metrics/probe-{size}-s0-t8-ru-vi.parquet"], size=size, **kw
        )
        assert 1 < probe.flops / r.flops < 1.05  # as many tokens as a task, plus its evaluations
    # Host memory grows with the model: 8 ranks each hold the 314M model's copies.
    big = job_resources(jobs["runs/314M-s0/c1.pt"], size="314M", **kw)
    small = job_resources(jobs["runs/5M-s0/c1.pt"], size="5M", **kw)
    assert big.mem_mb > small.mem_mb > 8 * 4096


def test_launcher_processes():
    assert launcher_procs("torchrun --nproc_per_node 8") == 8
    assert launcher_procs("torchrun --nproc-per-node=4 --standalone") == 4
    assert launcher_procs("") == 1 and launcher_procs("srun python") == 1


def test_unknown_format_is_bad_input(tmp_path):
    proc = run_plc("plan", "continual", "--format", "ninja", "-o", tmp_path / "x")
    assert_bad_input(proc, "--format", "make or snakemake")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.plan.json").exists()


def _files(root: Path) -> dict[str, int]:
    """Relative path → mtime (ns) of every file a plan wrote."""
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for top in ("data", "runs")
        for p in (root / top).rglob("*")
        if p.is_file()
    }


def _snakemake(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run Snakemake (its jobs through this Python's plc); also return the peak memory (KiB) of
    any process it started, read in a wrapper so that no other test's children count."""
    argv = [sys.executable, "-m", "snakemake", *args]
    argv += ["--config", f"plc={PLC}", f"plc_train={PLC}"]
    peak = (
        "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
        "sys.exit(p.returncode)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", peak, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return proc, int(proc.stderr.strip().splitlines()[-1])


@pytest.mark.slow
@needs_snakemake
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_snakemake_runs_the_plan_as_make_does(tmp_path):
    args = ["plan", "continual", "--sizes", "nano,micro", "--cycles", "2", "--preset", "cpu"]
    args += ["--probe-after", "ru"]  # the plan this test always ran (the default is now zh,de,ru)
    make_dir, snake_dir = tmp_path / "make", tmp_path / "snake"
    assert run_plc(*args, "-o", make_dir / "Makefile").returncode == 0
    proc = run_plc(*args, "--format", "snakemake", "-o", snake_dir / "Snakefile")
    assert proc.returncode == 0, proc.stderr
    env = {**os.environ, "PLC": PLC}
    proc = subprocess.run(
        ["make", "-j2"], cwd=make_dir, capture_output=True, text=True, env=env, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc, peak_kib = _snakemake(snake_dir, "-c2")
    assert proc.returncode == 0, proc.stderr[-3000:]

    # The same files, the checkpoints byte for byte.
    made, snaked = _files(make_dir), _files(snake_dir)
    assert sorted(snaked) == sorted(made)
    checkpoints = [f for f in made if f.endswith(".pt")]
    assert len(checkpoints) == 2 * 17
    for f in checkpoints:
        assert (snake_dir / f).read_bytes() == (make_dir / f).read_bytes(), f
    # No job needed more host memory than the Snakefile asks for (the smallest model job's).
    rules = parse_rules((snake_dir / "Snakefile").read_text())
    model_jobs = [r for n, r in rules.items() if n.split("_")[0] in ("train", "probe", "init")]
    assert peak_kib * 1024 < min(int(r["resources"]["mem_mb"]) for r in model_jobs) * 2**20

    # A second run does nothing.
    proc, _ = _snakemake(snake_dir, "-c2")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    assert _files(snake_dir) == snaked

    # A lost checkpoint is rebuilt, identical, and only what depends on it is redone.
    lost = "runs/micro-s0/c16.pt"
    before = (snake_dir / lost).read_bytes()
    (snake_dir / lost).unlink()
    proc, _ = _snakemake(snake_dir, "-c2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (snake_dir / lost).read_bytes() == before
    plan = build_plan(sizes=["nano", "micro"], cycles=2, preset="cpu")
    downstream = {lost}
    for job in plan.jobs:  # in dependency order
        if downstream & set(job.inputs):
            downstream.add(job.output)
    redone = {f for f, t in _files(snake_dir).items() if t != snaked[f]}
    targets = {job.output for job in plan.jobs}
    assert redone & targets == downstream
    # Besides targets, only the files those jobs write alongside (task 16's training curve,
    # its diagnose's per-unit store).
    assert all("micro-s0-t16" in f for f in redone - targets), redone - targets
    assert {f for f in downstream if "nano" in f} == set()


@needs_snakemake
@needs_slurm_plugin
def test_slurm_profile_accepts_the_paper_plan_without_a_cluster(tmp_path):
    proc = run_plc(
        "plan",
        "continual",
        "--preset",
        "paper",
        "--sizes",
        "5M,314M",
        "--cycles",
        "1",
        "--probe-after",
        "zh,de,ru",
        "--tokenizer",
        "qwen3",
        "--launcher",
        "torchrun --nproc_per_node 8",
        "--format",
        "snakemake",
        "-o",
        tmp_path / "Snakefile",
    )
    assert proc.returncode == 0, proc.stderr
    profile = REPO / "examples" / "slurm"
    argv = [sys.executable, "-m", "snakemake", "--dry-run", "--profile", str(profile)]
    proc = subprocess.run(
        [*argv, "--config", "gpu_tflops=890"],  # a GPU twice as fast: half the compute time
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    m = re.search(r"rule train_314M_s0_c8:\n(?:    .*\n)*?    resources: (.*)", out)
    assert m, out[-3000:]
    resources = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
    assert resources["gpu"] == "8" and resources["slurm_partition"] == "<partition>"
    # The time is the rule's FLOPs at the rate given on the command line (1.5x, plus 15 minutes).
    rule = parse_rules((tmp_path / "Snakefile").read_text())["train_314M_s0_c8"]
    flops = float(re.fullmatch(r"minutes\((.+), gpus=8\)", rule["resources"]["runtime"]).group(1))
    assert flops > 1e19
    assert int(resources["runtime"]) == 15 + math.ceil(1.5 * flops / (8 * 890e12) / 60)
    assert re.search(r"^total\s+44$", out, re.M)  # the 43 jobs of the plan and `all`


@needs_snakemake
@needs_slurm_plugin
def test_slurm_profile_accepts_multi_node_training_jobs(tmp_path):
    proc = run_plc(
        "plan", "continual", "--preset", "paper", "--sizes", "314M", "--cycles", "1",
        "--tokenizer", "qwen3", "--launcher", "torchrun --nproc_per_node 8", "--nodes", "2",
        "--keep-every", "8", "--format", "snakemake", "-o", tmp_path / "Snakefile",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    profile = REPO / "examples" / "slurm"
    argv = [sys.executable, "-m", "snakemake", "--dry-run", "--profile", str(profile)]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    m = re.search(r"rule train_314M_s0_c8:\n(?:    .*\n)*?    resources: (.*)", out)
    assert m, out[-3000:]
    resources = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
    assert (resources["gpu"], resources["nodes"], resources["tasks"]) == ("16", "2", "2")
    assert resources["mpi"] == "srun"
