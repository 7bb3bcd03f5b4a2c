"""The one training loop (§IV-B), used by `plc train-task` and by `plc probe`.

Every call is a fresh task: a new AdamW (weight decay on matrices and embeddings, none on biases
and LayerNorm), a linear warm-up restarted from its first value, then a constant learning rate
(or another schedule of plc.schedule: `--schedule`).
Batches come from a sampler whose global batch is a pure function of the step, so resuming needs
only the step, and DDP ranks each take rows rank::world_size of the same batch. All settings come
in one resolved `plc.options.TrainOptions`.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from plc.errors import PlcError
from plc.mitigations import Mitigations
from plc.model import GPT, LanguageModel
from plc.options import TrainOptions
from plc.runtime import Runtime
from plc.schedule import learning_rate
from plc.store import atomic_path

if TYPE_CHECKING:
    from plc.data.sampling import LocalBatches

STATE_FORMAT = "plc-train-state"
STATE_VERSION = 1
# The host reads the losses and gradient norms (and the ranks agree on a save or a stop) about
# once a second, not after every step: a read drains the GPU's queue, which then idles while the
# host queues the next step. The steps between reads grow at most twofold per read (the first
# reads time little but queueing), up to MAX_SYNC_STEPS. Whatever the cadence, the rows, the
# divergence check (a non-finite step's update is skipped on the device and the step named at the
# read) and resumption are those of a read after every step; HOST_SYNC_SECONDS = 0 reads after
# every step.
HOST_SYNC_SECONDS = 1.0
MAX_SYNC_STEPS = 1024

# A training-step row: what `on_step` receives and what the `train` metric file holds per step.
StepRow = dict[str, float | int]
# Builds a task's remedies for (model, its optimizer, micro-batch rows) once the optimizer exists.
MakeMitigations = Callable[[LanguageModel, torch.optim.Optimizer, int], Mitigations]


class TrainingDiverged(Exception):
    """The loss, the gradient norm or (after an update) a weight became NaN/inf: no output is
    written, resumable state is kept. `rows` are the task's steps up to and including `step`, the
    one that diverged; `evals` the evaluations before it."""

    def __init__(self, message: str, step: int, rows: list[StepRow], evals: list[dict[str, Any]]):
        super().__init__(message)
        self.step, self.rows, self.evals = step, rows, evals


class TrainingInterrupted(Exception):
    """SIGTERM or SIGUSR1 arrived: the loop saved its resumable state after `step` steps and
    stopped. A rerun of the same command resumes there; `exit_status` is the shell's 128 + signal."""

    def __init__(self, signum: int, step: int, state_path: Path):
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: stopped after step {step}, resumable state saved in {state_path}; "
            "rerun the same command to continue"
        )
        self.signum, self.step, self.state_path = signum, step, state_path

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class Interrupts:
    """While active (a `with` block in the main thread), SIGTERM and SIGUSR1 (Slurm's
    `--signal=USR1@N`, sent N seconds before the time limit) are a request to stop: the handler
    only notes the signal, and a train_loop given this object saves its resumable state at the
    end of the step and raises TrainingInterrupted. Elsewhere the signals keep their handlers."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


class Sampler:
    """What train_loop needs from a sampler (plc.data.sampling.BatchSampler is one)."""

    batch_size: int
    seq_len: int

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Rows rank::world_size of step `step`'s global batch, int64 (rows, seq_len + 1)."""
        raise NotImplementedError

    def local(self, rank: int, world_size: int, stop: int | None = None) -> LocalBatches:
        """This rank's rows of every step, the next read ahead while a step trains."""
        raise NotImplementedError


def make_optimizer(model: torch.nn.Module, options: TrainOptions) -> torch.optim.AdamW:
    """A fresh AdamW: decay on ≥2-D parameters (weights, tied embedding, positions), not on 1-D ones."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": options.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # Fused: one kernel for all parameters; 6× faster than the per-tensor loop on CPU.
    return torch.optim.AdamW(
        groups, lr=options.lr, betas=options.betas, eps=options.adam_eps, fused=True
    )


@dataclass
class LoopResult:
    steps: int  # steps of the task (all done)
    rows: list[StepRow]  # one per step: step, tokens, loss, lr, grad_norm, tokens_per_s
    evals: list[dict[str, Any]]  # {"step": s, "value": what eval_fn returned}, in step order
    resumed_from: int  # step the loop resumed at (0 for a fresh start)
    seconds: float  # wall time of this call's training steps (evals excluded)
    optimizer: torch.optim.Optimizer  # as the last step left it
    schedule_step: int  # the run's steps after this call (steps unless continued)
    warmup_steps: int  # of the schedule this call followed
    mitigations: Mitigations | None  # what acted on the model, for its record
    # FSDP: the model's weights and (for a continued run) the optimizer's state, gathered whole
    # on rank 0 at the end of the loop (the model's own tensors are this rank's shards).
    gathered: dict[str, Any] | None = None

    def weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The trained weights, whole and on the CPU (rank 0 under FSDP)."""
        if self.gathered is not None:
            return self.gathered["model"]
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def continued_state(self) -> dict[str, Any]:
        """What Checkpoint.optimizer holds for the next task of a continued run."""
        optimizer = self.gathered["optimizer"] if self.gathered else self.optimizer.state_dict()
        return {
            "optimizer": optimizer,
            "schedule_step": self.schedule_step,
            "warmup_steps": self.warmup_steps,
        }

    @property
    def final_loss(self) -> float:
        return float(self.rows[-1]["loss"]) if self.rows else float("nan")

    @property
    def tokens_per_s(self) -> float:
        """Median throughput over the steps of the task."""
        rates = sorted(float(r["tokens_per_s"]) for r in self.rows)
        return rates[len(rates) // 2] if rates else 0.0


def train_loop(
    model: LanguageModel,
    sampler: Sampler,
    options: TrainOptions,
    *,
    runtime: Runtime | None = None,
    eval_fn: Callable[[int], Any] | None = None,
    eval_every: int | None = None,
    on_step: Callable[[StepRow, int], None] | None = None,
    state_path: str | os.PathLike | None = None,
    signature: dict[str, Any] | None = None,
    on_save: Callable[[LoopResult], None] | None = None,
    continued: dict[str, Any] | None = None,
    mitigations: MakeMitigations | None = None,
    interrupts: Interrupts | None = None,
    run_step: int = 0,
) -> LoopResult:
    """Train `model` in place for `options.steps` optimizer steps of one task.

    - model: the model under study (plc.model.LanguageModel: plc's GPT or a Hugging Face model's
      adapter) already on `runtime.device` (wrapped here in DDP under torchrun, and compiled if
      `options.compile`); its parameters are updated in place.
    - sampler: the global batch of step `step` (0-based) is int64 (batch_size, seq_len + 1); this
      rank trains on rows rank::world_size of it, which `.local(rank, world_size)` reads alone,
      each next step's in a background thread while this one trains.
    - options: resolved (`TrainOptions.resolve`): steps, lr, warm-up and schedule
      (`plc.schedule.learning_rate`; the paper's warm-up is restarted at every call), micro_batch (gradient accumulation; None = the rank's whole share), grad_clip
      (None = no clipping, as the paper), AdamW's weight decay, betas and ε (a new optimizer at
      every call), save_every, compile.
    - eval_fn(step) is called (on every rank) before step 0, after every `eval_every` steps and after
      the last step, with the number of steps done; its return values (plain floats/dicts, they go
      into the resumable state) are collected in `LoopResult.evals`.
    - on_step(row, steps) is called after every step with that step's row (rank 0 only).
    - continued: a run that carries its optimizer across tasks (Checkpoint.optimizer of the input,
      or {} to start one): the AdamW state is loaded, and the schedule and the sampler run on the
      run's step count (`schedule_step` + step) with the run's one warm-up (`warmup_steps`), so
      chained tasks equal one long task. None: the protocol's fresh optimizer and warm-up.
    - mitigations(model, optimizer, micro_batch): builds the task's plc.mitigations.Mitigations
      (None when no remedy is on: the loop then runs no extra code); it acts once before the
      step-0 evaluation of a fresh task, on the gradients before every optimizer step, and after
      every optimizer step.
    - run_step: the run's steps before this task (rsqrt's one warm-up for the run counts them;
      a continued run counts its own `schedule_step` instead).
    - state_path/signature: every `options.save_every` steps, and once `options.save_every_minutes`
      have passed since the start or the last save, rank 0 writes the resumable state (model,
      optimizer, step, RNG states, rows, evals) atomically to `state_path` and calls
      `on_save(partial result)`. If `state_path` exists at the start, training resumes from it when
      its signature equals `signature` and is refused (PlcError) otherwise. The caller removes the
      state once its output is complete. On CPU a resumed run is bit-identical to an uninterrupted one.
    - interrupts: when its signal has arrived (on any rank), the state is saved at the end of the
      step and TrainingInterrupted raised (not after the last step: the task then finishes).

    Raises TrainingDiverged if the loss or gradient norm is not finite (before the bad update is
    applied), or if an update left a weight that is not (checked after the last step and before a
    save, so that neither output nor state holds one). Never prints.
    """
    if not options.resolved:
        raise PlcError("train_loop needs resolved options: call TrainOptions.resolve() first")
    if eval_every is not None and eval_every <= 0:
        raise PlcError(f"the evaluation interval must be positive, got {eval_every}")
    if options.batch_size != sampler.batch_size or options.seq_len != sampler.seq_len:
        raise PlcError(
            f"the sampler gives {sampler.batch_size}×{sampler.seq_len} batches, the options "
            f"{options.batch_size}×{options.seq_len}"
        )
    runtime = runtime or Runtime(next(model.parameters()).device)
    steps, save_every = options.steps, options.save_every
    first = int((continued or {}).get("schedule_step", 0))  # the run's step of this call's step 0
    warmup = int((continued or {}).get("warmup_steps", options.warmup_steps))
    world, rank = runtime.world_size, runtime.rank
    if sampler.batch_size % world:
        raise PlcError(f"batch of {sampler.batch_size} sequences does not split over {world} ranks")
    share = sampler.batch_size // world
    micro = options.micro_batch or share
    if share % micro:
        raise PlcError(
            f"--micro-batch {micro} does not divide the {share} sequences per rank of a batch"
        )
    n_micro = share // micro
    tokens_per_step = sampler.batch_size * sampler.seq_len
    rate_of = learning_rate(
        options, warmup=warmup, first=first, run_step=first if continued is not None else run_step
    )

    fsdp = runtime.distributed and options.strategy == "fsdp"
    if fsdp and mitigations is not None:
        raise PlcError(
            "--strategy fsdp shards every weight over the ranks, and the remedies act on whole "
            "weights: train with --strategy ddp"
        )
    if (fsdp or options.activation_checkpointing) and not isinstance(model, GPT):
        raise PlcError(
            "--strategy fsdp and --activation-checkpointing act on plc's GPT blocks; a Hugging "
            "Face model trains with --strategy ddp and without checkpointing"
        )
    if isinstance(model, GPT):
        model.checkpointing = options.activation_checkpointing
    state_path = Path(state_path) if state_path is not None else None
    state = None
    if state_path is not None and state_path.exists():
        state = _load_state(state_path, signature or {})
        # Whole weights into the whole model, before FSDP shards it.
        model.load_state_dict(state["model"])
    if fsdp:
        _shard(model)
    optimizer = make_optimizer(model, options)
    if continued and continued.get("optimizer"):
        _load_optimizer(model, optimizer, continued["optimizer"], fsdp)
    mit = mitigations(model, optimizer, micro) if mitigations is not None else None
    rows: list[StepRow] = []
    evals: list[dict[str, Any]] = []
    start = 0
    if state is not None:
        _load_optimizer(model, optimizer, state["optimizer"], fsdp)
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        start, rows, evals = int(state["step"]), list(state["rows"]), list(state["evals"])
        if mit is not None:
            mit.load_state_dict(state["mitigations"])
        del state
    elif mit is not None:  # before the step-0 evaluation, so that it sees the changed model
        mit.at_task_start(
            torch.from_numpy(sampler.batch(first, rank, world)[:, :-1]).to(runtime.device)
        )

    net: torch.nn.Module = model
    if runtime.distributed:
        # Every rank reads the state itself: they must all have found the same one.
        steps_seen = torch.tensor([start, -start], dtype=torch.float64, device=runtime.device)
        dist.all_reduce(steps_seen, op=dist.ReduceOp.MAX)
        if steps_seen[0] != -steps_seen[1]:
            raise PlcError(
                f"ranks found different resumable state at {state_path}: put it on a file "
                "system that every rank shares"
            )
        if not fsdp:
            net = DistributedDataParallel(
                model, device_ids=[runtime.device] if runtime.device.type == "cuda" else None
            )
    forward = torch.compile(net) if options.compile else net
    params = [p for p in model.parameters() if p.requires_grad]
    cuda = runtime.device.type == "cuda"

    def result() -> LoopResult:
        return LoopResult(steps, rows, evals, start, seconds, optimizer, first + steps, warmup, mit)

    def evaluate(done: int) -> None:
        if eval_fn is not None and (not evals or evals[-1]["step"] < done):
            evals.append({"step": done, "value": eval_fn(done)})

    seconds = 0.0
    save_at = _next_save(options) if state_path is not None else None
    pending: list[_Pending] = []
    window, next_read, window_start = 1, start + 1, time.perf_counter()
    model.train()
    # Each rank reads only its rows, the next step's while this one trains.
    batches = sampler.local(rank, world, stop=first + steps)
    try:
        for step in range(start, steps):
            if eval_every is not None and step % eval_every == 0 or step == 0:
                evaluate(step)
                model.train()
            t0 = time.perf_counter()
            rate = rate_of(step)
            for group in optimizer.param_groups:
                group["lr"] = rate
            batch = torch.from_numpy(batches.batch(first + step))
            if cuda:
                batch = batch.pin_memory().to(runtime.device, non_blocking=True)
            x, y = batch[:, :-1], batch[:, 1:]
            loss_sum = torch.zeros((), device=runtime.device)
            for i in range(n_micro):
                sl = slice(i * micro, (i + 1) * micro)
                # Gradients are reduced once, on the last micro-batch.
                with _gradient_sync(net, fsdp, i == n_micro - 1), runtime.autocast():
                    loss = forward(x[sl], y[sl])
                (loss / n_micro).backward()
                loss_sum += loss.detach().float()
            loss_mean = loss_sum / n_micro
            done = step + 1
            periodic = save_every is not None and done % save_every == 0
            reading = done >= next_read or done == steps or (periodic and state_path is not None)
            stop = interrupts.received if interrupts is not None else None
            timed = save_at is not None and time.monotonic() >= save_at
            flags = None
            if runtime.distributed:
                # One all-reduce for the mean loss and, at a read, for whether any rank must
                # save or stop and how long the window took (the next window's length).
                packed = loss_mean.reshape(1)
                if reading:
                    elapsed = time.perf_counter() - window_start
                    local = [float(timed), float(stop is not None), elapsed]
                    packed = torch.cat([packed, torch.tensor(local, device=runtime.device)])
                dist.all_reduce(packed, op=dist.ReduceOp.AVG)
                loss_mean, flags = packed[0], packed[1:] if reading else None
            if mit is not None:
                mit.before_step()
            if options.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, options.grad_clip)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            if isinstance(norm, DTensor):
                norm = norm.full_tensor()
            # A non-finite step's update is skipped on the device (fused AdamW reads found_inf,
            # as under torch.amp.GradScaler); the host names the step at its next read.
            optimizer.found_inf = (~(loss_mean.isfinite() & norm.isfinite())).float()
            optimizer.step()
            if mit is not None:
                mit.after_step(step, x)
            optimizer.zero_grad(set_to_none=True)
            pending.append(_Pending(step, rate, time.perf_counter() - t0, loss_mean, norm))
            if not reading:
                continue
            elapsed = time.perf_counter() - window_start
            values = _read(pending, flags)
            if flags is not None:
                timed, elapsed = values[-3] > 0, values[-1]
                stop = (stop or signal.SIGTERM) if values[-2] > 0 else None
            pending[-1].seconds = time.perf_counter() - t0  # the wait for the read included
            # On a GPU the steps were only queued until the read: each gets the window's mean.
            mean = sum(p.seconds for p in pending) / len(pending)
            for i, p in enumerate(pending):
                loss_val, norm_val = values[2 * i], values[2 * i + 1]
                dt = mean if cuda else p.seconds
                seconds += dt
                row: StepRow = {
                    "step": p.step,
                    "tokens": (p.step + 1) * tokens_per_step,
                    "loss": loss_val,
                    "lr": p.rate,
                    "grad_norm": norm_val,
                    "tokens_per_s": tokens_per_step / dt,
                }
                rows.append(row)
                if not (math.isfinite(loss_val) and math.isfinite(norm_val)):
                    evals[:] = [e for e in evals if e["step"] <= p.step]
                    raise TrainingDiverged(
                        f"training diverged at step {p.step}: loss {loss_val}, gradient norm "
                        f"{norm_val} (learning rate {p.rate:.3g}); no checkpoint written",
                        p.step,
                        rows,
                        evals,
                    )
                if on_step is not None and runtime.is_main:
                    on_step(row, steps)
            per_step = max(elapsed, 1e-9) / len(pending)
            window = min(2 * window, MAX_SYNC_STEPS, max(1, int(HOST_SYNC_SECONDS / per_step)))
            pending, next_read, window_start = [], done + window, time.perf_counter()
            if state_path is not None and done < steps and (periodic or timed or stop):
                if eval_every is not None and done % eval_every == 0:
                    evaluate(done)  # so the saved state holds every evaluation up to its step
                    model.train()
                _require_finite(model, step, rows, evals, runtime, fsdp)
                whole = _whole_states(model, optimizer, fsdp, runtime.is_main)
                if runtime.is_main:
                    extra = {"mitigations": mit.state_dict()} if mit is not None else {}
                    _save_state(state_path, *whole, done, rows, evals, signature or {}, extra)
                    if on_save is not None:
                        on_save(result())
                save_at = _next_save(options)
                if stop:
                    raise TrainingInterrupted(stop, done, state_path)
    finally:
        batches.close()
    _require_finite(model, steps - 1, rows, evals, runtime, fsdp)
    evaluate(steps)
    res = result()
    if fsdp:
        weights, optimizer_state = _whole_states(
            model, optimizer if continued is not None else None, fsdp, runtime.is_main
        )
        res.gathered = {"model": weights, "optimizer": optimizer_state}
    return res


@dataclass
class _Pending:
    """A step trained since the host's last read: its loss and norm still on the device."""

    step: int
    rate: float
    seconds: float
    loss: torch.Tensor
    norm: torch.Tensor


def _read(pending: list[_Pending], flags: torch.Tensor | None) -> list[float]:
    """The host sync: the window's losses and norms (and the ranks' agreed flags), at once."""
    values = [v for p in pending for v in (p.loss, p.norm)]
    if flags is not None:
        values += list(flags)
    return torch.stack([v.float() for v in values]).tolist()


def _shard(model: GPT) -> None:
    """FSDP2: each block one unit (gathered whole while it computes), the embeddings and the final
    LayerNorm the root's; weights, gradients and AdamW's moments live as shards over the ranks."""
    from torch.distributed.fsdp import fully_shard

    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)


def _gradient_sync(
    net: torch.nn.Module, fsdp: bool, sync: bool
) -> contextlib.AbstractContextManager:
    """Reduce gradients over the ranks in this backward pass only if `sync` (the last micro-batch)."""
    if fsdp:
        net.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if sync or not isinstance(net, DistributedDataParallel):
        return contextlib.nullcontext()
    return net.no_sync()


def _param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The optimizer's parameters in its state dict's order (index i is names[i])."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]


def _whole_states(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, fsdp: bool, main: bool
) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """The model's weights (CPU) and the optimizer's state whole, on the main rank (None on the
    others): under FSDP gathered from every rank's shards (a collective: every rank calls it),
    in the same layout as without (the optimizer's state keyed by parameter index)."""
    if not fsdp:
        if not main:
            return None, None
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return weights, None if optimizer is None else optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    whole = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=whole)
    state = None
    if optimizer is not None:
        by_name = get_optimizer_state_dict(model, optimizer, options=whole)
        index = {n: i for i, n in enumerate(_param_names(model, optimizer))}
        state = {
            "state": {index[n]: v for n, v in by_name.get("state", {}).items()},
            "param_groups": [
                {**g, "params": [index[n] for n in g["params"]]}
                for g in by_name.get("param_groups", [])
            ],
        }
    return (weights, state) if main else (None, None)


def _load_optimizer(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], fsdp: bool
) -> None:
    """Load a whole optimizer state (keyed by parameter index) into the optimizer; under FSDP
    each rank keeps its shard of it."""
    if not fsdp:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _param_names(model, optimizer)
    by_name = {
        "state": {names[int(i)]: v for i, v in state["state"].items()},
        "param_groups": [
            {**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]
        ],
    }
    set_optimizer_state_dict(
        model, optimizer, by_name, options=StateDictOptions(full_state_dict=True)
    )


def _next_save(options: TrainOptions) -> float | None:
    """When (time.monotonic) the next timed save is due, or None without --save-every-minutes."""
    minutes = options.save_every_minutes
    return None if minutes is None else time.monotonic() + 60 * minutes


def _require_finite(
    model: LanguageModel,
    step: int,
    rows: list[StepRow],
    evals: list[dict],
    runtime: Runtime,
    fsdp: bool = False,
) -> None:
    """TrainingDiverged if the update of `step` left a weight that is not finite (on any rank:
    under FSDP each holds its shards)."""
    bad = [
        name
        for name, p in model.named_parameters()
        if not torch.isfinite(p.to_local() if isinstance(p, DTensor) else p).all()
    ]
    if fsdp:
        anywhere = torch.tensor(float(bool(bad)), device=runtime.device)
        dist.all_reduce(anywhere, op=dist.ReduceOp.MAX)
        if anywhere > 0 and not bad:
            bad = ["a weight shard of another rank"]
    if bad:
        raise TrainingDiverged(
            f"training diverged at step {step}: its update made {bad[0]} non-finite "
            f"(learning rate {rows[-1]['lr'] if rows else float('nan'):.3g}); no checkpoint "
            "written",
            step,
            rows,
            evals,
        )


def _save_state(path: Path, weights, optimizer, step, rows, evals, signature, extra) -> None:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    payload = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "signature": signature,
        "step": step,
        "model": weights,
        "optimizer": optimizer,
        "rng": rng,
        "rows": rows,
        "evals": evals,
        **extra,
    }
    with atomic_path(path, force=True) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


def _load_state(path: Path, signature: dict[str, Any]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PlcError(
            f"{path} is not readable resumable state ({type(e).__name__}); delete it"
        ) from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise PlcError(f"{path} is not plc resumable state; delete it")
    theirs = state.get("signature", {})
    if theirs != signature:
        diff = sorted(k for k in set(theirs) | set(signature) if theirs.get(k) != signature.get(k))
        shown = ", ".join(f"{k} {theirs.get(k)!r} ≠ {signature.get(k)!r}" for k in diff[:3])
        raise PlcError(
            f"{path} holds resumable state of a different command ({shown}); "
            "rerun the original command or delete the file to start afresh"
        )
    return state
