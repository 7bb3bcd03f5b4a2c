"""What a plan costs before it starts: device hours, the disk its token stores and checkpoints
take, and its critical path in days, at a stated GPU and MFU (`plc plan` prints them and writes
them into plan.json as `costs`).

The hours are the jobs' FLOPs (plc.plan.snakefile.plan_resources: 6 per matmul weight and token,
the tied head included, plus attention) at `mfu` of the GPU's bf16 dense peak; how each size
trains on that GPU (strategy, micro-batch, memory) is plc.memory's choice. None of it was
measured on a GPU (no GPU was available to this project): the MFU is an assumption to replace
with a measured one. Shard jobs take their token budget at SHARD_TOKENS_PER_S.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from plc.errors import PlcError
from plc.memory import GIB, RECOMPUTE, choose, gpu_spec
from plc.plan.snakefile import GPU_PRESETS, launcher_procs, model_config, plan_resources
from plc.presets import get_preset

if TYPE_CHECKING:
    from plc.plan.jobs import Job, Plan

TB = 1e12
# Compressed bytes a token in a store (plc.data.tokenstore: blosc-zstd, byte shuffle, level 1,
# measured on the embedded corpus): Qwen3 ids with the tokens shuffled, the bound for a large
# corpus (2.10 in document order); byte ids.
STORE_BYTES_PER_TOKEN = {"byte": 0.66}
QWEN3_BYTES_PER_TOKEN = 2.14
STORE_META_FILES = 5  # zarr.json of the store, of each split and of each split's array
# `plc shard` through an hf: stream, one process (docs/data.md): a part job's workers tokenize
# faster, but its download is not assumed to keep up.
SHARD_TOKENS_PER_S = 2.2e6
CPU_GFLOPS = 10.0  # per thread, as the Snakefile's default (not measured)


@dataclass
class SizeCost:
    size: str
    params: int  # all parameters, embeddings included
    strategy: str | None  # ddp or fsdp on the plan's GPU; None for a CPU preset
    micro_batch: int | None
    activation_checkpointing: bool | None
    gpu_memory_gib: float | None  # plc.memory's estimate per GPU
    fits: bool | None
    task_hours: float  # wall time of one training task on its devices
    hours: float  # device hours of every job of this size
    checkpoint_gb: float  # one checkpoint (weights; + AdamW moments where the run continues)


@dataclass
class Costs:
    device: str  # the GPU's name, or "cpu" for a CPU preset
    peak_tflops: float | None
    mfu: float | None
    devices_per_job: int  # GPUs (or threads) of a training job: ranks × nodes
    hours: float  # GPU-hours (CPU thread-hours for a CPU preset)
    store_tb: float
    store_files: int
    checkpoint_tb: float  # what stays on disk at the end
    checkpoint_files: int
    critical_path_days: float  # the longest chain of jobs, each on its own devices
    mean_devices: float  # devices busy on average if the plan keeps to its critical path
    keep_every: int | None
    sizes: list[SizeCost] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def bytes_per_token(tokenizer: str) -> float:
    return STORE_BYTES_PER_TOKEN.get(tokenizer, QWEN3_BYTES_PER_TOKEN)


def _flag(job: Job, flag: str) -> str | None:
    return job.args[job.args.index(flag) + 1] if flag in job.args else None


def _checkpoint_path(job: Job) -> str | None:
    """The checkpoint a job writes (a train job whose target is its record writes one too)."""
    if job.command == "init":
        return job.output
    if job.stage == "train":
        return _flag(job, "--out")
    return None


def plan_costs(plan: Plan) -> Costs | None:
    """The costs of `plan` on its GPU at its MFU (plan.gpu, plan.mfu); None where a model's
    shape is not known from its name (a pretrained model named without its size)."""
    from plc.data.tokenstore import SHARD_TOKENS  # numpy: not for `plc --help`

    preset = get_preset(plan.preset)
    gpu = preset.name in GPU_PRESETS
    peak, memory_gib = gpu_spec(plan.gpu)
    procs = launcher_procs(plan.launcher) * plan.nodes
    transient = plan.transient_checkpoints()

    sizes: dict[str, SizeCost] = {}
    for size in dict.fromkeys(plan.sizes):
        try:
            c = model_config(size, plan.tokenizer, preset)
        except PlcError:
            return None
        fit = None
        if gpu:
            share = max(1, preset.batch_size // procs)
            fit = choose(
                c,
                seq_len=preset.seq_len,
                share=share,
                world=procs,
                device_bytes=int(memory_gib * GIB),
                cap=preset.micro_batch,
            )
        sizes[size] = SizeCost(
            size=size,
            params=c.n_params_total,
            strategy=fit.strategy if fit else None,
            micro_batch=fit.micro_batch if fit else None,
            activation_checkpointing=fit.activation_checkpointing if fit else None,
            gpu_memory_gib=round(fit.estimate.total / GIB, 1) if fit else None,
            fits=fit.fits if fit else None,
            task_hours=0.0,
            hours=0.0,
            checkpoint_gb=4 * c.n_params_total / 1e9,
        )

    def hours(job: Job) -> tuple[float, float]:
        """(wall hours, device hours) of one job."""
        r = plan_resources(plan, job, preset)
        if job.command == "shard":
            tokens = sum(int(_flag(job, f) or 0) for f in ("--train-tokens", "--val-tokens"))
            if "--parts" in job.args:
                return 0.0, 0.0  # the merge links the parts' files
            part = _flag(job, "--part")
            tokens //= int(part.split("/")[1]) if part else 1
            return tokens / SHARD_TOKENS_PER_S / 3600, 0.0
        if r.gpus and gpu:
            wall = r.flops / (r.gpus * peak * 1e12 * plan.mfu) / 3600
            cost = sizes.get(job.size or "")
            if job.launch and cost is not None and cost.activation_checkpointing:
                wall *= RECOMPUTE
            return wall, wall * r.gpus
        wall = r.flops / (r.threads * CPU_GFLOPS * 1e9) / 3600
        return wall, wall * r.threads

    by_output = {job.output: job for job in plan.jobs}

    @functools.cache
    def finish(output: str) -> float:
        job = by_output.get(output)
        if job is None:
            return 0.0  # an input the plan does not make (a store that exists)
        return max((finish(d) for d in job.inputs), default=0.0) + hours(job)[0]

    ckpt_bytes, ckpt_files = 0.0, 0
    total = 0.0
    for job in plan.jobs:
        wall, device = hours(job)
        total += device
        cost = sizes.get(job.size or "")
        if cost is None:
            continue
        cost.hours += device
        if job.stage == "train":
            cost.task_hours = max(cost.task_hours, wall)
        path = _checkpoint_path(job)
        if path is not None and path not in transient:
            continued = "--continue" in job.args_after
            ckpt_bytes += cost.checkpoint_gb * 1e9 * (3 if continued else 1)  # + two moments
            ckpt_files += 1
    store_bytes, store_files = 0.0, 0
    for job in plan.jobs:
        if job.command != "shard" or "--part" in job.args:
            continue
        splits = [int(_flag(job, f) or 0) for f in ("--train-tokens", "--val-tokens")]
        store_bytes += sum(splits) * bytes_per_token(plan.tokenizer)
        store_files += STORE_META_FILES + sum(math.ceil(t / SHARD_TOKENS) for t in splits)
    critical = max((finish(job.output) for job in plan.jobs), default=0.0)
    return Costs(
        device=plan.gpu if gpu else "cpu",
        peak_tflops=peak if gpu else None,
        mfu=plan.mfu if gpu else None,
        devices_per_job=procs,
        hours=total,
        store_tb=store_bytes / TB,
        store_files=store_files,
        checkpoint_tb=ckpt_bytes / TB,
        checkpoint_files=ckpt_files,
        critical_path_days=critical / 24,
        mean_devices=total / critical if critical else 0.0,
        keep_every=plan.keep_every,
        sizes=list(sizes.values()),
    )


def cost_lines(costs: dict | None) -> list[str]:
    """The costs (plan.json's `costs`) as `plc plan` prints them; none where they are unknown."""
    if costs is None:
        return []
    gpu = costs["device"] != "cpu"
    unit = f"{costs['device'].upper()}-hours" if gpu else "CPU thread-hours"
    lines = []
    if gpu:
        lines.append(
            f"{'size':>10} {'params':>8} {'strategy':>8} {'micro':>5} {'GiB/GPU':>7} "
            f"{'task h':>7} {unit:>11}"
        )
        for s in costs["sizes"]:
            how = s["strategy"] + ("+AC" if s["activation_checkpointing"] else "")
            memory = f"{s['gpu_memory_gib']:.0f}" + ("" if s["fits"] else "!")
            lines.append(
                f"{s['size']:>10} {s['params'] / 1e6:>7,.0f}M {how:>8} {s['micro_batch']:>5} "
                f"{memory:>7} {s['task_hours']:>7.2f} {s['hours']:>11,.0f}"
            )
        n = costs["devices_per_job"]
        assumed = (
            f"at {costs['mfu']:.0%} MFU of {costs['peak_tflops']:g} TFLOP/s (assumed, not "
            f"measured), {n} GPU{'s' if n > 1 else ''} a training job"
        )
    else:
        assumed = f"at {CPU_GFLOPS:g} GFLOP/s a thread (assumed)"
    keep = costs["keep_every"]
    kept = f", keeping every {keep}th and what probes and diagnoses read" if keep else ""
    lines += [
        f"compute: {costs['hours']:,.0f} {unit} {assumed}",
        f"token stores: {costs['store_tb']:.2f} TB in {costs['store_files']:,} files",
        f"checkpoints: {costs['checkpoint_tb']:.2f} TB in {costs['checkpoint_files']:,} files{kept}",
        f"critical path: {costs['critical_path_days']:.1f} days, with "
        f"{costs['mean_devices']:,.0f} {'GPUs' if gpu else 'threads'} busy on average",
    ]
    if gpu and not all(s["fits"] for s in costs["sizes"]):
        lines.append("! does not fit the GPU's memory by plc.memory's estimate")
    return lines
