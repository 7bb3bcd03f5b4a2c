"""The plasticity probe (§IV-A, §V-A, App. B): `plc probe`.

A copy of the checkpoint is trained on the probe language by the one training loop
(plc.train.train_loop: fresh AdamW, warm-up restarted, the train-task schedule) while its validation
loss on the fixed evaluation windows is measured every `eval_every` steps, at step 0 and after the
last step. The AUC summarises that curve; the input checkpoint is only read, the trained copy is
dropped unless `keep` names a file for it (written after the metric file: plc.taskrun's
commit order; set-up, lock, resume and signals are its skeleton too). `from_scratch` probes a fresh initialisation of the
same config and seed instead: the "probe language alone" baseline of Appendix B.

Every probe of a run trains on the same batches (the sampler stream of task index 0, which no
continual task uses, drawn with the probe seed — by default the run's), so AUC differences between
checkpoints are not sampling noise. `repeats` probes the same checkpoint with several probe seeds
(several batch streams) on the same evaluation windows: their spread is the probe's own noise.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc.errors import PlcError
from plc.init import build_model
from plc.options import TrainOptions
from plc.presets import get_preset
from plc.protocol import PROBE_LANG
from plc.store import Checkpoint, metric_frame, metric_path
from plc.taskrun import (
    TaskOutputs,
    TaskRun,
    advance,
    load_and_resolve,
    mitigations_for,
    owner_of,
    resume_signature,
    start,
    state_path_for,
)

if TYPE_CHECKING:
    from plc.evaluate import EvalWindows
    from plc.train import LoopResult

PROBE_STREAM = 0  # BatchSampler task index of every probe's training batches


def auc(steps: Sequence[float], losses: Sequence[float]) -> float:
    """Trapezoidal area under loss vs probe step, divided by the steps spanned.

    Rescaling the step axis to [0, 1] keeps the AUC in nats (the scale of Table III) and comparable
    between probes of different lengths; ratios such as AUC_k / AUC_1 (eq. 1) are unchanged.
    """
    if len(steps) != len(losses) or len(steps) < 2:
        raise ValueError("an AUC needs at least two (step, loss) points")
    area = sum(
        (steps[i + 1] - steps[i]) * (losses[i] + losses[i + 1]) / 2 for i in range(len(steps) - 1)
    )
    return area / (steps[-1] - steps[0])


@dataclass
class ProbeResult:
    metrics_path: str
    run_id: str
    task_index: int  # of the probed model (0 for --from-scratch)
    probe_lang: str
    from_scratch: bool
    steps: int
    eval_every: int
    eval_seqs: int
    eval_seed: int
    seq_len: int
    batch_tokens: int
    lr: float
    warmup_steps: int
    auc: float  # mean over the repeats
    auc_sd: float  # sample SD over the repeats (0 for one)
    final_val_loss: float  # of the first repeat
    tokens_per_s: float  # median training throughput
    seconds: float
    resumed_from: int
    kept: str | None
    entropy_rate: float | None  # the probe store's loss floor (markov: sources)
    final_excess_loss: float | None  # final_val_loss above that floor
    curve: list[dict[str, float]] = field(
        default_factory=list
    )  # first repeat: {"step", "val_loss"}
    repeats: list[dict[str, float]] = field(default_factory=list)  # probe_seed, auc, final_val_loss
    window_starts: list[int] = field(default_factory=list)


@dataclass
class _Repeat:
    """What the result needs of one probe seed's training: its curve and AUC, its throughput,
    and the trained weights where --keep writes them. Not the model or the optimizer: at 314M
    they are ≈ 6 GB a repeat, and each repeat trains a fresh copy."""

    seed: int
    curve: list[dict[str, float]]
    auc: float
    tokens_per_s: float
    seconds: float
    resumed_from: int
    weights: dict[str, Any] | None = None

    @classmethod
    def of(cls, seed: int, loop: LoopResult, model: Any, keep: bool) -> _Repeat:
        curve = [{"step": int(e["step"]), "val_loss": float(e["value"])} for e in loop.evals]
        area = auc([c["step"] for c in curve], [c["val_loss"] for c in curve])
        weights = loop.weights(model) if keep else None
        return cls(seed, curve, area, loop.tokens_per_s, loop.seconds, loop.resumed_from, weights)


def _cadence(
    opts: TrainOptions,
    eval_every: int | None,
    eval_seqs: int | None,
    repeats: int,
    probe_seed: int | None,
    keep: str | os.PathLike | None,
) -> tuple[int, int]:
    """(eval_every, eval_seqs) from the preset where not given; the probe's own flags checked."""
    p = get_preset(opts.preset)
    if eval_every is None:
        eval_every = p.probe_eval_every_for(opts.steps)
    eval_seqs = p.probe_eval_seqs if eval_seqs is None else eval_seqs
    for name, v in (
        ("--eval-every", eval_every),
        ("--eval-seqs", eval_seqs),
        ("--repeats", repeats),
    ):
        if v <= 0:
            raise PlcError(f"{name} must be positive, got {v}")
    if probe_seed is not None and probe_seed < 0:
        raise PlcError(f"--probe-seed must be ≥ 0, got {probe_seed}")
    if keep is not None and repeats > 1:
        raise PlcError("--keep keeps one trained copy: give it with --repeats 1")
    for flag, value in (("--replay", opts.replay), ("--transition", opts.transition)):
        if value is not None:
            raise PlcError(f"{flag} is train-task's: a probe trains on the probe language alone")
    return eval_every, eval_seqs


def _probe_rows(
    ctx: dict[str, Any],
    probed: Checkpoint,
    lang: str,
    from_scratch: bool,
    ev: EvalWindows,
    runs: list[_Repeat],
) -> list[dict[str, Any]]:
    return [
        {
            "kind": "probe",
            **ctx,
            "probe_lang": lang,
            "step": c["step"],
            "val_loss": c["val_loss"],
            "auc": r.auc,
            "tokens_seen": int(probed.meta.get("tokens_seen", 0)),
            "from_scratch": from_scratch,
            "probe_seed": r.seed,
            "method": probed.method,
            "eval_seed": ev.seed,
            "window_starts": ev.starts.tolist() if i == 0 else None,
            "entropy_rate": ev.store.entropy_rate,
        }
        for r in runs
        for i, c in enumerate(r.curve)
    ]


def probe(
    ckpt: str | os.PathLike,
    *,
    options: TrainOptions | None = None,
    data: str | os.PathLike = "data",
    lang: str = PROBE_LANG,
    metrics: str | os.PathLike = "metrics",
    eval_every: int | None = None,
    eval_seqs: int | None = None,
    eval_seed: int | None = None,
    repeats: int = 1,
    probe_seed: int | None = None,
    from_scratch: bool = False,
    keep: str | os.PathLike | None = None,
    force: bool = False,
    on_step: Callable[[dict, int], None] | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    **overrides: Any,
) -> ProbeResult:
    """Probe checkpoint `ckpt` on `lang` and write the curve and its AUC (one `probe` metric file).

    `options` (or TrainOptions fields as keyword arguments) set the probe's training exactly as
    for train-task, with the preset's probe budget; `seq_len` is also the evaluation windows'
    length. `eval_every` and `eval_seqs` default to the preset's probe cadence and evaluation set;
    the cadence keeps its fraction of the steps when the steps differ from the preset's. The
    windows are drawn with `eval_seed` (default: the run's seed), the probe's batches with
    `probe_seed`, `probe_seed + 1`, … for each of `repeats` (default: the run's seed); an explicit
    `probe_seed` names the metric file (`…-p<seed>`), so a plan can fan repeats out as jobs.
    With `save_every` (or `save_every_minutes`, or on SIGTERM/SIGUSR1), resumable state is kept
    beside the metric file and a rerun continues the repeat in progress (finished repeats of the
    same call run again).
    """
    from plc.data.sampling import BatchSampler
    from plc.evaluate import load_eval_windows, validation_loss

    options = replace(options or TrainOptions(), **overrides)
    src = Path(ckpt)
    base, opts = load_and_resolve(src, options, probe=True)
    eval_every, eval_seqs = _cadence(opts, eval_every, eval_seqs, repeats, probe_seed, keep)
    if from_scratch:
        # The baseline: the same shape and seed, never trained (task 0 of the same run).
        meta = {**base.meta, "task_index": 0, "tokens_seen": 0, "history": []}
        probed = Checkpoint(base.config, {}, meta)
    else:
        probed = base
    ctx = probed.row_context()
    suffix = f"{lang}-scratch" if from_scratch else lang
    if probe_seed is not None:
        suffix += f"-p{probe_seed}"
    out = metric_path(
        metrics, "probe", ctx["run_id"], ctx["task_index"], ctx["lang"], suffix, probed.method
    )
    first_seed = opts.seed if probe_seed is None else probe_seed
    seeds = list(range(first_seed, first_seed + repeats))
    if keep is not None:
        keep = Path(keep)
        if keep.resolve() == src.resolve():
            raise PlcError(f"--keep {keep} is the input checkpoint, which a probe never modifies")
    ev = load_eval_windows(base, data, lang, eval_seqs, opts.seq_len, "--eval-seqs", eval_seed)
    task = {"lang": lang, "probe": True, "from_scratch": from_scratch}
    states = [state_path_for(out.with_name(f"{out.name}.p{s}")) for s in seeds]
    call = resume_signature(
        base, opts, eval_every=eval_every, eval_seqs=eval_seqs, seeds=seeds, **task
    )
    call["keep"] = None if keep is None else keep.name

    def build():
        if from_scratch:
            return build_model(base.config, int(base.meta.get("seed", 0)))
        return base.build_model()

    with TaskRun(TaskOutputs(out, out, keep, "probe", states), owner_of(call), force) as run:
        # The first repeat's curve and the mean AUC; rank 0 only.
        run.open_tracker(
            opts,
            ctx["run_id"],
            ctx["task_index"],
            "probe",
            lang=ctx["lang"],
            probe_lang=lang,
            from_scratch=from_scratch,
        )
        runs: list[_Repeat] = []
        for seed, state in zip(seeds, states, strict=True):
            track = run.tracker if not runs else None
            runtime, model = start(opts, build)
            sampler = BatchSampler([ev.store], opts.seq_len, opts.batch_size, seed, PROBE_STREAM)

            def eval_fn(done: int, model=model, runtime=runtime, track=track) -> float:
                loss = validation_loss(model, ev.windows, runtime)
                if track is not None:
                    track.eval(done, loss)
                if on_eval is not None and runtime.is_main:
                    on_eval(done, loss)
                return loss

            seeded = replace(opts, seed=seed)
            res = run.loop(
                model,
                sampler,
                opts,
                runtime=runtime,
                state=state,
                signature=resume_signature(
                    base, seeded, eval_every=eval_every, eval_seqs=eval_seqs, **task
                ),
                eval_fn=eval_fn,
                eval_every=eval_every,
                on_step=run.step_hook(on_step, track=track is not None),
                mitigations=mitigations_for(probed, seeded, probed.task_index + 1),
            )
            runs.append(_Repeat.of(seed, res, model, keep is not None and runtime.is_main))
            del model, res, eval_fn  # the next repeat trains a fresh copy with a new optimizer

        kept = None
        if keep is not None and runtime.is_main:
            kept = Checkpoint(base.config, runs[0].weights, advance(probed.meta, opts, task))
        rows = _probe_rows(ctx, probed, lang, from_scratch, ev, runs)
        run.commit(metric_frame("probe", rows), kept)
        aucs = [r.auc for r in runs]
        if run.tracker is not None:
            run.tracker.auc(statistics.fmean(aucs))
    first, rate = runs[0], ev.store.entropy_rate
    return ProbeResult(
        metrics_path=str(out),
        run_id=ctx["run_id"],
        task_index=ctx["task_index"],
        probe_lang=lang,
        from_scratch=from_scratch,
        steps=opts.steps,
        eval_every=eval_every,
        eval_seqs=ev.windows.shape[0],
        eval_seed=ev.seed,
        seq_len=opts.seq_len,
        batch_tokens=opts.batch_tokens,
        lr=opts.lr,
        warmup_steps=opts.warmup_steps,
        auc=statistics.fmean(aucs),
        auc_sd=statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
        final_val_loss=first.curve[-1]["val_loss"],
        tokens_per_s=first.tokens_per_s,
        seconds=sum(r.seconds for r in runs),
        resumed_from=max(r.resumed_from for r in runs),
        kept=str(keep) if keep is not None else None,
        entropy_rate=rate,
        final_excess_loss=None if rate is None else first.curve[-1]["val_loss"] - rate,
        curve=first.curve,
        repeats=[
            {"probe_seed": r.seed, "auc": r.auc, "final_val_loss": r.curve[-1]["val_loss"]}
            for r in runs
        ],
        window_starts=ev.starts.tolist(),
    )
