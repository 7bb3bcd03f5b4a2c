"""`plc diagnose`: the correlates of plasticity loss of one checkpoint (§V-B, Appendix C), written
as one long-format metric file, a per-unit Zarr store beside it, and optionally TensorBoard.

What is measured and how is plc.measures (the remedies use the same functions); this module
reads the checkpoint and the evaluation windows, and writes the files. The pair is written in
commit order: the units store first, the metric file (a plan's target) last; a units store
without its metric file is what an interrupted diagnose left, and a rerun replaces it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc.data.sampling import eval_slots
from plc.data.tokenstore import open_lang
from plc.errors import PlcError
from plc.measures import (
    Measured,
    Part,
    dormant_fraction,
    dormant_scores,
    h_max,
    head_states,
    init_distance,
    measure,
    param_abs_mean,
    perturbation_sensitivity,
)
from plc.options import DiagnoseOptions
from plc.runtime import setup
from plc.store import (
    check_output,
    is_output,
    load_checkpoint,
    metric_frame,
    metric_path,
    write_metrics,
)
from plc.tracking import open_tracker

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int], None]
UNITS_KIND = "diagnose-units"


@dataclass
class DiagnoseResult:
    checkpoint: str
    metrics_path: str
    units_path: str | None
    run_id: str
    size: str
    task_index: int
    seq_len: int
    seconds: float
    eval_seed: int | None = None
    window_starts: dict[str, list[int]] | None = None  # per language, positions in its val split
    param_abs_mean: float | None = None
    dormant_lang: str | None = None
    dormant_seqs: int | None = None
    eps: float | None = None
    dormant_pct: float | None = None
    dormant_pct_per_layer: list[float] | None = None
    entropy_lang: str | None = None
    entropy_seqs: int | None = None
    query_from: int | None = None
    h_max: float | None = None
    entropy: list[list[float]] | None = None  # [layer][head], nats
    lazy_pct: float | None = None
    collapsed_pct: float | None = None
    effective_rank: list[float] | None = None
    stable_rank: list[float] | None = None
    feature_norm: list[float] | None = None
    last_hidden_norm: float | None = None  # on the dormant windows
    last_hidden_var: float | None = None
    init_distance: float | None = None  # ‖θ − θ₀‖₂
    theta0: str | None = None  # where θ₀ came from
    perturb_sigma: float | None = None
    perturb_lang: str | None = None  # the windows it is measured on: the last task's language
    perturb_loss: float | None = None  # L(θ) on the dormant windows
    perturb_loss_increase: float | None = None  # mean over the draws of L(θ + σε) − L(θ)
    perturb_draws: list[float] | None = None  # each draw's increase


def units_path_for(metrics_file: Path) -> Path:
    """The per-unit store beside a diagnose metric file."""
    return metrics_file.with_name(metrics_file.stem + "-units.zarr")


def diagnose(
    ckpt_path: str | os.PathLike,
    options: DiagnoseOptions | None = None,
    *,
    data: str | os.PathLike = "data",
    metrics: str | os.PathLike = "metrics",
    force: bool = False,
    progress: Progress | None = None,
    **overrides: Any,
) -> DiagnoseResult:
    """`plc diagnose`: the correlates of one checkpoint, written as one long-format metric file.

    `options` (or DiagnoseOptions fields as keyword arguments, e.g. `preset="cpu",
    entropy=False`) say what to measure and on which windows. Sequence counts default to the
    preset's (else the checkpoint's preset's; paper: 256 and 512). Per-unit dormancy scores (and
    mean |activation|) go to a Zarr group beside the Parquet file. Entropy queries run from
    `query_from` (1-based; default the preset's fraction of the sequence length, the paper's 256
    of 2,048) to the sequence length. The windows of each language are drawn as eval and probe
    draw theirs (with `eval_seed`, default the run's seed); a language used for both parts gives
    its first windows to the smaller count.
    """
    from plc.evaluate import default_batch, load_eval_windows

    ckpt = load_checkpoint(ckpt_path, finite=True)
    o = replace(options or DiagnoseOptions(), **overrides)
    o = o.resolve(preset=ckpt.preset, context=ckpt.config.context, last_lang=ckpt.last_lang)
    ctx = ckpt.row_context()
    out = metric_path(
        metrics, "diagnose", ctx["run_id"], ctx["task_index"], ctx["lang"], None, ckpt.method
    )
    check_output(out, force, "diagnose")
    units_out = units_path_for(out) if o.dormant else None
    replace_units = units_out is not None and os.path.lexists(units_out)
    # A units store without its metric file is an unfinished diagnose's: the rerun completes it.
    if replace_units and (os.path.lexists(out) or not is_output(units_out, UNITS_KIND)):
        check_output(units_out, force, UNITS_KIND)

    # Load (and check) every data set before any work, so bad input fails in a second.
    units = Part(o.dormant_lang, o.dormant_seqs) if o.units else None
    features = Part(o.dormant_lang, o.dormant_seqs) if o.features else None
    entropy = Part(o.entropy_lang, o.entropy_seqs) if o.entropy else None
    needs: dict[str, tuple[int, str]] = {}
    for wanted, lang, n, flag in (
        (o.dormant_windows, o.dormant_lang, o.dormant_seqs, "--dormant-seqs"),
        (o.entropy, o.entropy_lang, o.entropy_seqs, "--entropy-seqs"),
    ):
        if wanted and n > needs.get(lang, (0, ""))[0]:
            needs[lang] = (n, flag)
    if o.perturb and o.perturb_lang not in needs:
        # The last task's store may hold fewer val windows than the probe language's (the
        # embedded corpus's ru: 29 of 65 tokens): the perturbation takes up to --dormant-seqs.
        seed = int(ckpt.meta.get("seed", 0)) if o.eval_seed is None else o.eval_seed
        val = int(open_lang(data, o.perturb_lang).val.shape[0])
        room = eval_slots(val, o.seq_len, seed)[1].size
        needs[o.perturb_lang] = (max(1, min(o.dormant_seqs, room)), "--dormant-seqs")
    drawn = {
        lang: load_eval_windows(ckpt, data, lang, n, o.seq_len, flag, o.eval_seed)
        for lang, (n, flag) in needs.items()
    }

    theta0 = None
    if o.distance:
        from plc.mitigations import initial_state  # θ₀ rebuilt and checked as L2-init does

        theta0 = initial_state(ckpt)
    tracker = open_tracker(o.tensorboard, ctx["run_id"], ctx["task_index"], "diagnose")
    runtime = setup(o.device)
    model = ckpt.build_model(runtime.device).eval()
    res = DiagnoseResult(
        str(ckpt_path),
        str(out),
        None,
        ctx["run_id"],
        ctx["size"],
        ctx["task_index"],
        o.seq_len,
        0.0,
    )
    res.eval_seed = next(iter(drawn.values())).seed if drawn else None
    res.window_starts = {lang: ev.starts.tolist() for lang, ev in drawn.items()}
    t0 = time.perf_counter()
    batch = o.batch_size or default_batch(o.seq_len)
    if o.params:
        res.param_abs_mean = param_abs_mean(model)
    if theta0 is not None:
        res.init_distance, res.theta0 = init_distance(model, theta0.state), theta0.source
    got = measure(
        model,
        {lang: ev.windows for lang, ev in drawn.items()},
        seq_len=o.seq_len,
        units=units,
        ranks=o.ranks,
        entropy=entropy,
        query_from=o.query_from,
        batch_size=batch,
        progress=progress,
        features=features,
    )
    if o.perturb:
        windows = drawn[o.perturb_lang].windows[: o.dormant_seqs]
        clean, increase = perturbation_sensitivity(
            model,
            windows,
            sigma=o.perturb_sigma,
            draws=o.perturb_draws,
            seed=res.eval_seed,
            seq_len=o.seq_len,
            batch_size=batch,
        )
        res.perturb_sigma, res.perturb_loss, res.perturb_draws = o.perturb_sigma, clean, increase
        res.perturb_lang = o.perturb_lang
        res.perturb_loss_increase = sum(increase) / len(increase)
    scores = _summarise(res, got, o, ckpt.config.sink_tokens)
    res.seconds = time.perf_counter() - t0
    rows = [
        {"kind": "diagnose", **ctx, **r, "method": ckpt.method, "eval_seed": res.eval_seed}
        for r in _rows(res)
    ]
    if units_out is not None:
        res.units_path = str(_write_units(units_out, got.mean_abs, scores, ctx, res, replace_units))
    write_metrics(out, metric_frame("diagnose", rows), force=force)
    if tracker is not None:
        with tracker:
            tracker.diagnose(rows)
    return res


def _summarise(
    res: DiagnoseResult, got: Measured, o: DiagnoseOptions, sinks: int
) -> torch.Tensor | None:
    """The result's numbers from what the pass measured; the dormancy scores (None without)."""
    scores = None
    if got.mean_abs is not None:
        res.dormant_lang, res.dormant_seqs = o.dormant_lang, o.dormant_seqs
        if o.dormant:
            scores = dormant_scores(got.mean_abs)
            res.eps = o.eps
            res.dormant_pct, res.dormant_pct_per_layer = dormant_fraction(scores, o.eps)
        res.effective_rank, res.stable_rank = got.effective_rank, got.stable_rank
        res.feature_norm = got.feature_norm
    if got.last_hidden_norm is not None:
        res.dormant_lang, res.dormant_seqs = o.dormant_lang, o.dormant_seqs
        res.last_hidden_norm, res.last_hidden_var = got.last_hidden_norm, got.last_hidden_var
    if got.entropy is not None:
        res.entropy_lang, res.entropy_seqs = o.entropy_lang, o.entropy_seqs
        res.query_from = o.query_from
        res.h_max = h_max(o.query_from + sinks, o.seq_len + sinks)
        res.entropy = got.entropy.tolist()
        res.lazy_pct, res.collapsed_pct = head_states(got.entropy, res.h_max)
    _require_finite(res)
    return scores


def _require_finite(res: DiagnoseResult) -> None:
    """A correlate that is not a number is no result: one line instead of a NaN in the study."""
    import math

    for row in _rows(res):
        if not math.isfinite(row["value"]):
            where = "" if row["layer"] is None else f" (layer {row['layer']})"
            raise PlcError(
                f"{res.checkpoint}: {row['metric']}{where} is {row['value']}; nothing written "
                "(the model's activations overflow on these windows)"
            )


def _rows(res: DiagnoseResult) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(metric: str, value: float, layer: int | None = None, head: int | None = None) -> None:
        rows.append({"metric": metric, "layer": layer, "head": head, "value": float(value)})

    if res.param_abs_mean is not None:
        add("param_abs_mean", res.param_abs_mean)
    if res.dormant_pct is not None:
        for i, v in enumerate(res.dormant_pct_per_layer):
            add("dormant_pct", v, i)
        add("dormant_pct", res.dormant_pct)
    if res.entropy is not None:
        for i, heads in enumerate(res.entropy):
            for h, v in enumerate(heads):
                add("entropy", v, i, h)
        add("h_max", res.h_max)
        add("lazy_pct", res.lazy_pct)
        add("collapsed_pct", res.collapsed_pct)
    if res.effective_rank is not None:
        for metric, values in (
            ("effective_rank", res.effective_rank),
            ("stable_rank", res.stable_rank),
            ("feature_norm", res.feature_norm),
        ):
            for i, v in enumerate(values):
                add(metric, v, i)
    if res.last_hidden_norm is not None:
        add("last_hidden_norm", res.last_hidden_norm)
        add("last_hidden_var", res.last_hidden_var)
    if res.init_distance is not None:
        add("init_distance", res.init_distance)
    if res.perturb_loss_increase is not None:
        add("perturb_loss_increase", res.perturb_loss_increase)
        add("perturb_sigma", res.perturb_sigma)
    return rows


def _write_units(
    path: Path,
    mean_abs: torch.Tensor,
    scores: torch.Tensor,
    ctx: dict[str, Any],
    res: DiagnoseResult,
    replace_existing: bool,
) -> Path:
    """Per-unit arrays (layer × unit) as a Zarr group, renamed into place only when complete: in
    place of the store found there at the start (checked to be replaceable), else only to a free
    name."""
    import zarr

    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(tmp, mode="w")
    group.create_array("mean_abs_activation", data=mean_abs.numpy())
    group.create_array("dormant_score", data=scores.float().numpy())
    group.attrs.update(
        {
            "kind": UNITS_KIND,
            **ctx,
            "dormant_lang": res.dormant_lang,
            "dormant_seqs": res.dormant_seqs,
            "seq_len": res.seq_len,
            "eps": res.eps,
        }
    )
    if replace_existing and os.path.lexists(path):
        shutil.rmtree(path)
    try:
        os.rename(tmp, path)  # onto a folder that is not empty: refused
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.lexists(path):
            raise
        raise PlcError(
            f"{path} was written by another process while this one ran; it is kept: write "
            "elsewhere, or pass --force to replace it"
        ) from None
    return path
