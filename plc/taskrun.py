"""The skeleton of the commands that train a copy of a checkpoint: `plc train-task` and `plc probe`
(plc.task, plc.probe) are each the part that differs.

1. Set-up: the input checkpoint is read (refused if a weight is not finite) and the options are
   resolved against it (`load_and_resolve`); the runtime joins and the model is built (`start`).
2. Outputs (`TaskRun`): a command writes a pair — its metric file and a checkpoint — while it
   holds the output's lock (`plc.store.output_lock`), so a second process on the same output
   refuses at once, before any work. An existing checkpoint is refused without --force (and
   with it, anything but a plc checkpoint). So is an existing metric file, unless it is half of
   an unfinished pair this same command began (`owner_of` its signature is written into the
   file; the checkpoint is missing): then the rerun finishes what the interrupted run began.
3. Resume: the loop's state lives beside the output (`state_path_for`); a rerun of the same
   command continues it bit-exactly. While the run holds its outputs, SIGTERM and SIGUSR1 save
   that state at the end of the step and stop the command (plc.train.Interrupts).
4. Commit, in order: the metric file, then the checkpoint, then the state is removed. A failure
   between the two writes leaves a metric file its rerun owns, and the rerun completes the pair.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc import __version__
from plc.errors import PlcError
from plc.memory import choose
from plc.mitigations import Mitigations, initial_state
from plc.options import TrainOptions
from plc.runtime import device_memory, rank, setup
from plc.sizes import SHAPES, GPTConfig
from plc.store import (
    Checkpoint,
    check_output,
    load_checkpoint,
    metric_owner,
    output_lock,
    progress_path,
    save_checkpoint,
    write_metrics,
)
from plc.tracking import TensorBoardTracker, open_tracker
from plc.train import Interrupts

if TYPE_CHECKING:
    import polars as pl

    from plc.model import LanguageModel
    from plc.runtime import Runtime
    from plc.train import LoopResult, MakeMitigations, Sampler, StepRow


# ------------------------------------------------------------------------------------ set-up


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
    base = load_checkpoint(src, finite=True)
    resolved = options.resolve(
        preset=base.preset,
        d_model=base.config.d_model,
        context=base.config.context,
        probe=probe,
    )
    if resolved.seed is None:
        resolved = replace(resolved, seed=int(base.meta.get("seed", 0)))
    return base, fit_to_device(
        resolved, base.config, device_memory(options.device), fixed=options.micro_batch
    )


def fit_to_device(
    options: TrainOptions,
    config: GPTConfig,
    device_bytes: int | None,
    *,
    fixed: int | None = None,
    world: int | None = None,
) -> TrainOptions:
    """Resolved options with the strategy, micro-batch and activation checkpointing that fit a
    device of `device_bytes` (plc.memory.choose, over `world` ranks: torchrun's) where the flags
    leave them open: the micro-batch at most the resolved one, unless given (`fixed`). Without a
    device to fit (the CPU) auto is DDP and the rest stays as resolved."""
    if device_bytes is None:
        return options if options.strategy != "auto" else replace(options, strategy="ddp")
    world = world or int(os.environ.get("WORLD_SIZE", "1"))
    fit = choose(
        config,
        seq_len=options.seq_len,
        share=options.batch_size // world,
        world=world,
        device_bytes=device_bytes,
        cap=options.micro_batch,
        micro_batch=fixed,
        strategy=options.strategy,
        checkpointing=options.activation_checkpointing,
    )
    return replace(
        options,
        strategy=fit.strategy,
        micro_batch=fit.micro_batch,
        activation_checkpointing=fit.activation_checkpointing,
    )


def start(
    options: TrainOptions, build: Callable[[], LanguageModel]
) -> tuple[Runtime, LanguageModel]:
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


def owner_of(signature: dict[str, Any]) -> str:
    """A short digest of a command's signature: the owner its metric file names."""
    text = json.dumps(signature, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def advance(meta: dict[str, Any], options: TrainOptions, task: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a checkpoint after training one more task with `options`."""
    return {
        **meta,
        "task_index": int(meta.get("task_index", 0)) + 1,
        "tokens_seen": int(meta.get("tokens_seen", 0)) + options.total_tokens,
        "history": [*meta.get("history", []), {**task, **options.record()}],
        "plc_version": __version__,
    }


def run_steps(base: Checkpoint) -> int:
    """The optimizer steps of every task the checkpoint's run trained so far."""
    return sum(int(h.get("steps", 0)) for h in base.meta.get("history", []))


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
    before = run_steps(base)

    def build(model: LanguageModel, optimizer, micro_batch: int) -> Mitigations:
        mit = Mitigations(mopts, seed=options.seed, task_index=task_index, run_step=before)
        mit.attach(model, optimizer, init=theta0, micro_batch=micro_batch)
        if carried:
            mit.load_state_dict(carried, counters=False)
        return mit

    return build


def state_path_for(out: str | os.PathLike) -> Path:
    """Where the resumable state of a run writing `out` lives (beside it)."""
    out = Path(out)
    return out.with_name(out.name + ".resume")


# ------------------------------------------------------------------------------------ outputs


@dataclass
class TaskOutputs:
    """What one training command writes, in commit order, and what it keeps while it runs."""

    lock: Path  # the output whose lock the command holds (train-task: its checkpoint)
    metrics: Path | None  # written first
    checkpoint: Path | None  # written last: its presence means the pair is complete
    kind: str  # the metric file's kind (train, probe)
    states: list[Path] = field(default_factory=list)  # the loop's resumable states


class TaskRun:
    """One run of a training command on its outputs, as a `with` block: the lock and the signal
    handlers are held inside it, the outputs checked on entry (PlcError before any work), the
    pair written by `commit`. `owner` (`owner_of` the command's signature) marks its metric file.
    Rank 0 locks and writes; every rank trains."""

    def __init__(self, outputs: TaskOutputs, owner: str, force: bool):
        self.outputs, self.owner, self.force = outputs, owner, force
        self.interrupts = Interrupts()
        self.tracker: TensorBoardTracker | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> TaskRun:
        with contextlib.ExitStack() as stack:
            # Signals first: once the lock file is there, a signal is a request to save.
            stack.enter_context(self.interrupts)
            if rank() == 0:
                stack.enter_context(output_lock(self.outputs.lock))
            self._check()
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _check(self) -> None:
        o = self.outputs
        if o.checkpoint is not None:
            check_output(o.checkpoint, self.force, "checkpoint")
        if o.metrics is not None and not self._owns(o.metrics):
            check_output(o.metrics, self.force, o.kind)

    def _owns(self, path: Path) -> bool:
        """Whether the metric file at `path` is this command's unfinished pair's: its owner is
        this command and the checkpoint that completes the pair is not there. A metric file that
        is the whole result (a probe without --keep) is nobody's to replace without --force."""
        pair = self.outputs.checkpoint
        return (
            pair is not None
            and not os.path.lexists(pair)
            and os.path.lexists(path)
            and metric_owner(path) == self.owner
        )

    def open_tracker(self, options: TrainOptions, *args: Any, **kw: Any) -> None:
        """Live TensorBoard scalars (`plc.tracking.open_tracker`) on rank 0, closed on exit."""
        tracker = open_tracker(options.tensorboard, *args, **kw) if rank() == 0 else None
        if tracker is not None:
            self.tracker = self._stack.enter_context(tracker)

    def step_hook(
        self, on_step: Callable[[StepRow, int], None] | None, track: bool = True
    ) -> Callable[[StepRow, int], None]:
        """The loop's on_step: the tracker (if `track`), then the caller's."""
        tracker = self.tracker if track else None

        def hook(row: StepRow, total: int) -> None:
            if tracker is not None:
                tracker.step(row)
            if on_step is not None:
                on_step(row, total)

        return hook

    def loop(
        self,
        model: LanguageModel,
        sampler: Sampler,
        options: TrainOptions,
        *,
        runtime: Runtime,
        state: Path,
        signature: dict[str, Any],
        **kw: Any,
    ) -> LoopResult:
        """plc.train.train_loop with this run's resumable state and signals."""
        from plc.train import train_loop  # looked up per call: a test stands in for the loop

        return train_loop(
            model,
            sampler,
            options,
            runtime=runtime,
            state_path=state,
            signature=signature,
            interrupts=self.interrupts,
            **kw,
        )

    def write_metrics(self, frame: pl.DataFrame) -> None:
        """The metric file, in place of this command's own earlier one (or with --force)."""
        path = self.outputs.metrics
        if path is not None:
            write_metrics(path, frame, force=self.force or self._owns(path), owner=self.owner)

    def save_progress(self, frame: pl.DataFrame) -> None:
        """Rank 0: the rows saved so far, under the metric file's `progress_path` (what `plc
        status` reads of a task in progress), never under its final name."""
        path = self.outputs.metrics
        if path is not None and rank() == 0:
            write_metrics(progress_path(path), frame, force=True)

    def commit(self, frame: pl.DataFrame | None, checkpoint: Checkpoint | None) -> None:
        """Rank 0: the metric file, then the checkpoint, then the resumable state and the saved
        progress go."""
        if rank() != 0:
            return
        if frame is not None:
            self.write_metrics(frame)
        if checkpoint is not None and self.outputs.checkpoint is not None:
            save_checkpoint(self.outputs.checkpoint, checkpoint, force=self.force)
        for state in self.outputs.states:
            state.unlink(missing_ok=True)
        if self.outputs.metrics is not None:
            progress_path(self.outputs.metrics).unlink(missing_ok=True)
