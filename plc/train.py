"""The one training loop (§IV-B), used by `plc train-task` and by `plc probe`.

Every call is a fresh task: a new AdamW (β = 0.9, 0.95; weight decay on matrices and embeddings,
none on biases and LayerNorm), a linear warm-up restarted from its first value, then a constant
learning rate. Batches come from a sampler whose global batch is a pure function of the step, so
resuming needs only the step, and DDP ranks each take rows rank::world_size of the same batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc.errors import PlcError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from plc.model import GPT
    from plc.runtime import Runtime

STATE_FORMAT = "plc-train-state"
STATE_VERSION = 1
BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.1

# A training-step row: what `on_step` receives and what the `train` metric file holds per step.
StepRow = dict[str, float | int]


class TrainingDiverged(Exception):
    """The loss or gradient norm became NaN/inf: no output is written, resumable state is kept."""


class Sampler:
    """What train_loop needs from a sampler (plc.data.sampling.BatchSampler is one)."""

    batch_size: int
    seq_len: int

    def batch(self, step: int) -> np.ndarray:  # (batch_size, seq_len + 1) int64
        raise NotImplementedError


def lr_at(step: int, lr: float, warmup_steps: int) -> float:
    """Learning rate of 0-based step `step`: lr·(step+1)/warmup over the warm-up, then lr."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = WEIGHT_DECAY):
    """A fresh AdamW: decay on ≥2-D parameters (weights, tied embedding, positions), not on 1-D ones."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # Fused: one kernel for all parameters; 6× faster than the per-tensor loop on CPU.
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS, fused=True)


@dataclass
class LoopResult:
    steps: int  # steps of the task (all done)
    rows: list[StepRow]  # one per step: step, tokens, loss, lr, grad_norm, tokens_per_s
    evals: list[dict[str, Any]]  # {"step": s, "value": what eval_fn returned}, in step order
    resumed_from: int  # step the loop resumed at (0 for a fresh start)
    seconds: float  # wall time of this call's training steps (evals excluded)

    @property
    def final_loss(self) -> float:
        return float(self.rows[-1]["loss"]) if self.rows else float("nan")

    @property
    def tokens_per_s(self) -> float:
        """Median throughput over the steps of the task."""
        rates = sorted(float(r["tokens_per_s"]) for r in self.rows)
        return rates[len(rates) // 2] if rates else 0.0


def train_loop(
    model: GPT,
    sampler: Sampler,
    steps: int,
    lr: float,
    *,
    warmup_steps: int = 0,
    micro_batch: int | None = None,
    grad_clip: float | None = None,
    weight_decay: float = WEIGHT_DECAY,
    runtime: Runtime | None = None,
    compile: bool = False,
    eval_fn: Callable[[int], Any] | None = None,
    eval_every: int | None = None,
    on_step: Callable[[StepRow, int], None] | None = None,
    state_path: str | os.PathLike | None = None,
    signature: dict[str, Any] | None = None,
    save_every: int | None = None,
    on_save: Callable[[LoopResult], None] | None = None,
) -> LoopResult:
    """Train `model` in place for `steps` optimizer steps of one task; return the per-step record.

    - model: a GPT already on `runtime.device` (wrapped here in DDP under torchrun, and compiled if
      `compile`); its parameters are updated in place.
    - sampler: `.batch(step)` gives the global batch of step `step` (0-based) as int64
      (batch_size, seq_len + 1); this rank trains on rows rank::world_size of it.
    - lr, warmup_steps: the schedule `lr_at` (linear warm-up from lr/warmup_steps, then constant),
      restarted at every call; the optimizer (make_optimizer) is new at every call.
    - micro_batch: sequences per forward/backward on this rank (gradient accumulation); None = all.
    - grad_clip: max global gradient norm, None = no clipping (the paper names none).
    - eval_fn(step) is called (on every rank) before step 0, after every `eval_every` steps and after
      the last step, with the number of steps done; its return values (plain floats/dicts, they go
      into the resumable state) are collected in `LoopResult.evals`.
    - on_step(row, steps) is called after every step with that step's row (rank 0 only).
    - state_path/signature/save_every: every `save_every` steps rank 0 writes the resumable state
      (model, optimizer, step, RNG states, rows, evals) atomically to `state_path` and calls
      `on_save(partial result)`. If `state_path` exists at the start, training resumes from it when
      its signature equals `signature` and is refused (PlcError) otherwise. The caller removes the
      state once its output is complete. On CPU a resumed run is bit-identical to an uninterrupted one.

    Raises TrainingDiverged (before the bad update is applied) if the loss or gradient norm is not
    finite. Never prints.
    """
    import torch

    from plc.runtime import Runtime

    runtime = runtime or Runtime(next(model.parameters()).device)
    if steps <= 0:
        raise PlcError(f"the number of steps must be positive, got {steps}")
    if eval_every is not None and eval_every <= 0:
        raise PlcError(f"the evaluation interval must be positive, got {eval_every}")
    if save_every is not None and save_every <= 0:
        raise PlcError(f"--save-every must be positive, got {save_every}")
    world, rank = runtime.world_size, runtime.rank
    if sampler.batch_size % world:
        raise PlcError(f"batch of {sampler.batch_size} sequences does not split over {world} ranks")
    share = sampler.batch_size // world
    micro = micro_batch or share
    if micro <= 0 or share % micro:
        raise PlcError(
            f"--micro-batch {micro} does not divide the {share} sequences per rank of a batch"
        )
    n_micro = share // micro
    tokens_per_step = sampler.batch_size * sampler.seq_len

    optimizer = make_optimizer(model, lr, weight_decay)
    rows: list[StepRow] = []
    evals: list[dict[str, Any]] = []
    start = 0
    state_path = Path(state_path) if state_path is not None else None
    if state_path is not None and state_path.exists():
        state = _load_state(state_path, signature or {})
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        start, rows, evals = int(state["step"]), list(state["rows"]), list(state["evals"])

    net: torch.nn.Module = model
    if runtime.distributed:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        # Every rank reads the state itself: they must all have found the same one.
        steps_seen = torch.tensor([start, -start], dtype=torch.float64, device=runtime.device)
        dist.all_reduce(steps_seen, op=dist.ReduceOp.MAX)
        if steps_seen[0] != -steps_seen[1]:
            raise PlcError(
                f"ranks found different resumable state at {state_path}: put it on a file "
                "system that every rank shares"
            )

        net = DistributedDataParallel(
            model, device_ids=[runtime.device] if runtime.device.type == "cuda" else None
        )
    forward = torch.compile(net) if compile else net
    params = [p for p in model.parameters() if p.requires_grad]

    def result() -> LoopResult:
        return LoopResult(steps, rows, evals, start, seconds)

    def evaluate(done: int) -> None:
        if eval_fn is not None and (not evals or evals[-1]["step"] < done):
            evals.append({"step": done, "value": eval_fn(done)})

    seconds = 0.0
    model.train()
    for step in range(start, steps):
        if eval_every is not None and step % eval_every == 0 or step == 0:
            evaluate(step)
            model.train()
        t0 = time.perf_counter()
        rate = lr_at(step, lr, warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = rate
        batch = torch.from_numpy(sampler.batch(step)[rank::world])
        if runtime.device.type == "cuda":
            batch = batch.pin_memory().to(runtime.device, non_blocking=True)
        x, y = batch[:, :-1], batch[:, 1:]
        loss_sum = torch.zeros((), device=runtime.device)
        for i in range(n_micro):
            sl = slice(i * micro, (i + 1) * micro)
            # Gradients are all-reduced once, on the last micro-batch.
            sync = i == n_micro - 1 or not runtime.distributed
            with contextlib.nullcontext() if sync else net.no_sync(), runtime.autocast():
                loss = forward(x[sl], y[sl])
            (loss / n_micro).backward()
            loss_sum += loss.detach().float()
        loss_mean = loss_sum / n_micro
        if runtime.distributed:
            dist.all_reduce(loss_mean, op=dist.ReduceOp.AVG)
        grads = [p.grad for p in params if p.grad is not None]
        if grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm(grads)
        loss_val, norm_val = loss_mean.item(), float(norm)
        if not (math.isfinite(loss_val) and math.isfinite(norm_val)):
            raise TrainingDiverged(
                f"training diverged at step {step}: loss {loss_val}, gradient norm {norm_val} "
                f"(learning rate {rate:.3g}); no output written"
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        seconds += dt
        row: StepRow = {
            "step": step,
            "tokens": (step + 1) * tokens_per_step,
            "loss": loss_val,
            "lr": rate,
            "grad_norm": norm_val,
            "tokens_per_s": tokens_per_step / dt,
        }
        rows.append(row)
        if on_step is not None and runtime.is_main:
            on_step(row, steps)
        done = step + 1
        if state_path is not None and save_every and done % save_every == 0 and done < steps:
            if eval_every is not None and done % eval_every == 0:
                evaluate(done)  # so the saved state holds every evaluation up to its step
                model.train()
            if runtime.is_main:
                _save_state(state_path, model, optimizer, done, rows, evals, signature or {})
                if on_save is not None:
                    on_save(result())
    evaluate(steps)
    return result()


def _save_state(path: Path, model, optimizer, step, rows, evals, signature) -> None:
    import torch

    from plc.store import atomic_path

    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    payload = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "signature": signature,
        "step": step,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "rng": rng,
        "rows": rows,
        "evals": evals,
    }
    with atomic_path(path, force=True) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


def _load_state(path: Path, signature: dict[str, Any]) -> dict[str, Any]:
    import torch

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


# ------------------------------------------------------------------------------ plc train-task


@dataclass
class TrainTaskResult:
    out: str
    run_id: str
    lang: str
    task_index: int  # of the output checkpoint
    steps: int
    tokens: int
    batch_tokens: int
    seq_len: int
    lr: float
    warmup_steps: int
    final_loss: float
    tokens_per_s: float  # median over the steps
    seconds: float
    resumed_from: int
    metrics: str | None
    langs: list[str] = field(default_factory=list)


def next_checkpoint_path(ckpt: str | os.PathLike) -> Path:
    """c47.pt → c48.pt beside the input (the last number in the name + 1, zero padding kept)."""
    ckpt = Path(ckpt)
    matches = list(re.finditer(r"\d+", ckpt.stem))
    if not matches:
        raise PlcError(f"cannot number the output after {ckpt.name} (no number in it); pass --out")
    m = matches[-1]
    n = str(int(m.group()) + 1).zfill(len(m.group()))
    return ckpt.with_name(ckpt.stem[: m.start()] + n + ckpt.stem[m.end() :] + ckpt.suffix)


def state_path_for(out: str | os.PathLike) -> Path:
    """Where the resumable state of a run writing `out` lives (beside it)."""
    out = Path(out)
    return out.with_name(out.name + ".resume")


def _parse_mix(mix: str | Sequence[str], weights: str | Sequence[float] | None):
    langs = [s.strip() for s in mix.split(",")] if isinstance(mix, str) else list(mix)
    langs = [s for s in langs if s]
    if not langs or len(set(langs)) != len(langs):
        raise PlcError(f"--mix needs distinct comma-separated languages, got {mix!r}")
    if weights is None:
        return langs, None
    try:
        w = [float(x) for x in weights.split(",")] if isinstance(weights, str) else list(weights)
    except ValueError as e:
        raise PlcError(f"--mix-weights must be numbers, got {weights!r}") from e
    if len(w) != len(langs) or any(x < 0 or not math.isfinite(x) for x in w) or sum(w) <= 0:
        raise PlcError(
            f"--mix-weights needs {len(langs)} non-negative numbers (not all zero), got {weights!r}"
        )
    return langs, w


@dataclass(frozen=True)
class Budget:
    """The size of one task (or probe): every number that a preset sets and a flag can override."""

    steps: int
    batch_tokens: int  # global
    seq_len: int
    micro_batch: int | None  # sequences per forward/backward per rank; None = the rank's share
    warmup_steps: int
    grad_clip: float | None

    @property
    def batch_size(self) -> int:
        return self.batch_tokens // self.seq_len

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_tokens

    def check_context(self, context: int) -> None:
        if self.seq_len > context:
            raise PlcError(f"--seq-len {self.seq_len} exceeds the checkpoint's context {context}")

    def record(self) -> dict[str, Any]:
        """The budget as it goes into a checkpoint's task history and a resume signature."""
        return {
            "tokens": self.tokens,
            "steps": self.steps,
            "batch_tokens": self.batch_tokens,
            "seq_len": self.seq_len,
            "warmup_steps": self.warmup_steps,
            "micro_batch": self.micro_batch,
            "grad_clip": self.grad_clip,
        }


def resolve_budget(
    preset: str,
    *,
    tokens: int | None = None,
    steps: int | None = None,
    batch_tokens: int | None = None,
    micro_batch: int | None = None,
    seq_len: int | None = None,
    warmup: float | None = None,
    grad_clip: float | None = None,
    save_every: int | None = None,
) -> Budget:
    """The preset's budget with explicit values overriding it, checked (bad values: PlcError)."""
    from plc.presets import get_preset, steps_for
    from plc.presets import warmup_steps as warmup_for

    p = get_preset(preset)
    if tokens is not None and steps is not None:
        raise PlcError("give --tokens or --steps, not both")
    seq_len = p.seq_len if seq_len is None else seq_len
    batch_tokens = p.batch_tokens if batch_tokens is None else batch_tokens
    for name, v in (
        ("--seq-len", seq_len),
        ("--batch-tokens", batch_tokens),
        ("--tokens", tokens),
        ("--steps", steps),
        ("--micro-batch", micro_batch),
        ("--save-every", save_every),
    ):
        if v is not None and v <= 0:
            raise PlcError(f"{name} must be positive, got {v}")
    if batch_tokens % seq_len:
        raise PlcError(f"--batch-tokens {batch_tokens} is not a multiple of --seq-len {seq_len}")
    if steps is None:
        steps = steps_for(p.task_tokens if tokens is None else tokens, batch_tokens)
    warmup = p.warmup if warmup is None else warmup
    if not 0 <= warmup < 1:
        raise PlcError(f"--warmup is a fraction of the steps in [0, 1), got {warmup}")
    if grad_clip is not None and grad_clip <= 0:
        raise PlcError(f"--grad-clip must be positive, got {grad_clip}")
    micro_batch = p.micro_batch if micro_batch is None else micro_batch
    return Budget(steps, batch_tokens, seq_len, micro_batch, warmup_for(warmup, steps), grad_clip)


def resolve_lr(lr: str | float, d_model: int) -> float:
    """`auto` is the paper's rule from the hidden size (Table II); otherwise a positive number."""
    from plc.sizes import paper_lr

    if lr == "auto":
        return paper_lr(d_model)
    try:
        value = float(lr)
    except ValueError as e:
        raise PlcError(f"--lr must be 'auto' or a number, got {lr!r}") from e
    if not (value > 0 and math.isfinite(value)):
        raise PlcError(f"--lr must be positive, got {lr}")
    return value


def train_task(
    ckpt: str | os.PathLike,
    lang: str | None = None,
    *,
    mix: str | Sequence[str] | None = None,
    mix_weights: str | Sequence[float] | None = None,
    data: str | os.PathLike = "data",
    out: str | os.PathLike | None = None,
    preset: str = "paper",
    tokens: int | None = None,
    steps: int | None = None,
    batch_tokens: int | None = None,
    micro_batch: int | None = None,
    seq_len: int | None = None,
    lr: str | float = "auto",
    warmup: float | None = None,
    grad_clip: float | None = None,
    seed: int | None = None,
    metrics: str | os.PathLike | None = "metrics",
    save_every: int | None = None,
    device: str = "auto",
    compile: bool = False,
    threads: int | None = None,
    force: bool = False,
    on_step: Callable[[StepRow, int], None] | None = None,
) -> TrainTaskResult:
    """Train checkpoint `ckpt` on one task instance of `lang` (or the `mix`) and write the next one.

    Budgets come from `preset`, each overridden by an explicit argument: `steps` or `tokens`
    (rounded up to whole batches), `batch_tokens` (global, a multiple of `seq_len`), `seq_len`,
    `micro_batch`, `warmup` (fraction of the steps). lr "auto" is the paper's rule from d_model.
    Batches are drawn from (seed, output task index), so every appearance of a language is fresh.
    """
    from plc.presets import get_preset
    from plc.store import check_output, check_tokenizer, load_checkpoint, metric_path

    p = get_preset(preset)
    src = Path(ckpt)
    if not src.exists():
        from plc.sizes import PRESETS as SIZES

        if str(ckpt) in SIZES:
            raise PlcError(
                f"--ckpt {ckpt} is a size preset, not a checkpoint: write one first with "
                f"`plc init --size {ckpt} --tokenizer {p.tokenizer} --context {p.context} --out c0.pt`"
            )
        raise PlcError(f"no checkpoint at {src}")
    out = Path(out) if out is not None else next_checkpoint_path(src)
    if out.resolve() == src.resolve():
        raise PlcError(f"--out {out} is the input checkpoint; write the next task elsewhere")
    check_output(out, force)

    if (lang is None) == (mix is None):
        raise PlcError("give --lang for one language or --mix for the stationary mixture")
    if mix is not None:
        langs, weights = _parse_mix(mix, mix_weights)
        label = "mix"
    else:
        if mix_weights is not None:
            raise PlcError("--mix-weights goes with --mix")
        langs, weights, label = [lang], None, lang

    budget = resolve_budget(
        preset,
        tokens=tokens,
        steps=steps,
        batch_tokens=batch_tokens,
        micro_batch=micro_batch,
        seq_len=seq_len,
        warmup=warmup,
        grad_clip=grad_clip,
        save_every=save_every,
    )
    seq_len, batch_tokens, steps = budget.seq_len, budget.batch_tokens, budget.steps

    base = load_checkpoint(src)
    budget.check_context(base.config.context)
    lr_value = resolve_lr(lr, base.config.d_model)

    from plc.data.sampling import BatchSampler
    from plc.data.tokenstore import open_lang

    stores = [open_lang(data, code) for code in langs]
    for store in stores:
        check_tokenizer(base, store.tokenizer, str(store.path))
    seed = int(base.meta.get("seed", 0)) if seed is None else seed
    task_index = base.task_index + 1
    sampler = BatchSampler(stores, seq_len, budget.batch_size, seed, task_index, weights)
    n_warmup = budget.warmup_steps

    meta = dict(base.meta)
    task = {
        "lang": label,
        **budget.record(),
        "lr": lr_value,
        "seed": seed,
        "preset": preset,
    }
    if mix is not None:
        task["mix"] = langs
        task["mix_weights"] = [float(w) for w in sampler.weights]
    meta.update(
        task_index=task_index,
        tokens_seen=int(meta.get("tokens_seen", 0)) + steps * batch_tokens,
        history=[*meta.get("history", []), task],
    )
    from plc import __version__
    from plc.store import Checkpoint

    meta["plc_version"] = __version__
    result_ckpt = Checkpoint(base.config, base.model, meta)
    context_cols = {"kind": "train", **result_ckpt.row_context()}

    state_path = state_path_for(out)
    resuming = state_path.exists()
    metrics_file = None
    if metrics is not None:
        metrics_file = metric_path(metrics, "train", base.run_id, task_index, label)
        if not resuming:
            check_output(metrics_file, force)
    signature = {
        "input": {k: base.meta.get(k) for k in ("run_id", "task_index", "tokens_seen", "size")},
        "out": out.name,
        **{k: v for k, v in task.items() if k != "preset"},
        "langs": langs,
    }

    from plc.runtime import setup

    runtime = setup(device, threads)
    model = base.build_model(runtime.device)

    def write(res: LoopResult) -> None:
        if metrics_file is not None:
            from plc.store import metric_frame, write_metrics

            rows = [{**context_cols, **r} for r in res.rows]
            write_metrics(metrics_file, metric_frame("train", rows), force=True)

    res = train_loop(
        model,
        sampler,
        steps,
        lr_value,
        warmup_steps=n_warmup,
        micro_batch=budget.micro_batch,
        grad_clip=budget.grad_clip,
        runtime=runtime,
        compile=compile,
        on_step=on_step,
        state_path=state_path,
        signature=signature,
        save_every=save_every,
        on_save=write,
    )
    if runtime.is_main:
        from plc.store import save_checkpoint

        result_ckpt.model = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_checkpoint(out, result_ckpt, force=force)
        write(res)
        state_path.unlink(missing_ok=True)
    return TrainTaskResult(
        out=str(out),
        run_id=base.run_id,
        lang=label,
        task_index=task_index,
        steps=steps,
        tokens=steps * batch_tokens,
        batch_tokens=batch_tokens,
        seq_len=seq_len,
        lr=lr_value,
        warmup_steps=n_warmup,
        final_loss=res.final_loss,
        tokens_per_s=res.tokens_per_s,
        seconds=res.seconds,
        resumed_from=res.resumed_from,
        metrics=str(metrics_file) if metrics_file is not None else None,
        langs=langs,
    )
