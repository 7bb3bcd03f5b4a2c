"""A plan as a Snakefile: the Makefile's jobs with what a scheduler needs to place them.

Snakemake runs the same graph on one machine (`snakemake -c2`) or on a Slurm cluster
(`snakemake --profile examples/slurm`), resumes from the files that exist and retries failed
jobs. One rule per file, every path spelled out (`plc status` reads them from the file), and for
each job the threads, GPUs, host memory and wall time it asks for, estimated from the preset, the
model size and the plan's launcher.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plc.errors import EXIT_DIVERGED, PlcError
from plc.memory import RECOMPUTE, gpu_spec
from plc.plan.jobs import INPUTS, Job, Plan, check_text
from plc.presets import get_preset
from plc.sizes import make_config, padded_vocab, train_flops_per_token

if TYPE_CHECKING:
    from plc.presets import Preset
    from plc.sizes import GPTConfig

GPU_PRESETS = ("paper",)  # presets sized for GPUs; the others train on a CPU
# Tokenizer → vocabulary (plc.data.tokenizers, without importing it); an hf: tokenizer is
# unknown until loaded, so it is sized as the largest we use.
VOCAB = {"byte": 257, "qwen3": 151_669}
THREADS_PER_RANK = 4  # a GPU rank's Python thread, NCCL's threads and its data reads
MIB = 1 << 20
# Host memory per process: a CPU job holds weights, gradients, two AdamW moments and the copy it
# saves (24 B per parameter) above the interpreter and libraries (0.4 GiB at the peak of a cpu
# preset task here; 1 GiB allowed); a GPU rank's host holds the loaded and the saved copy (8 B)
# above the CUDA context and libraries (4 GiB allowed, not measured here).
CPU_BASE_MB, CPU_BYTES_PER_PARAM = 1024, 24
GPU_BASE_MB, GPU_BYTES_PER_PARAM = 4096, 8
PLAIN_MB = 2048  # shard, fit-onset, plot: no model
SHARD_WORKER_MB = 512  # each further `plc shard --workers` process: 109 MiB peak measured (Qwen3)
RULE_PREFIX = {"train-task": "train", "fit-onset": "fit"}


@dataclass(frozen=True)
class JobResources:
    """What one job asks of a scheduler."""

    threads: int
    gpus: int
    mem_mb: int
    flops: float  # estimated compute, for its wall time; 0 for jobs without a model


def launcher_procs(launcher: str) -> int:
    """Processes a launcher starts per job: torchrun's --nproc_per_node, else one."""
    m = re.search(r"--nproc[-_]per[-_]node[= ](\d+)", launcher)
    return int(m.group(1)) if m else 1


def model_config(size: str, tokenizer: str, preset: Preset) -> GPTConfig:
    vocab = padded_vocab(VOCAB.get(tokenizer, VOCAB["qwen3"]))
    try:
        return make_config(size, vocab_size=vocab, context=preset.context)
    except PlcError:
        shape = _pretrained_shape(size, vocab)
        if shape is None:
            raise
        return make_config(
            layers=shape[0], d_model=shape[1], vocab_size=vocab, context=preset.context
        )


def _pretrained_shape(name: str, vocab: int) -> tuple[int, int] | None:
    """A plc shape (layers, d_model) of about the parameters a pretrained model's name gives
    (`pythia-70m`, `Qwen3-0.6B`: plan checkpoints' sizes), d/L ≈ 80 as Table I's: what its jobs
    are sized as, from the name alone (the plan does not load the model)."""
    m = re.search(r"(\d+(?:\.\d+)?)([mb])(?![a-z])", name, re.IGNORECASE)
    if m is None:
        return None
    total = float(m.group(1)) * (1e6 if m.group(2).lower() == "m" else 1e9)

    def count(d: int) -> float:
        return 12 * max(1, round(d / 80)) * d * d + vocab * d

    d = min(range(64, 16_384 + 1, 64), key=lambda d: abs(count(d) - total))
    return max(1, round(d / 80)), d


def job_resources(
    job: Job, *, size: str | None, tokenizer: str, preset: Preset, launcher: str, nodes: int = 1
) -> JobResources:
    """Threads, GPUs, host memory and FLOPs of one job of a plan; `size` is the model it works
    on (the job's own, None for data and analysis jobs). A training job on `nodes` nodes: its
    threads and memory are a node's, its GPUs all of them."""
    command = job.command
    if command == "shard" and "--workers" in job.args:
        workers = int(job.args[job.args.index("--workers") + 1])
        return JobResources(workers, 0, PLAIN_MB + SHARD_WORKER_MB * (workers - 1), 0.0)
    if size is None or not (job.launch or command in ("init", "diagnose")):
        return JobResources(threads=1, gpus=0, mem_mb=PLAIN_MB, flops=0.0)
    c = model_config(size, tokenizer, preset)
    if command == "init":  # builds the weights on a CPU in seconds, whatever the preset
        return JobResources(1, 0, CPU_BASE_MB + math.ceil(4 * c.n_params_total / MIB), 0.0)
    gpu = preset.name in GPU_PRESETS
    procs = launcher_procs(launcher) if job.launch else 1
    per_token = train_flops_per_token(c, preset.seq_len)  # forward + backward; a forward is 1/3
    if command == "probe":
        steps = preset.probe_steps
        evals = steps // preset.probe_eval_every_for(steps) + 1
        eval_tokens = evals * preset.probe_eval_seqs * preset.seq_len
        flops = per_token * (steps * preset.batch_tokens + eval_tokens / 3)
    elif command == "diagnose":
        flops = per_token * (preset.dormant_seqs + preset.entropy_seqs) * preset.seq_len / 3
    else:  # train-task, and any other job the plan runs under the launcher: a task's training
        flops = per_token * preset.steps * preset.batch_tokens
    if gpu:
        mem = procs * (GPU_BASE_MB + math.ceil(GPU_BYTES_PER_PARAM * c.n_params_total / MIB))
        gpus = procs * (nodes if job.launch else 1)
        return JobResources(procs * THREADS_PER_RANK, gpus, mem, flops)
    # A CPU job also holds the logits of a micro-batch and their gradients (3 float32 each).
    tokens = preset.micro_batch * preset.seq_len if preset.micro_batch else preset.batch_tokens
    per_proc = CPU_BASE_MB + math.ceil(
        (CPU_BYTES_PER_PARAM * c.n_params_total + 12 * tokens * c.vocab_size) / MIB
    )
    return JobResources(procs, 0, procs * per_proc, flops)


def plan_resources(plan: Plan, job: Job, preset: Preset) -> JobResources:
    """job_resources of a job of `plan` (its model, tokenizer, launcher and nodes)."""
    return job_resources(
        job,
        size=job.size,
        tokenizer=plan.tokenizer,
        preset=preset,
        launcher=plan.launcher,
        nodes=plan.nodes,
    )


def multi_node(launcher: str, nodes: int) -> str:
    """The launcher of a training job on `nodes` Slurm nodes: srun starts it once on each node,
    and torchrun's c10d rendezvous on the job's first node (a port of its own per job) joins
    them. Plain shell, expanded when the job runs."""
    head = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
    rendezvous = (
        f'--nnodes {nodes} --rdzv-backend c10d --rdzv-id "$SLURM_JOB_ID" '
        f'--rdzv-endpoint "{head}:$((20000 + SLURM_JOB_ID % 10000))"'
    )
    srun = f"srun --nodes {nodes} --ntasks-per-node 1"
    return re.sub(r"\btorchrun\b", f"{srun} torchrun {rendezvous}", launcher, count=1)


def _rule_names(plan: Plan) -> list[str]:
    """Readable unique rule names: the command and the target's path below its folder
    (train_nano_s0_c3, probe_nano_s0_t8_ru_vi, plot_auc)."""
    roots = [plan.metrics, plan.figures, plan.out_dir, plan.data]
    names: list[str] = []
    seen: set[str] = set()
    for job in plan.jobs:
        rel = job.output
        for root in roots:
            if rel.startswith(root + "/"):
                rel = rel[len(root) + 1 :]
                break
        rel = re.sub(r"(\.zarr/zarr\.json|\.parquet|\.pt|\.png)$", "", rel)
        slug = re.sub(r"\W+", "_", rel).strip("_")
        prefix = re.sub(r"\W+", "_", RULE_PREFIX.get(job.command, job.command))
        name = slug if slug.startswith(prefix + "_") else f"{prefix}_{slug}"
        unique, n = name, 1
        while unique in seen:
            n += 1
            unique = f"{name}_{n}"
        seen.add(unique)
        names.append(unique)
    return names


def _q(s: str) -> str:
    """A Python string literal in double quotes, whatever `s` holds."""
    check_text(s)
    return json.dumps(s, ensure_ascii=False)


def _file(path: str) -> str:
    """A path as an input or output of a rule; braces are refused (Snakemake reads them as
    wildcards, doubled or not, in a rule without outputs)."""
    if "{" in path or "}" in path:
        raise PlcError(
            f"the plan's path {path!r} holds a brace, which Snakemake reads as a wildcard; "
            "choose --data and --out-dir without { }"
        )
    return _q(path)


def _shell(job: Job) -> str:
    """The job's `plc` command; braces doubled, as Snakemake formats the string. A job whose
    result is what it prints writes its standard output to the target (Snakemake deletes the
    output of a failed job); one whose divergence is a result succeeds when it diverged (exit 3)
    and left its output."""
    prog = "{PLC_TRAIN}" if job.launch else "{PLC}"
    args = [
        "{input:q}" if a == INPUTS else shlex.quote(a).replace("{", "{{").replace("}", "}}")
        for a in job.argv
    ]
    for a in job.argv:
        check_text(a)
    tail = ["> {output:q}"] if job.stdout else []
    if job.diverged_ok:
        tail = [f"|| {{{{ test $? -eq {EXIT_DIVERGED} && test -f {{output:q}}; }}}}"]
    return " ".join([prog, *args, *tail])


def render_snakefile(plan: Plan) -> str:
    """The plan as a Snakefile: one rule per file with its exact inputs and output, the same
    commands as the Makefile, and per job threads, GPUs, memory and a wall time for Slurm."""
    check_text(plan.description)
    preset = get_preset(plan.preset)
    launch = f"{plan.launcher} -m plc" if plan.launcher else "plc"
    if plan.nodes > 1:
        launch = f"{multi_node(plan.launcher, plan.nodes)} -m plc"
    peak, _ = gpu_spec(plan.gpu)
    transient = plan.transient_checkpoints()
    # Sizes that train with activation checkpointing on the plan's GPU (plc.plan.costs).
    fitted = (plan.costs or {}).get("sizes", [])
    recompute = {s["size"] for s in fitted if s.get("activation_checkpointing")}
    lines = [
        f"# plc protocol: {plan.description}; preset {plan.preset}, "
        f"seed{'s' if len(plan.seeds) > 1 else ''} {','.join(map(str, plan.seeds))}.",
        "# Written by `plc plan --format snakemake`: the jobs of its Makefile, one rule per file.",
        "#   snakemake -c2                        this machine, two 1-thread jobs at a time",
        "#   snakemake --profile examples/slurm   a Slurm cluster (partition, account, retries)",
        "# A rerun does only what is missing or older than its inputs (`snakemake -n` lists it).",
        "# --config plc='python -m plc' plc_train='torchrun --nproc_per_node 8 -m plc' sets the",
        "# commands; gpu_tflops (sustained per GPU), cpu_gflops (per thread) and shard_minutes set",
        "# the wall time asked for each job.",
        "",
        "import math",
        "import os",
        "",
        'PLC = config.get("plc", "plc")',
        f'PLC_TRAIN = config.get("plc_train", {_q(launch)})',
        'os.environ.setdefault("PLC_THREADS", "1")  # one thread per job, as in the Makefile',
        "",
        f"# {plan.mfu:.0%} MFU of an {plan.gpu.upper()}'s {peak:g} bf16 TFLOP/s (plc plan --gpu, --mfu).",
        f'GPU_TFLOPS = float(config.get("gpu_tflops", {round(plan.mfu * peak, 1):g}))',
        'CPU_GFLOPS = float(config.get("cpu_gflops", 10))',
        'SHARD_MINUTES = int(config.get("shard_minutes", 24 * 60))  # download and tokenize',
        "",
        "",
        "def minutes(flops, gpus=0, threads=1):",
        '    """Wall time to ask for: the FLOPs at the sustained rate, 1.5x, plus 15 minutes."""',
        "    rate = gpus * GPU_TFLOPS * 1e12 if gpus else threads * CPU_GFLOPS * 1e9",
        "    return 15 + math.ceil(1.5 * flops / rate / 60)",
        "",
        "",
        "localrules:",
        "    all,",
        "",
        "",
        "# Every file of the plan, not only the last ones: Snakemake does not remake a lost",
        "# checkpoint whose dependents are up to date unless it is asked for (Make does).",
        *(
            [
                f"# --keep-every {plan.keep_every}: the temp() checkpoints are removed once the",
                "# next task has trained from them, and not remade while what follows stands.",
            ]
            if transient
            else []
        ),
        "rule all:",
        "    input:",
        *[f"        {_file(job.output)}," for job in plan.jobs if job.output not in transient],
        "",
    ]
    for job, name in zip(plan.jobs, _rule_names(plan), strict=True):
        r = plan_resources(plan, job, preset)
        if job.command == "shard" and "--parts" in job.args:
            runtime = "60"  # the merge of the parts: links their files
        elif job.command == "shard":
            runtime = "SHARD_MINUTES"
        elif r.gpus:
            flops = r.flops * (RECOMPUTE if job.launch and job.size in recompute else 1)
            runtime = f"minutes({flops:.4g}, gpus={r.gpus})"
        else:
            runtime = f"minutes({r.flops:.4g}, threads={r.threads})"
        resources = [f"mem_mb={r.mem_mb}", f"runtime={runtime}"]
        if r.gpus:
            resources.append(f"gpu={r.gpus}")
        if job.launch and plan.nodes > 1:
            # One task a node, run by the job's own srun (the executor's `mpi` path): torchrun
            # there starts the node's ranks. tasks_per_gpu=0 keeps the executor from asking
            # Slurm for --ntasks-per-gpu.
            resources += [f"nodes={plan.nodes}", f"tasks={plan.nodes}", "tasks_per_gpu=0"]
            resources += ['mpi="srun"']
        output = _file(job.output)
        lines += ["", f"rule {name}:"]
        if job.inputs:
            chained = plan.chained(job)  # time stamps not compared (Plan.chained)
            lines += ["    input:"]
            lines += [
                f"        {f'ancient({_file(d)})' if d in chained else _file(d)},"
                for d in job.inputs
            ]
        lines += [
            "    output:",
            f"        {f'temp({output})' if job.output in transient else output},",
            f"    threads: {r.threads}",
            "    resources:",
            *[f"        {res}," for res in resources],
            "    shell:",
            f"        {_q(_shell(job))}",
        ]
    return "\n".join(lines) + "\n"
