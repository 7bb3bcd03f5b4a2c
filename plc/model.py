"""The GPT of the paper (§IV-B, Fig. 8, Appendix A) in one file, after nanoGPT's model.py.

Pre-norm decoder-only transformer: learned absolute positions, causal self-attention,
LayerNorm before attention and MLP plus a final one, MLP ×4 with exact GeLU, biases everywhere,
input and output embeddings tied. Shapes: B batch, T time, C = d_model, H heads, D = 64 head dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from plc.errors import PlcError

HEAD_DIM = 64

# Table I (layers, d_model, heads) plus CPU presets that keep head dim 64 and d/L near 80.
PRESETS: dict[str, tuple[int, int, int]] = {
    "nano": (1, 64, 1),
    "micro": (2, 128, 2),
    "mini": (3, 256, 4),
    "5M": (4, 320, 5),
    "12M": (5, 448, 7),
    "27M": (7, 576, 9),
    "39M": (8, 640, 10),
    "53M": (9, 704, 11),
    "83M": (10, 832, 13),
    "106M": (11, 896, 14),
    "314M": (16, 1280, 20),
}
PAPER_SIZES = ["5M", "12M", "27M", "39M", "53M", "83M", "106M", "314M"]

# App. A: η = η_5M · (d_5M / d)^α with α = ln(1/3) / ln(1/4).
LR_5M, D_5M, LR_ALPHA = 3e-3, 320, math.log(1 / 3) / math.log(1 / 4)


def paper_lr(d_model: int) -> float:
    """The paper's learning rate for a hidden size (Table II)."""
    return LR_5M * (D_5M / d_model) ** LR_ALPHA


def padded_vocab(vocab_size: int) -> int:
    """Embedding rows for a tokenizer vocabulary: rounded up to a multiple of 64 (151,669 → 151,680)."""
    return -(-vocab_size // 64) * 64


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int  # embedding rows (already padded)
    context: int  # maximum sequence length = rows of the position table

    def __post_init__(self) -> None:
        for name in ("n_layer", "d_model", "n_head", "vocab_size", "context"):
            if getattr(self, name) <= 0:
                raise PlcError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise PlcError(f"d_model {self.d_model} is not divisible by {self.n_head} heads")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        return cls(**{k: int(d[k]) for k in ("n_layer", "d_model", "n_head", "vocab_size", "context")})

    @property
    def n_params(self) -> int:
        """Non-embedding parameters ("Eff. Params" of Table I): everything but token and position tables."""
        C = self.d_model
        per_block = 12 * C * C + 13 * C  # qkv 3C²+3C, proj C²+C, fc 4C²+4C, fc-proj 4C²+C, 2 LN 4C
        return self.n_layer * per_block + 2 * C  # + final LayerNorm

    @property
    def n_params_total(self) -> int:
        return self.n_params + (self.vocab_size + self.context) * self.d_model


def make_config(
    size: str | None = None,
    *,
    layers: int | None = None,
    d_model: int | None = None,
    heads: int | None = None,
    vocab_size: int,
    context: int,
) -> GPTConfig:
    """A config from a preset name or an explicit shape (heads default to d_model / 64)."""
    if size is not None:
        if size not in PRESETS:
            raise PlcError(f"unknown size {size!r}; choose one of {', '.join(PRESETS)}")
        layers, d_model, heads = PRESETS[size]
    if layers is None or d_model is None:
        raise PlcError("give a --size or both --layers and --d-model")
    if layers <= 0 or d_model <= 0 or (heads is not None and heads <= 0):
        raise PlcError("layers, d_model and heads must be positive")
    if heads is None:
        if d_model % HEAD_DIM:
            raise PlcError(f"d_model {d_model} is not a multiple of {HEAD_DIM}: pass --heads")
        heads = d_model // HEAD_DIM
    return GPTConfig(layers, d_model, heads, vocab_size, context)


def size_name(config: GPTConfig) -> str:
    """The preset name of a shape, or a descriptive one such as 'L6-d384'."""
    for name, shape in PRESETS.items():
        if shape == (config.n_layer, config.d_model, config.n_head):
            return name
    return f"L{config.n_layer}-d{config.d_model}"


# Called with (layer index, attention probabilities (B, H, T, T)) by diagnose; None = fast SDPA.
AttnHook = Callable[[int, torch.Tensor], None]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.n_head, self.layer = config.n_head, layer
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model)
        self.c_proj = nn.Linear(config.d_model, config.d_model)
        self.probs_hook: AttnHook | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.probs_hook is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, T)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            probs = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            self.probs_hook(self.layer, probs)
            y = probs @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, 4 * config.d_model)
        self.act = nn.GELU()  # exact erf GeLU; a module so forward hooks can read unit activations
        self.c_proj = nn.Linear(4 * config.d_model, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.d_model),
                wpe=nn.Embedding(config.context, config.d_model),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.d_model),
            )
        )
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps the residual stream's variance flat.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final-LayerNorm hidden states (B, T, C) for token ids (B, T)."""
        T = idx.size(1)
        if T > self.config.context:
            raise PlcError(f"sequence length {T} exceeds the model's context {self.config.context}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) without targets; mean cross-entropy (a scalar) with targets.

        With targets the (B·T, V) logits are never held whole: at the Qwen3 vocabulary they would be
        the largest tensor of the step (8·256·151,680 fp32 = 1.2 GB).
        """
        h = self.hidden(idx)
        if targets is None:
            return h @ self.transformer.wte.weight.t()
        return lm_loss(h.flatten(0, 1), self.transformer.wte.weight, targets.flatten())

    def set_probs_hook(self, hook: AttnHook | None) -> None:
        for block in self.transformer.h:
            block.attn.probs_hook = hook


def lm_loss(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Mean cross-entropy of logits h @ wᵀ, computed a chunk of rows at a time."""
    if torch.is_grad_enabled() and (h.requires_grad or w.requires_grad):
        return _ChunkedLinearCE.apply(h, w, targets, chunk)
    total = h.new_zeros((), dtype=torch.float32)
    for s in range(0, h.size(0), chunk):
        logits = (h[s : s + chunk] @ w.t()).float()
        total += F.cross_entropy(logits, targets[s : s + chunk], reduction="sum")
    return total / h.size(0)


class _ChunkedLinearCE(torch.autograd.Function):
    """Linear head + cross-entropy whose gradients are computed during the forward pass.

    Each chunk's logits live only long enough to give d(loss)/d(logits) = softmax − onehot, which is
    folded straight into the gradients of h and w. Same three matmuls as plain autograd, no recompute,
    and peak memory of one chunk's logits instead of all of them.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, chunk: int):
        n = h.size(0)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, n, chunk):
            hc, tc = h[s : s + chunk], targets[s : s + chunk]
            logits = (hc @ w.t()).float()  # (chunk, V)
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, tc[:, None]).squeeze(1)).sum()
            g = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            g[torch.arange(hc.size(0), device=g.device), tc] -= 1.0
            g = g.to(hc.dtype)
            grad_h[s : s + chunk] = g @ w.to(hc.dtype)
            grad_w.addmm_(g.t().float(), hc.float())
        ctx.save_for_backward(grad_h, grad_w)
        ctx.n, ctx.w_dtype = n, w.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        return grad_h * scale.to(grad_h.dtype), (grad_w * scale).to(ctx.w_dtype), None, None
