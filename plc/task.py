"""`plc train-task`, and the set-up that train-task and probe share.

Both commands: resolve the options against the input checkpoint (its preset, context, d_model and
seed), load it, set up the runtime, build the model, run plc.train.train_loop with resumable state
beside the output, and record what was trained in the output's metadata (`advance`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc import __version__
from plc.errors import PlcError
from plc.mitigations import Mitigations, initial_state
from plc.options import TrainOptions
from plc.presets import get_preset
from plc.runtime import rank, setup
from plc.sizes import SHAPES
from plc.store import (
    Checkpoint,
    check_output,
    check_tokenizer,
    load_checkpoint,
    method_label,
    metric_frame,
    metric_path,
    save_checkpoint,
    write_metrics,
)
from plc.tracking import open_tracker

if TYPE_CHECKING:
    from plc.model import GPT
    from plc.runtime import Runtime
    from plc.store import Checkpoint
    from plc.train import LoopResult, MakeMitigations, StepRow


# BatchSampler stream of a continued run's tasks (probes use 0, continual tasks their index).
CONTINUED_STREAM = 1

# ----------------------------------------------------------------------- shared with plc probe


def load_and_resolve(
    ckpt: str | os.PathLike, options: TrainOptions, *, probe: bool = False
) -> tuple[Checkpoint, TrainOptions]:
    """The input checkpoint and the options resolved against it (preset, d_model, context, seed)."""

    src = Path(ckpt)
    if not src.exists() and str(ckpt) in SHAPES:
        raise PlcError(
            f"{ckpt} is a model size, not a checkpoint: write one first with "
            f"`plc init --size {ckpt} --preset {options.preset or 'paper'} --out c0.pt`"
        )
    base = load_checkpoint(src)
    resolved = options.resolve(
        preset=base.preset,
        d_model=base.config.d_model,
        context=base.config.context,
        probe=probe,
    )
    if resolved.seed is None:
        resolved = replace(resolved, seed=int(base.meta.get("seed", 0)))
    return base, resolved


def start(options: TrainOptions, build: Callable[[], GPT]) -> tuple[Runtime, GPT]:
    """Join the runtime (device, torchrun ranks) and build the model on its device."""
    runtime = setup(options.device)
    return runtime, build().to(runtime.device)


def resume_signature(base: Checkpoint, options: TrainOptions, **extra: Any) -> dict[str, Any]:
    """What a resumable state must match: the input checkpoint and everything that is trained."""
    return {
        "input": {k: base.meta.get(k) for k in ("run_id", "task_index", "tokens_seen", "size")},
        **options.record(),
        **extra,
    }


def advance(meta: dict[str, Any], options: TrainOptions, task: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a checkpoint after training one more task with `options`."""
    return {
        **meta,
        "task_index": int(meta.get("task_index", 0)) + 1,
        "tokens_seen": int(meta.get("tokens_seen", 0)) + options.total_tokens,
        "history": [*meta.get("history", []), {**task, **options.record()}],
        "plc_version": __version__,
    }


def mitigations_for(
    base: Checkpoint, options: TrainOptions, task_index: int
) -> MakeMitigations | None:
    """The loop's builder of this task's remedies, or None when none is on (the fast path).

    θ₀ for --l2-init is rebuilt from the run's config and seed (checked against the digest
    `plc init` recorded); CBP's unit ages and utilities carry over from the input checkpoint, so
    maturity counts the run's steps, not the task's."""
    mopts = options.mitigations
    if not mopts.active:
        return None

    theta0 = initial_state(base) if mopts.l2_init is not None else None
    carried = base.meta.get("mitigation_state")

    def build(model: GPT, optimizer, micro_batch: int) -> Mitigations:
        mit = Mitigations(mopts, seed=options.seed, task_index=task_index)
        mit.attach(model, optimizer, init=theta0, micro_batch=micro_batch)
        if carried:
            mit.load_state_dict(carried, counters=False)
        return mit

    return build


def state_path_for(out: str | os.PathLike) -> Path:
    """Where the resumable state of a run writing `out` lives (beside it)."""
    out = Path(out)
    return out.with_name(out.name + ".resume")


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
    options: dict[str, Any] = field(default_factory=dict)  # the resolved TrainOptions


def next_checkpoint_path(ckpt: str | os.PathLike) -> Path:
    """c47.pt → c48.pt beside the input (the last number in the name + 1, zero padding kept)."""
    ckpt = Path(ckpt)
    matches = list(re.finditer(r"\d+", ckpt.stem))
    if not matches:
        raise PlcError(f"cannot number the output after {ckpt.name} (no number in it); pass --out")
    m = matches[-1]
    n = str(int(m.group()) + 1).zfill(len(m.group()))
    return ckpt.with_name(ckpt.stem[: m.start()] + n + ckpt.stem[m.end() :] + ckpt.suffix)


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


def train_task(
    ckpt: str | os.PathLike,
    lang: str | None = None,
    *,
    options: TrainOptions | None = None,
    mix: str | Sequence[str] | None = None,
    mix_weights: str | Sequence[float] | None = None,
    data: str | os.PathLike = "data",
    out: str | os.PathLike | None = None,
    metrics: str | os.PathLike | None = "metrics",
    continue_run: bool = False,
    val_every: int | None = None,
    val_seqs: int | None = None,
    force: bool = False,
    on_step: Callable[[StepRow, int], None] | None = None,
    **overrides: Any,
) -> TrainTaskResult:
    """Train checkpoint `ckpt` on one task instance of `lang` (or the `mix`) and write the next one.

    `options` (or TrainOptions fields given as keyword arguments, e.g. `preset="cpu", steps=8`)
    set the budget, learning rate and optimizer; what they leave unset comes from the preset the
    checkpoint was initialised with. Batches are drawn from (seed, output task index), so every
    appearance of a language is fresh.

    `continue_run`: the task continues the input's optimizer state and learning-rate schedule
    (one warm-up at the start of the run, §V-B's stationary problem read as one training run)
    instead of the continual protocol's reset (§IV-B); its batches are the run's stream at the
    run's step, so chained tasks equal one long task. The output carries the state for the next.
    A fresh init (task 0) starts such a run; a later checkpoint without the state is refused.

    `val_every`: validation loss on the task's own language every so many steps (and after the
    last), on `val_seqs` windows (default: the preset's probe evaluation set), in the `val_loss`
    column of the train row of the step after which it was measured (App. A's learning-rate
    search: the final loss is the mean of the last 10).
    """
    from plc.data.sampling import BatchSampler
    from plc.data.tokenstore import open_lang

    options = replace(options or TrainOptions(), **overrides)
    if (lang is None) == (mix is None):
        raise PlcError("give --lang for one language or --mix for the stationary mixture")
    if mix is not None:
        langs, weights = _parse_mix(mix, mix_weights)
        label = "mix"
    else:
        if mix_weights is not None:
            raise PlcError("--mix-weights goes with --mix")
        langs, weights, label = [lang], None, lang

    base, opts = load_and_resolve(ckpt, options)
    src = Path(ckpt)
    continued = None
    if continue_run:
        if base.optimizer is None and base.task_index > 0:
            raise PlcError(
                f"--continue: {src} carries no optimizer state (it was trained without "
                "--continue); continue from a checkpoint of a continued run or from a fresh init"
            )
        continued = base.optimizer or {}
    out = Path(out) if out is not None else next_checkpoint_path(src)
    if out.resolve() == src.resolve():
        raise PlcError(f"--out {out} is the input checkpoint; write the next task elsewhere")
    check_output(out, force)

    stores = [open_lang(data, code) for code in langs]
    for store in stores:
        check_tokenizer(base, store.tokenizer, str(store.path))
    val = None
    if val_every is not None:
        if val_every <= 0:
            raise PlcError(f"--val-every must be positive, got {val_every}")
        if mix is not None:
            raise PlcError("--val-every validates one language: give it with --lang")
        from plc.evaluate import load_eval_windows

        n = get_preset(opts.preset).probe_eval_seqs if val_seqs is None else val_seqs
        val = load_eval_windows(base, data, lang, n, opts.seq_len, "--val-seqs").windows
    elif val_seqs is not None:
        raise PlcError("--val-seqs goes with --val-every")
    task_index = base.task_index + 1
    # A continued run draws from one stream (1) at its own step; tasks draw from their index.
    stream = CONTINUED_STREAM if continue_run else task_index
    sampler = BatchSampler(stores, opts.seq_len, opts.batch_size, opts.seed, stream, weights)

    task: dict[str, Any] = {"lang": label}
    if continue_run:
        task.update(continued=True, schedule_step=int(continued.get("schedule_step", 0)))
    if mix is not None:
        task.update(mix=langs, mix_weights=[float(w) for w in sampler.weights])
    result_ckpt = Checkpoint(base.config, base.model, advance(base.meta, opts, task))
    context_cols = {
        "kind": "train",
        **result_ckpt.row_context(),
        "method": method_label(opts.mitigations.label, opts.weight_decay, opts.preset),
    }

    state_path = state_path_for(out)
    metrics_file = None
    if metrics is not None:
        metrics_file = metric_path(
            metrics, "train", base.run_id, task_index, label, None, context_cols["method"]
        )
        if not state_path.exists():
            check_output(metrics_file, force)
    signature = resume_signature(base, opts, out=out.name, langs=langs, val_every=val_every, **task)

    # Opened before any work so that a bad folder fails at once; rank 0 writes, as for files.
    steps_before = sum(int(h.get("steps", 0)) for h in base.meta.get("history", []))
    tracker = (
        open_tracker(
            opts.tensorboard, base.run_id, task_index, "train", lang=label, step_offset=steps_before
        )
        if rank() == 0
        else None
    )
    runtime, model = start(opts, lambda: base.build_model())

    def step_hook(row: StepRow, total: int) -> None:
        if tracker is not None:
            tracker.step(row)
        if on_step is not None:
            on_step(row, total)

    def write(res: LoopResult) -> None:
        if metrics_file is not None:
            measured = {e["step"] - 1: e["value"] for e in res.evals if e["step"] > 0}
            rows = [{**context_cols, **r, "val_loss": measured.get(r["step"])} for r in res.rows]
            write_metrics(metrics_file, metric_frame("train", rows), force=True)

    eval_fn = None
    if val is not None:
        from plc.evaluate import validation_loss

        def eval_fn(done: int) -> float:
            return validation_loss(model, val, runtime)

    from plc.train import train_loop

    try:
        res = train_loop(
            model,
            sampler,
            opts,
            runtime=runtime,
            on_step=step_hook,
            eval_fn=eval_fn,
            eval_every=val_every,
            state_path=state_path,
            signature=signature,
            on_save=write,
            continued=continued,
            mitigations=mitigations_for(base, opts, task_index),
        )
    finally:
        if tracker is not None:
            tracker.close()
    if runtime.is_main:
        result_ckpt.model = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        result_ckpt.meta.pop("mitigation_state", None)
        if res.mitigations is not None:
            result_ckpt.meta["history"][-1]["mitigations"] = res.mitigations.record()
            if opts.cbp is not None:
                result_ckpt.meta["mitigation_state"] = res.mitigations.state_dict()
        if continue_run:
            result_ckpt.optimizer = res.continued_state()
        save_checkpoint(out, result_ckpt, force=force)
        write(res)
        state_path.unlink(missing_ok=True)
    return TrainTaskResult(
        out=str(out),
        run_id=base.run_id,
        lang=label,
        task_index=task_index,
        steps=opts.steps,
        tokens=opts.total_tokens,
        batch_tokens=opts.batch_tokens,
        seq_len=opts.seq_len,
        lr=opts.lr,
        warmup_steps=res.warmup_steps,
        final_loss=res.final_loss,
        tokens_per_s=res.tokens_per_s,
        seconds=res.seconds,
        resumed_from=res.resumed_from,
        metrics=str(metrics_file) if metrics_file is not None else None,
        langs=langs,
        options=opts.record(),
    )
