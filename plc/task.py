"""`plc train-task`: train a checkpoint on one task instance and write the next checkpoint.

What differs from a probe: the task's data (one language or the stationary mixture), the optional
validation (App. A), the continued optimizer of `--continue`, and the pair it writes — the train
metric file, then the next checkpoint. The rest (set-up, lock, resume, signals, commit order) is
plc.taskrun's skeleton. A task that diverges writes its metric file as the record of that (status
"diverged", its last row the step that diverged) and no checkpoint.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc.errors import PlcError
from plc.options import TrainOptions
from plc.presets import get_preset
from plc.store import (
    TRAIN_STATUS,
    Checkpoint,
    check_tokenizer,
    method_label,
    metric_frame,
    metric_path,
)
from plc.taskrun import (
    TaskOutputs,
    TaskRun,
    advance,
    load_and_resolve,
    mitigations_for,
    owner_of,
    resume_signature,
    run_steps,
    start,
    state_path_for,
)
from plc.train import TrainingDiverged

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

    from plc.data.sampling import Composition
    from plc.data.tokenstore import TokenStore
    from plc.model import LanguageModel
    from plc.runtime import Runtime
    from plc.train import LoopResult, StepRow


# BatchSampler stream of a continued run's tasks (probes use 0, continual tasks their index).
CONTINUED_STREAM = 1
OK, DIVERGED = TRAIN_STATUS

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
    langs: list[str] = field(default_factory=list)  # the task's own, then replayed or left behind
    options: dict[str, Any] = field(default_factory=dict)  # the resolved TrainOptions
    notes: list[str] = field(default_factory=list)  # what the command changed about the request


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


def _task_data(
    lang: str | None, mix: str | Sequence[str] | None, weights: str | Sequence[float] | None
) -> tuple[list[str], list[float] | None, str]:
    """(languages, mixture weights, the task's label) of --lang or --mix."""
    if (lang is None) == (mix is None):
        raise PlcError("give --lang for one language or --mix for the stationary mixture")
    if mix is not None:
        return *_parse_mix(mix, weights), "mix"
    if weights is not None:
        raise PlcError("--mix-weights goes with --mix")
    return [lang], None, lang


def earlier_languages(base: Checkpoint) -> list[str]:
    """The languages of the run's earlier tasks, each once, the most recently trained last (a
    mixture's tasks and interventions are not languages)."""
    seen: list[str] = []
    for h in base.meta.get("history", []):
        lang = h.get("lang")
        if "intervention" in h or not lang or lang == "mix":
            continue
        if lang in seen:
            seen.remove(lang)
        seen.append(lang)
    return seen


def _others(
    base: Checkpoint, opts: TrainOptions, lang: str | None, first: int
) -> tuple[list[str], Composition | None, dict[str, Any], list[str]]:
    """Replay's or a transition's other languages, the batches' composition, what the history
    records of it, and a note where there is nothing to replay or move from (the task then
    trains on its own language alone)."""
    from plc.data.sampling import Composition

    if opts.replay is None and opts.transition is None:
        return [], None, {}, []
    if lang is None:
        flag = "--replay" if opts.replay is not None else "--transition"
        raise PlcError(f"{flag} goes with --lang: a mixture already holds every language")
    earlier = [x for x in earlier_languages(base) if x != lang]
    if opts.replay is not None:
        pool = earlier[-opts.replay_last :] if opts.replay_last else earlier
        if not pool:
            note = f"--replay {opts.replay:g}: no earlier task to replay; trained on {lang} alone"
            return [], None, {"replay_langs": []}, [note]
        return pool, Composition(replay=opts.replay, first=first), {"replay_langs": pool}, []
    prev = base.last_lang
    if prev in ("", "mix", lang):
        what = "no earlier task" if not prev else f"the previous task was {prev}"
        note = f"--transition {opts.transition}: {what}; switched to {lang} at once"
        return [], None, {"transition_from": None}, [note]
    mix = Composition(transition=opts.transition, first=first)
    return [prev], mix, {"transition_from": prev}, []


def _continued(base: Checkpoint, src: Path) -> dict[str, Any]:
    """--continue: the input's optimizer and schedule ({} starts a run at a fresh init)."""
    if base.optimizer is None and base.task_index > 0:
        raise PlcError(
            f"--continue: {src} carries no optimizer state (it was trained without "
            "--continue); continue from a checkpoint of a continued run or from a fresh init"
        )
    return base.optimizer or {}


def _validation_windows(
    base: Checkpoint,
    opts: TrainOptions,
    data: str | os.PathLike,
    lang: str | None,
    val_every: int | None,
    val_seqs: int | None,
) -> np.ndarray | None:
    """--val-every's windows of the task's language (None without it; `lang` None: a mixture)."""
    if val_every is None:
        if val_seqs is not None:
            raise PlcError("--val-seqs goes with --val-every")
        return None
    if val_every <= 0:
        raise PlcError(f"--val-every must be positive, got {val_every}")
    if lang is None:
        raise PlcError("--val-every validates one language: give it with --lang")
    from plc.evaluate import load_eval_windows

    n = get_preset(opts.preset).probe_eval_seqs if val_seqs is None else val_seqs
    return load_eval_windows(base, data, lang, n, opts.seq_len, "--val-seqs").windows


def _validator(
    model: LanguageModel, windows: np.ndarray | None, runtime: Runtime
) -> Callable[[int], float] | None:
    if windows is None:
        return None
    from plc.evaluate import validation_loss

    return lambda done: validation_loss(model, windows, runtime)


def _train_frame(
    context: dict[str, Any], rows: list[StepRow], evals: list[dict[str, Any]], status: str
) -> pl.DataFrame:
    """The train metric file's rows: the loop's, each with the validation measured after it."""
    measured = {e["step"] - 1: e["value"] for e in evals if e["step"] > 0}
    return metric_frame(
        "train",
        [{**context, **r, "val_loss": measured.get(r["step"]), "status": status} for r in rows],
    )


def _finish(
    result: Checkpoint, model: LanguageModel, res: LoopResult, opts: TrainOptions, continued: bool
) -> None:
    """The output checkpoint's weights and what the remedies and --continue carry to the next."""
    result.model = res.weights(model)
    result.meta.pop("mitigation_state", None)
    if res.mitigations is not None:
        result.meta["history"][-1]["mitigations"] = res.mitigations.record()
    elif opts.mitigations.label != "none":  # recipes only: the study arm is still recorded
        result.meta["history"][-1]["mitigations"] = opts.mitigations.record()
    if res.mitigations is not None:
        if opts.cbp is not None:
            result.meta["mitigation_state"] = res.mitigations.state_dict()
    if continued:
        result.optimizer = res.continued_state()


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

    `replay` (an option): a fraction r of every batch comes from the languages of the run's
    earlier tasks (each such row from one of them, uniformly; the last `replay_last` of them
    only), drawn as the stationary mixture draws its rows; `transition` K: over the task's first
    K steps the batches move from the previous task's language to this one. Their stores are read
    from `data` too. Where there is nothing to replay or move from (the run's first task), the
    task trains on its language alone and `notes` says so.

    `val_every`: validation loss on the task's own language every so many steps (and after the
    last), on `val_seqs` windows (default: the preset's probe evaluation set), in the `val_loss`
    column of the train row of the step after which it was measured (App. A's learning-rate
    search: the final loss is the mean of the last 10).

    A task whose loss, gradient or weights stop being finite raises TrainingDiverged after
    writing its metric file as the record of that: the steps up to the one that diverged,
    `status` "diverged" (FORMATS.md); no checkpoint.
    """
    from plc.data.sampling import BatchSampler
    from plc.data.tokenstore import open_lang

    options = replace(options or TrainOptions(), **overrides)
    langs, weights, label = _task_data(lang, mix, mix_weights)
    src = Path(ckpt)
    base, opts = load_and_resolve(src, options)
    if continue_run and opts.schedule in ("cosine", "wsd"):
        raise PlcError(
            f"--schedule {opts.schedule} re-warms and decays within every task; --continue runs "
            "one schedule over the run: give --schedule constant or rsqrt with it"
        )
    continued = _continued(base, src) if continue_run else None
    first = int((continued or {}).get("schedule_step", 0))
    others, composition, recorded, notes = _others(base, opts, lang, first)
    out = Path(out) if out is not None else next_checkpoint_path(src)
    if out.resolve() == src.resolve():
        raise PlcError(f"--out {out} is the input checkpoint; write the next task elsewhere")
    stores: list[TokenStore] = [open_lang(data, code) for code in [*langs, *others]]
    for store in stores:
        check_tokenizer(base, store.tokenizer, str(store.path))
    val = _validation_windows(base, opts, data, lang, val_every, val_seqs)
    task_index = base.task_index + 1
    # A continued run draws from one stream (1) at its own step; tasks draw from their index.
    stream = CONTINUED_STREAM if continue_run else task_index
    sampler = BatchSampler(
        stores, opts.seq_len, opts.batch_size, opts.seed, stream, weights, composition
    )

    task: dict[str, Any] = {"lang": label, **recorded}
    if continued is not None:
        task.update(continued=True, schedule_step=int(continued.get("schedule_step", 0)))
    if mix is not None:
        task.update(mix=langs, mix_weights=[float(w) for w in sampler.weights])
    result = Checkpoint(base.config, base.model, advance(base.meta, opts, task))
    method = method_label(opts.mitigations.label, opts.weight_decay, opts.preset)
    context = {"kind": "train", **result.row_context(), "method": method}
    metrics_file = (
        metric_path(metrics, "train", base.run_id, task_index, label, None, method)
        if metrics is not None
        else None
    )
    signature = resume_signature(base, opts, out=out.name, langs=langs, val_every=val_every, **task)
    outputs = TaskOutputs(out, metrics_file, out, "train", [state_path_for(out)])
    steps_before = run_steps(base)

    with TaskRun(outputs, owner_of(signature), force) as run:
        # Opened before any work so that a bad folder fails at once; rank 0 writes, as for files.
        run.open_tracker(
            opts, base.run_id, task_index, "train", lang=label, step_offset=steps_before
        )
        runtime, model = start(opts, lambda: base.build_model())
        try:
            res = run.loop(
                model,
                sampler,
                opts,
                runtime=runtime,
                state=outputs.states[0],
                signature=signature,
                on_step=run.step_hook(on_step),
                eval_fn=_validator(model, val, runtime),
                eval_every=val_every,
                on_save=lambda r: run.save_progress(_train_frame(context, r.rows, r.evals, OK)),
                continued=continued,
                mitigations=mitigations_for(base, opts, task_index),
                run_step=steps_before,
            )
        except TrainingDiverged as e:
            run.commit(_train_frame(context, e.rows, e.evals, DIVERGED), None)
            raise
        if runtime.is_main:
            _finish(result, model, res, opts, continue_run)
        run.commit(_train_frame(context, res.rows, res.evals, OK), result)
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
        langs=[*langs, *others],
        options=opts.record(),
        notes=notes,
    )
