"""The correlates of plasticity loss inside a network (§V-B, Appendix C), measured on a model.

Below the training loop and the commands: the remedies (plc.mitigations: ReDo scores units with
`unit_mean_abs` and `dormant_scores`) and `plc diagnose` (which reads the data and writes the
files) both use these functions. They read a model through `ModelSeam`, the small interface that
says where a model's MLP hidden units and attention probabilities are, how each parameter was
initialised and which weights make up an MLP unit; plc's GPT has one (`GPTSeam`), and a Hugging
Face causal LM is its own (plc.hf.adapter.HFModel). A new measure or remedy that reads a model
only through the seam works on every family plc supports.

- `param_abs_mean`: mean |θ| over every parameter but the token and position tables, pooled.
- dormant MLP units (eq. 3–4): h̄ = mean |hidden unit| of each unit over the real tokens,
  s = h̄ / (its layer's mean h̄); dormant if s ≤ ε.
- attention entropy (eq. 5): per head, −Σ p ln p averaged over the windows and query positions
  q_from…L (1-based, inclusive; a query at position q sees q keys); H_max is the mean of ln q over
  the same positions; lazy above 0.9·H_max, collapsed below 0.1·H_max.
- sink positions (`plc init --sink-tokens K`): only real tokens are measured. Hidden units at the
  K sink positions are left out of every MLP statistic; entropy is taken over real query
  positions, each of whose distributions spans the K sink keys as well (a sink is a key that can
  take attention mass), so a query at real position q sees q + K keys and H_max is the mean of
  ln(q + K).
- beyond the paper: effective rank (exp of the entropy of the normalised singular values, Roy &
  Vetterli 2007), stable rank (Σσ² / σ_max²) and mean L2 norm of each layer's hidden units.
- the field's newer measures (issue 33):
  - `perturbation_sensitivity` (Springer et al. 2025, "Overtrained language models are harder to
    fine-tune": a model grows more sensitive to Gaussian parameter perturbations as pretraining
    goes on): the mean over draws of L(θ + σ·ε) − L(θ), the next-token loss on the windows, with
    ε drawn like the initialisation — N(0, s_p²) for every parameter p that has an initial std s_p
    (GPT.init_stds: weights, tables, sinks), none for the constants (biases, LayerNorm) — so σ is
    in units of each layer's initial scale and one σ means the same at every size.
  - `init_distance`: ‖θ − θ₀‖₂ over every parameter, θ₀ the run's initial weights (Plasticine's
    "weight change" against the initialisation; plc.mitigations.initial_state rebuilds θ₀).
  - `HiddenStats`, the last hidden state (the final LayerNorm's output, what the head reads; HF's
    `last_hidden_state`) over the real tokens: its mean L2 norm, and the variance of each feature
    over the tokens averaged over the features (Plasticine's feature norm and feature variance).

`measure` reads each data set in one pass; every part hooks into the same forward. Memory stays
bounded at long contexts: an attention layer's probabilities are reduced to per-head entropy sums
inside the hook and freed before the next layer, and batches with that hook are sized so that one
layer's B×H×T×T tensor stays under ATTN_BATCH_BYTES.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from plc.errors import PlcError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from plc.model import GPT

ATTN_BATCH_BYTES = 1 << 27  # one layer's fp32 attention probabilities per batch (128 MiB)
QUERY_ROW_CHUNK = 256  # query rows reduced at a time inside the hook (bounds the p·ln p temporary)
TOKEN_CHUNK = 4096  # MLP activation rows reduced at a time inside the hook
LAZY_FRACTION, COLLAPSED_FRACTION = 0.9, 0.1
PERTURB_STREAM = 4243  # the perturbations' generator stream, apart from every other draw

# (layer, hidden units (B, K+T, units)) and (layer, attention probabilities (B, H, K+T, K+T)).
UnitsWatch = Callable[[int, "torch.Tensor"], None]
ProbsWatch = Callable[[int, "torch.Tensor"], None]
Progress = Callable[[int, int], None]


# ------------------------------------------------------------------------------------ the seam


@dataclass(frozen=True)
class UnitParams:
    """Where hidden unit i of one layer's MLP lives in the weights: index i along `axis` of each
    parameter named in `incoming` (the weights and biases that compute the unit; for SwiGLU both
    the gate's and the up projection's) and of `outgoing` (the weight that reads it)."""

    incoming: tuple[tuple[str, int], ...]  # (parameter name, axis of the units)
    outgoing: tuple[str, int]


# A parameter's part in the model (ModelSeam.param_kinds), which decides what each remedy does
# to it: the token and position tables and an output head; the weights and biases of the
# Linear (or Conv1D) projections; the gains and biases of the norms.
PARAM_KINDS = ("table", "weight", "bias", "norm")


@runtime_checkable
class ModelSeam(Protocol):
    """What the measures and the remedies read from a model under study.

    `n_sink` leading positions of every layer's input are not tokens (plc's sink tokens; 0 for
    other models): the hidden units and probabilities passed to watchers include them, and the
    measures drop them. A watcher sees every forward pass until its remover is called.
    Parameters are named as the model's `named_parameters` names them.
    """

    n_layer: int
    n_head: int  # attention heads of every layer
    mlp_width: int  # MLP hidden units of every layer
    n_sink: int

    def run(self, idx: torch.Tensor) -> torch.Tensor:
        """A forward pass over token ids (B, T) through every layer (no logits needed): the last
        hidden state (B, T, d) of the real tokens, the input of the head."""

    def watch_units(self, fn: UnitsWatch) -> Callable[[], None]:
        """Call fn(layer, h) with each layer's MLP hidden units — the input of its output
        projection — on every forward; returns the function that stops it."""

    def watch_probs(self, fn: ProbsWatch) -> Callable[[], None]:
        """Route attention through explicit probabilities passed to fn(layer, p) on every forward
        (slower than fused attention: only while measuring); returns the function that stops it."""

    def core_parameters(self) -> Iterator[torch.Tensor]:
        """The parameters mean |θ| pools: all but the token and position tables (and an untied
        output head, a table of the same kind)."""

    def device(self) -> torch.device: ...

    def init_stds(self) -> dict[str, float | None]:
        """Per parameter, the std of the zero-mean normal its initialisation draws it from, or
        None where it is initialised to a constant (biases 0, norm gains 1)."""

    def param_kinds(self) -> dict[str, str]:
        """Per parameter, its kind (PARAM_KINDS)."""

    def unit_params(self, layer: int) -> UnitParams:
        """Where the MLP hidden units of `layer` live in the weights."""


class GPTSeam:
    """plc's GPT (plc.model) behind ModelSeam: hidden units are the output of `mlp.act`, the
    probabilities come from the attention's explicit path (`GPT.set_probs_hook`)."""

    def __init__(self, model: GPT):
        c = model.config
        self.model = model
        self.n_layer, self.n_head, self.mlp_width = c.n_layer, c.n_head, 4 * c.d_model
        self.n_sink = model.n_sink

    def run(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model.hidden(idx)

    def watch_units(self, fn: UnitsWatch) -> Callable[[], None]:
        handles = [
            block.mlp.act.register_forward_hook(lambda mod, inp, out, i=i: fn(i, out))
            for i, block in enumerate(self.model.transformer.h)
        ]

        def stop() -> None:
            for handle in handles:
                handle.remove()

        return stop

    def watch_probs(self, fn: ProbsWatch) -> Callable[[], None]:
        self.model.set_probs_hook(fn)
        return lambda: self.model.set_probs_hook(None)

    def core_parameters(self) -> Iterator[torch.Tensor]:
        tables = {id(self.model.transformer.wte.weight), id(self.model.transformer.wpe.weight)}
        return (p for p in self.model.parameters() if id(p) not in tables)

    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def init_stds(self) -> dict[str, float | None]:
        return self.model.init_stds()

    def param_kinds(self) -> dict[str, str]:
        import torch.nn as nn

        kinds = {}
        for mod_name, module in self.model.named_modules():
            for p_name, _ in module.named_parameters(recurse=False):
                name = f"{mod_name}.{p_name}" if mod_name else p_name
                if isinstance(module, nn.Linear):
                    kinds[name] = p_name
                elif isinstance(module, nn.LayerNorm):
                    kinds[name] = "norm"
                else:  # the token and position tables, the sink vectors
                    kinds[name] = "table"
        return kinds

    def unit_params(self, layer: int) -> UnitParams:
        mlp = f"transformer.h.{layer}.mlp"
        return UnitParams(
            ((f"{mlp}.c_fc.weight", 0), (f"{mlp}.c_fc.bias", 0)), (f"{mlp}.c_proj.weight", 1)
        )


def seam(model: GPT | ModelSeam) -> ModelSeam:
    """The model's seam: a model that implements ModelSeam itself, or plc's GPT adapted."""
    return model if isinstance(model, ModelSeam) else GPTSeam(model)


# -------------------------------------------------------------------------------- the measures


def h_max(q_from: int, q_to: int) -> float:
    """Mean of ln q for q = q_from…q_to: the largest possible mean entropy over those queries (eq. 5)."""
    if not 1 <= q_from <= q_to:
        raise PlcError(f"query positions must satisfy 1 ≤ from ≤ to, got {q_from}…{q_to}")
    return (math.lgamma(q_to + 1) - math.lgamma(q_from)) / (q_to - q_from + 1)


def param_abs_mean(model: GPT | ModelSeam) -> float:
    """Mean |θ| over all parameters except the token and position tables (the tied head included)."""
    total, count = 0.0, 0
    for p in seam(model).core_parameters():
        total += p.detach().double().abs().sum().item()
        count += p.numel()
    return total / count


def dormant_scores(mean_abs: torch.Tensor) -> torch.Tensor:
    """Eq. 4: each unit's mean |activation| over its layer's mean (rows = layers); 0 for a dead layer."""
    import torch

    layer_mean = mean_abs.mean(dim=-1, keepdim=True)
    return torch.where(layer_mean > 0, mean_abs / layer_mean, torch.zeros_like(mean_abs))


def unit_mean_abs(model: GPT | ModelSeam, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """h̄ of eq. 3 for every MLP unit, (layers, units) fp64 on the model's device: mean |hidden
    unit| over the real tokens of the token-id batches, accumulated as `measure` does (ReDo in
    plc.mitigations scores units with this and `dormant_scores`)."""
    import torch

    view = seam(model)
    stats = UnitStats(view, ranks=False)
    stats.active = True
    try:
        with torch.no_grad():
            for x in batches:
                view.run(x)
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


class UnitStats:
    """Watches every layer's MLP hidden units: per-unit Σ|h|, the Gram matrix Σ hᵀh, Σ‖h‖."""

    def __init__(self, view: ModelSeam, ranks: bool):
        import torch

        n_layer, n_units, dev = view.n_layer, view.mlp_width, view.device()
        self.active, self.tokens, self.n_sink = False, 0, view.n_sink
        self.abs_sum = torch.zeros(n_layer, n_units, dtype=torch.float64, device=dev)
        self.norm_sum = torch.zeros(n_layer, dtype=torch.float64, device=dev)
        self.gram = (
            torch.zeros(n_layer, n_units, n_units, dtype=torch.float64, device=dev)
            if ranks
            else None
        )
        self.remove = view.watch_units(self._add)

    def _add(self, layer: int, out: torch.Tensor) -> None:
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


class HiddenStats:
    """Sums over the real tokens of the last hidden state: Σ‖h‖, Σh and Σh² per feature (fp64)."""

    def __init__(self) -> None:
        self.tokens, self.norm_sum = 0, 0.0
        self.sum: torch.Tensor | None = None
        self.sq_sum: torch.Tensor | None = None

    def add(self, hidden: torch.Tensor) -> None:
        h = hidden.flatten(0, 1).double()  # (tokens, d)
        self.tokens += h.shape[0]
        self.norm_sum += float(h.norm(dim=1).sum())
        s, sq = h.sum(dim=0), (h * h).sum(dim=0)
        self.sum = s if self.sum is None else self.sum + s
        self.sq_sum = sq if self.sq_sum is None else self.sq_sum + sq

    def norm(self) -> float:
        """Mean ‖h‖₂ over the tokens."""
        return self.norm_sum / self.tokens

    def variance(self) -> float:
        """Each feature's variance over the tokens (1/n), averaged over the features."""
        mean = self.sum / self.tokens
        return float((self.sq_sum / self.tokens - mean * mean).clamp_min(0).mean())


class EntropyStats:
    """A probabilities watcher: per-head sums of −Σ p ln p over real queries q_from…T."""

    def __init__(self, view: ModelSeam, q_from: int):
        import torch

        self.q_from, self.rows, self.n_sink = q_from, 0, view.n_sink
        self.sums = torch.zeros(
            view.n_layer, view.n_head, dtype=torch.float64, device=view.device()
        )

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


# ------------------------------------------------------------------------------- one pass


@dataclass
class Part:
    """One measurement of a pass: the language whose windows it reads and how many of them."""

    lang: str
    seqs: int


@dataclass
class Measured:
    """What one pass measured (CPU tensors and plain numbers); None for a part not asked."""

    mean_abs: torch.Tensor | None = None  # h̄ (layers × units), fp64
    effective_rank: list[float] | None = None
    stable_rank: list[float] | None = None
    feature_norm: list[float] | None = None  # mean ‖h‖ of each layer's hidden units
    entropy: torch.Tensor | None = None  # (layers × heads), nats
    last_hidden_norm: float | None = None  # mean ‖h‖ of the last hidden state
    last_hidden_var: float | None = None  # its per-feature variance over tokens, feature mean


def _spans(n: int, mlp_n: int, ent_n: int, attn_batch: int, plain_batch: int, feat_n: int = 0):
    """Batches [s, e) over n windows; none straddles the end of a part, and while the attention
    watcher is on (s < ent_n) a batch holds at most attn_batch windows."""
    s = 0
    while s < n:
        size = attn_batch if s < ent_n else plain_batch
        e = min([s + size, n] + [b for b in (mlp_n, ent_n, feat_n) if b > s])
        yield s, e
        s = e


def measure(
    model: GPT | ModelSeam,
    windows: dict[str, np.ndarray],
    *,
    seq_len: int,
    units: Part | None = None,
    ranks: bool = False,
    entropy: Part | None = None,
    query_from: int = 1,
    batch_size: int,
    progress: Progress | None = None,
    features: Part | None = None,
) -> Measured:
    """One pass over the first `seq_len` tokens of each language's windows (n, ≥ seq_len): the
    hidden units' h̄ (and with `ranks` their ranks and norms) on the first `units.seqs` windows of
    `units.lang`, attention entropy from query `query_from` on the first `entropy.seqs` of
    `entropy.lang`, the last hidden state's norm and variance on the first `features.seqs` of
    `features.lang`. A language read by several parts is read once."""
    import torch

    view = seam(model)
    mlp = UnitStats(view, ranks) if units is not None else None
    ent = EntropyStats(view, query_from) if entropy is not None else None
    last = HiddenStats() if features is not None else None
    attn_batch = max(1, ATTN_BATCH_BYTES // (4 * view.n_head * seq_len * seq_len))
    attn_batch = min(attn_batch, batch_size)
    total, done = sum(w.shape[0] for w in windows.values()), 0
    stop_probs = None
    # Measurements, not training: full fp32 (no autocast, no TF32) so CPU and GPU agree and the
    # Gram matrices keep the small singular values the ranks depend on. Restored afterwards: a
    # notebook may train next.
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            for lang, win in windows.items():
                mlp_n = units.seqs if units is not None and lang == units.lang else 0
                ent_n = entropy.seqs if entropy is not None and lang == entropy.lang else 0
                feat_n = features.seqs if features is not None and lang == features.lang else 0
                spans = _spans(win.shape[0], mlp_n, ent_n, attn_batch, batch_size, feat_n)
                for s, e in spans:
                    if mlp is not None:
                        mlp.active = s < mlp_n
                    if s < ent_n and stop_probs is None:
                        stop_probs = view.watch_probs(ent)
                    elif s >= ent_n and stop_probs is not None:
                        stop_probs()
                        stop_probs = None
                    hidden = view.run(torch.from_numpy(win[s:e, :seq_len]).to(view.device()))
                    if last is not None and s < feat_n:
                        last.add(hidden)
                    done += e - s
                    if progress:
                        progress(done, total)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        if stop_probs is not None:
            stop_probs()
        if mlp is not None:
            mlp.remove()

    out = Measured()
    if mlp is not None:
        out.mean_abs = (mlp.abs_sum / mlp.tokens).cpu()
        if ranks:
            pairs = [rank_metrics(g) for g in mlp.gram.cpu()]
            out.effective_rank = [p[0] for p in pairs]
            out.stable_rank = [p[1] for p in pairs]
            out.feature_norm = (mlp.norm_sum / mlp.tokens).cpu().tolist()
    if ent is not None:
        out.entropy = ent.mean().cpu()
    if last is not None:
        out.last_hidden_norm, out.last_hidden_var = last.norm(), last.variance()
    return out


def init_distance(model: GPT, theta0: dict[str, torch.Tensor]) -> float:
    """‖θ − θ₀‖₂ over every parameter (fp64)."""
    total = 0.0
    for name, p in model.named_parameters():
        if name not in theta0:
            raise PlcError(f"θ₀ has no {name}: it is not this model's initialisation")
        d = p.detach().double() - theta0[name].to(p.device).double()
        total += float((d * d).sum())
    return math.sqrt(total)


def window_loss(model: GPT, windows: np.ndarray, seq_len: int, batch_size: int) -> float:
    """Mean next-token loss over the windows' first seq_len + 1 tokens (every window alike)."""
    import torch

    device = next(model.parameters()).device
    total = 0.0
    with torch.no_grad():
        for s in range(0, windows.shape[0], batch_size):
            w = torch.from_numpy(windows[s : s + batch_size, : seq_len + 1]).to(device)
            total += float(model(w[:, :-1], w[:, 1:])) * w.shape[0]
    return total / windows.shape[0]


def perturbation_sensitivity(
    model: GPT,
    windows: np.ndarray,
    *,
    sigma: float,
    draws: int,
    seed: int,
    seq_len: int,
    batch_size: int,
) -> tuple[float, list[float]]:
    """(L(θ), [L(θ + σ·ε_d) − L(θ) for each draw d]): ε_d drawn like the initialisation (each
    parameter with an initial std s_p gets N(0, s_p²); constants none), from a generator seeded by
    (seed, d); the model's weights are restored afterwards, bit for bit."""
    import numpy as np
    import torch

    stds = model.init_stds()
    params = [(p, stds[n]) for n, p in model.named_parameters() if stds[n]]
    saved = [p.detach().clone() for p, _ in params]
    was_training = model.training
    model.eval()
    clean = window_loss(model, windows, seq_len, batch_size)
    increase = []
    try:
        for d in range(draws):
            words = np.random.SeedSequence([seed, PERTURB_STREAM, d]).generate_state(2)
            gen = torch.Generator(device=params[0][0].device)
            gen.manual_seed(int(words[0]) << 32 | int(words[1]))
            with torch.no_grad():
                for p, std in params:
                    eps = torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
                    p.add_(eps, alpha=sigma * std)
            increase.append(window_loss(model, windows, seq_len, batch_size) - clean)
            with torch.no_grad():
                for (p, _), keep in zip(params, saved, strict=True):
                    p.copy_(keep)
    finally:
        with torch.no_grad():
            for (p, _), keep in zip(params, saved, strict=True):
                p.copy_(keep)
        model.train(was_training)
    return clean, increase


def dormant_fraction(scores: torch.Tensor, eps: float) -> tuple[float, list[float]]:
    """% of units with score ≤ ε: overall and per layer."""
    is_dormant = (scores <= eps).double()
    return 100.0 * float(is_dormant.mean()), (100.0 * is_dormant.mean(dim=1)).tolist()


def head_states(entropy: torch.Tensor, hmax: float) -> tuple[float, float]:
    """% of heads lazy (entropy above 0.9·H_max) and collapsed (below 0.1·H_max)."""
    lazy = 100.0 * float((entropy > LAZY_FRACTION * hmax).double().mean())
    return lazy, 100.0 * float((entropy < COLLAPSED_FRACTION * hmax).double().mean())
