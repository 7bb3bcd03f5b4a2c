"""Correlates of plasticity loss inside the network (§V-B, Appendix C): `plc diagnose`.

- `param_abs_mean`: mean |θ| over every non-embedding parameter, pooled (not per layer first).
- dormant MLP units (eq. 3–4): h̄ = mean |post-GeLU activation| of each unit over the first
  `dormant_seqs` evaluation windows, s = h̄ / (its layer's mean h̄); dormant if s ≤ ε.
- attention entropy (eq. 5): per head, −Σ p ln p averaged over the first `entropy_seqs` windows and
  query positions q_from…L (1-based, inclusive; a query at position q sees q keys); H_max is the
  mean of ln q over the same positions; lazy above 0.9·H_max, collapsed below 0.1·H_max.
- sink tokens (`plc init --sink-tokens K`): only real tokens are measured. Activations at the K
  sink positions are left out of every MLP statistic; entropy is taken over real query positions,
  each of whose distributions spans the K sink keys as well (a sink is a key that can take
  attention mass), so a query at real position q sees q + K keys and H_max is the mean of
  ln(q + K).
- beyond the paper: effective rank (exp of the entropy of the normalised singular values, Roy &
  Vetterli 2007), stable rank (Σσ² / σ_max²) and mean L2 norm of each layer's post-GeLU features
  over the dormant windows.

Each data set is read in one pass; all parts of that pass hook into the same forward. Memory stays
bounded at long contexts: an attention layer's probabilities are reduced to per-head entropy sums
inside the hook and freed before the next layer, and batches with that hook are sized so that one
layer's B×H×T×T tensor stays under ATTN_BATCH_BYTES.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc.errors import PlcError
from plc.presets import get_preset
from plc.protocol import ENTROPY_LANG, PROBE_LANG
from plc.runtime import setup
from plc.store import check_output, load_checkpoint, metric_frame, metric_path, write_metrics
from plc.tracking import open_tracker

if TYPE_CHECKING:
    import torch

    from plc.model import GPT

ATTN_BATCH_BYTES = 1 << 27  # one layer's fp32 attention probabilities per batch (128 MiB)
QUERY_ROW_CHUNK = 256  # query rows reduced at a time inside the hook (bounds the p·ln p temporary)
TOKEN_CHUNK = 4096  # MLP activation rows reduced at a time inside the hook
LAZY_FRACTION, COLLAPSED_FRACTION = 0.9, 0.1

Progress = Callable[[int, int], None]


def h_max(q_from: int, q_to: int) -> float:
    """Mean of ln q for q = q_from…q_to: the largest possible mean entropy over those queries (eq. 5)."""
    if not 1 <= q_from <= q_to:
        raise PlcError(f"query positions must satisfy 1 ≤ from ≤ to, got {q_from}…{q_to}")
    return (math.lgamma(q_to + 1) - math.lgamma(q_from)) / (q_to - q_from + 1)


def param_abs_mean(model: GPT) -> float:
    """Mean |θ| over all parameters except the token and position tables (the tied head included)."""
    total, count = 0.0, 0
    embeddings = {id(model.transformer.wte.weight), id(model.transformer.wpe.weight)}
    for p in model.parameters():
        if id(p) not in embeddings:
            total += p.detach().double().abs().sum().item()
            count += p.numel()
    return total / count


def dormant_scores(mean_abs: torch.Tensor) -> torch.Tensor:
    """Eq. 4: each unit's mean |activation| over its layer's mean (rows = layers); 0 for a dead layer."""
    import torch

    layer_mean = mean_abs.mean(dim=-1, keepdim=True)
    return torch.where(layer_mean > 0, mean_abs / layer_mean, torch.zeros_like(mean_abs))


def unit_mean_abs(model: GPT, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """h̄ of eq. 3 for every MLP unit, (layers, units) fp64 on the model's device: mean |post-GeLU
    activation| over the real tokens of the token-id batches, accumulated as `plc diagnose` does
    (ReDo in plc.mitigations scores units with this and `dormant_scores`)."""
    import torch

    stats = _MLPStats(model, ranks=False)
    stats.active = True
    try:
        with torch.no_grad():
            for x in batches:
                model.hidden(x)
    finally:
        stats.remove()
    return stats.abs_sum / stats.tokens


def rank_metrics(gram: torch.Tensor) -> tuple[float, float]:
    """Effective and stable rank of a feature matrix F from its Gram matrix FᵀF."""
    import torch

    lam = torch.linalg.eigvalsh(gram.double())
    if lam.max() <= 0:
        return 0.0, 0.0
    # Eigenvalues within rounding of zero (as in matrix_rank) are null directions, not features.
    lam = torch.where(lam > lam.max() * lam.numel() * torch.finfo(lam.dtype).eps, lam, 0.0)
    sigma = lam.sqrt()
    p = sigma / sigma.sum()
    effective = math.exp(-float(torch.special.xlogy(p, p).sum()))
    return effective, float(lam.sum() / lam.max())


class _MLPStats:
    """Forward hooks on every `mlp.act`: per-unit Σ|h|, the Gram matrix Σ hᵀh and Σ‖h‖ per layer."""

    def __init__(self, model: GPT, ranks: bool):
        import torch

        n_layer, n_units = model.config.n_layer, 4 * model.config.d_model
        dev = next(model.parameters()).device
        self.active, self.tokens, self.ranks = False, 0, ranks
        self.n_sink = model.n_sink
        self.abs_sum = torch.zeros(n_layer, n_units, dtype=torch.float64, device=dev)
        self.norm_sum = torch.zeros(n_layer, dtype=torch.float64, device=dev)
        self.gram = (
            torch.zeros(n_layer, n_units, n_units, dtype=torch.float64, device=dev)
            if ranks
            else None
        )
        self.handles = [
            block.mlp.act.register_forward_hook(self._hook(i))
            for i, block in enumerate(model.transformer.h)
        ]

    def _hook(self, layer: int):
        def hook(module, inputs, out: torch.Tensor) -> None:
            if not self.active:
                return
            h = out[:, self.n_sink :].flatten(0, 1)  # (real tokens, units)
            if layer == 0:
                self.tokens += h.shape[0]
            # A slice of tokens at a time: the temporaries (|h|, the fp64 copy) stay small.
            for s in range(0, h.shape[0], TOKEN_CHUNK):
                hc = h[s : s + TOKEN_CHUNK].float()
                self.abs_sum[layer] += hc.abs().sum(dim=0).double()
                self.norm_sum[layer] += hc.norm(dim=1).sum().double()
                if self.gram is not None:
                    # fp64: the ranks take square roots of the eigenvalues, which would lift fp32
                    # rounding (1e-7·λ_max) into singular values of 3e-4·σ_max on null directions.
                    hd = hc.double()
                    self.gram[layer] += hd.t() @ hd

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class _EntropyStats:
    """The attention-probabilities hook: per-head sums of −Σ p ln p over queries q_from…T."""

    def __init__(self, model: GPT, q_from: int):
        import torch

        c = model.config
        dev = next(model.parameters()).device
        self.q_from, self.rows, self.n_sink = q_from, 0, model.n_sink
        self.sums = torch.zeros(c.n_layer, c.n_head, dtype=torch.float64, device=dev)

    def __call__(self, layer: int, probs: torch.Tensor) -> None:
        import torch

        B, H, T, _ = probs.shape  # T counts the sink positions first
        if layer == 0:
            self.rows += B * (T - self.n_sink - self.q_from + 1)
        for s in range(self.n_sink + self.q_from - 1, T, QUERY_ROW_CHUNK):
            p = probs[:, :, s : s + QUERY_ROW_CHUNK].float()
            ent = -torch.special.xlogy(p, p).sum(dim=-1)  # (B, H, rows)
            self.sums[layer] += ent.sum(dim=(0, 2)).double()

    def mean(self) -> torch.Tensor:
        return self.sums / self.rows


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


def _spans(n: int, mlp_n: int, ent_n: int, attn_batch: int, plain_batch: int):
    """Batches [s, e) over n windows; none straddles the end of a part, and while the attention
    hook is on (s < ent_n) a batch holds at most attn_batch windows."""
    s = 0
    while s < n:
        size = attn_batch if s < ent_n else plain_batch
        e = min([s + size, n] + [b for b in (mlp_n, ent_n) if b > s])
        yield s, e
        s = e


def diagnose(
    ckpt_path: str | os.PathLike,
    *,
    data: str | os.PathLike = "data",
    metrics: str | os.PathLike = "metrics",
    preset: str | None = None,
    params: bool = True,
    dormant: bool = True,
    entropy: bool = True,
    ranks: bool = True,
    dormant_lang: str = PROBE_LANG,
    dormant_seqs: int | None = None,
    eps: float = 0.01,
    entropy_lang: str = ENTROPY_LANG,
    entropy_seqs: int | None = None,
    seq_len: int | None = None,
    query_from: int | None = None,
    eval_seed: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    tensorboard: str | os.PathLike | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> DiagnoseResult:
    """`plc diagnose`: the correlates of one checkpoint, written as one long-format metric file.

    Sequence counts default to `preset`'s (else the checkpoint's preset's; paper: 256 and 512).
    Per-unit dormancy scores (and mean |activation|) go to a Zarr group beside the Parquet file.
    Entropy queries run from `query_from` (1-based; default the preset's fraction of the sequence
    length, the paper's 256 of 2,048) to the sequence length. The windows of each language are
    drawn as eval and probe draw theirs (with `eval_seed`, default the run's seed); a language
    used for both parts gives its first windows to the smaller count.
    """
    import torch

    from plc.evaluate import default_batch, load_eval_windows

    if not (params or dormant or entropy or ranks):
        raise PlcError("nothing to measure: every part is switched off")
    ckpt = load_checkpoint(ckpt_path)
    p = get_preset(preset or ckpt.preset or "paper")
    dormant_seqs = p.dormant_seqs if dormant_seqs is None else dormant_seqs
    entropy_seqs = p.entropy_seqs if entropy_seqs is None else entropy_seqs
    mlp_part = dormant or ranks
    if mlp_part and dormant_seqs <= 0:
        raise PlcError(f"--dormant-seqs must be positive, got {dormant_seqs}")
    if entropy and entropy_seqs <= 0:
        raise PlcError(f"--entropy-seqs must be positive, got {entropy_seqs}")
    if dormant and not 0 <= eps < 1:
        raise PlcError(f"--eps must be in [0, 1), got {eps}")
    if batch_size is not None and batch_size <= 0:
        raise PlcError(f"--batch-size must be positive, got {batch_size}")

    L = ckpt.config.context if seq_len is None else seq_len
    if L <= 0:
        raise PlcError(f"--seq-len must be positive, got {L}")
    if L > ckpt.config.context:
        raise PlcError(
            f"query window up to position {L} is longer than the checkpoint's context "
            f"{ckpt.config.context}"
        )
    q_from = max(1, round(p.entropy_query_start * L)) if query_from is None else query_from
    if entropy and not 1 <= q_from <= L:
        raise PlcError(f"--query-from must be between 1 and the sequence length {L}, got {q_from}")

    ctx = ckpt.row_context()
    out = check_output(
        metric_path(
            metrics, "diagnose", ctx["run_id"], ctx["task_index"], ctx["lang"], None, ckpt.method
        ),
        force,
    )
    units_out = check_output(out.with_name(out.stem + "-units.zarr"), force) if dormant else None

    # Load (and check) every data set before any work, so bad input fails in a second.
    needs: dict[str, tuple[int, str]] = {}
    if mlp_part:
        needs[dormant_lang] = (dormant_seqs, "--dormant-seqs")
    if entropy and entropy_seqs > needs.get(entropy_lang, (0, ""))[0]:
        needs[entropy_lang] = (entropy_seqs, "--entropy-seqs")
    drawn = {
        lang: load_eval_windows(ckpt, data, lang, n, L, flag, eval_seed)
        for lang, (n, flag) in needs.items()
    }
    windows = {lang: ev.windows for lang, ev in drawn.items()}

    tracker = open_tracker(tensorboard, ctx["run_id"], ctx["task_index"], "diagnose")
    runtime = setup(device, threads)
    model = ckpt.build_model(runtime.device).eval()
    res = DiagnoseResult(
        str(ckpt_path), str(out), None, ctx["run_id"], ctx["size"], ctx["task_index"], L, 0.0
    )
    res.eval_seed = next(iter(drawn.values())).seed if drawn else None
    res.window_starts = {lang: ev.starts.tolist() for lang, ev in drawn.items()}
    t0 = time.perf_counter()
    if params:
        res.param_abs_mean = param_abs_mean(model)

    mlp = _MLPStats(model, ranks) if mlp_part else None
    ent = _EntropyStats(model, q_from) if entropy else None
    c = ckpt.config
    attn_batch = max(1, ATTN_BATCH_BYTES // (4 * c.n_head * L * L))
    plain_batch = batch_size or default_batch(L)
    attn_batch = min(attn_batch, plain_batch)
    total = sum(w.shape[0] for w in windows.values())
    done = 0
    # Measurements, not training: full fp32 (no autocast, no TF32) so CPU and GPU agree and the
    # Gram matrices keep the small singular values the ranks depend on. Restored afterwards: a
    # notebook may train next.
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            for lang, win in windows.items():
                mlp_n = dormant_seqs if mlp_part and lang == dormant_lang else 0
                ent_n = entropy_seqs if entropy and lang == entropy_lang else 0
                for s, e in _spans(win.shape[0], mlp_n, ent_n, attn_batch, plain_batch):
                    if mlp is not None:
                        mlp.active = s < mlp_n
                    model.set_probs_hook(ent if s < ent_n else None)
                    model.hidden(torch.from_numpy(win[s:e, :L]).to(runtime.device))
                    done += e - s
                    if progress:
                        progress(done, total)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        model.set_probs_hook(None)
        if mlp is not None:
            mlp.remove()

    if mlp is not None:
        res.dormant_lang, res.dormant_seqs = dormant_lang, dormant_seqs
        mean_abs = (mlp.abs_sum / mlp.tokens).cpu()
        if dormant:
            scores = dormant_scores(mean_abs)
            is_dormant = scores <= eps
            res.eps = eps
            res.dormant_pct_per_layer = (100.0 * is_dormant.double().mean(dim=1)).tolist()
            res.dormant_pct = 100.0 * float(is_dormant.double().mean())
            res.units_path = str(_write_units(units_out, mean_abs, scores, ctx, res, force))
        if ranks:
            pairs = [rank_metrics(g) for g in mlp.gram.cpu()]
            res.effective_rank = [p[0] for p in pairs]
            res.stable_rank = [p[1] for p in pairs]
            res.feature_norm = (mlp.norm_sum / mlp.tokens).cpu().tolist()
    if ent is not None:
        res.entropy_lang, res.entropy_seqs, res.query_from = entropy_lang, entropy_seqs, q_from
        mean_ent = ent.mean().cpu()
        K = ckpt.config.sink_tokens
        res.h_max = h_max(q_from + K, L + K)
        res.entropy = mean_ent.tolist()
        res.lazy_pct = 100.0 * float((mean_ent > LAZY_FRACTION * res.h_max).double().mean())
        res.collapsed_pct = 100.0 * float(
            (mean_ent < COLLAPSED_FRACTION * res.h_max).double().mean()
        )
    res.seconds = time.perf_counter() - t0
    method = ckpt.method
    rows = [
        {"kind": "diagnose", **ctx, **r, "method": method, "eval_seed": res.eval_seed}
        for r in _rows(res)
    ]
    write_metrics(out, metric_frame("diagnose", rows), force=force)
    if tracker is not None:
        with tracker:
            tracker.diagnose(rows)
    return res


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
    return rows


def _write_units(
    path: Path,
    mean_abs: torch.Tensor,
    scores: torch.Tensor,
    ctx: dict[str, Any],
    res: DiagnoseResult,
    force: bool,
) -> Path:
    """Per-unit arrays (layer × unit) as a Zarr group, renamed into place only when complete."""
    import zarr

    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(tmp, mode="w")
    group.create_array("mean_abs_activation", data=mean_abs.numpy())
    group.create_array("dormant_score", data=scores.float().numpy())
    group.attrs.update(
        {
            "kind": "diagnose-units",
            **ctx,
            "dormant_lang": res.dormant_lang,
            "dormant_seqs": res.dormant_seqs,
            "seq_len": res.seq_len,
            "eps": res.eps,
        }
    )
    if path.exists() and force:
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path
