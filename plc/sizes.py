"""Model shapes without torch: the Table I presets, the config, parameter counts, learning rates.

Kept free of torch so that `plc sizes`, `plc plan` and argument checking start instantly;
`plc.model` builds the network from these configs.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from plc.errors import PlcError

HEAD_DIM = 64

# Model shapes: Table I (layers, d_model, heads) plus CPU presets that keep head dim 64 and d/L near 80.
SHAPES: dict[str, tuple[int, int, int]] = {
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
    """The shape of a GPT, and two architecture options beyond the paper (both off by default).

    - sink_tokens K: K learnable vectors prepended to every sequence (attention sinks / registers,
      Xiao et al. 2024, Darcet et al. 2024). They are keys every query can attend to, never
      predicted and never scored; their K·d_model parameters are counted apart from Table I
      (`n_sink_params`), like the token and position tables.
    - qk_norm: LayerNorm over the head dimension of queries and keys, one gain and bias vector each,
      shared by all heads (timm's and Qwen3's form): 4·head_dim parameters per layer, counted in
      `n_params` (they sit inside the blocks).
    """

    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int  # embedding rows (already padded)
    context: int  # maximum sequence length = rows of the position table
    sink_tokens: int = 0
    qk_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("n_layer", "d_model", "n_head", "vocab_size", "context"):
            if getattr(self, name) <= 0:
                raise PlcError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise PlcError(f"d_model {self.d_model} is not divisible by {self.n_head} heads")
        if self.sink_tokens < 0:
            raise PlcError(f"--sink-tokens must be 0 or more, got {self.sink_tokens}")

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        # Checkpoints written before the architecture options lack their keys: both off.
        shape = {k: int(d[k]) for k in ("n_layer", "d_model", "n_head", "vocab_size", "context")}
        return cls(
            **shape, sink_tokens=int(d.get("sink_tokens", 0)), qk_norm=bool(d.get("qk_norm", False))
        )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def mlp_width(self) -> int:
        """Hidden units of every MLP (×4)."""
        return 4 * self.d_model

    @property
    def n_params(self) -> int:
        """Non-embedding parameters ("Eff. Params" of Table I): everything but token and position
        tables and sink vectors; with qk_norm, 4·head_dim more per layer."""
        C = self.d_model
        per_block = 12 * C * C + 13 * C  # qkv 3C²+3C, proj C²+C, fc 4C²+4C, fc-proj 4C²+C, 2 LN 4C
        if self.qk_norm:
            per_block += 4 * self.head_dim  # gain and bias of the q and the k LayerNorm
        return self.n_layer * per_block + 2 * C  # + final LayerNorm

    @property
    def n_sink_params(self) -> int:
        return self.sink_tokens * self.d_model

    @property
    def n_params_total(self) -> int:
        return self.n_params + (self.vocab_size + self.context) * self.d_model + self.n_sink_params


def shape_of(size: str) -> tuple[int, int, int]:
    """(layers, d_model, heads) of a preset name or of a custom shape's name `L<layers>-d<d_model>`
    (what `size_name` calls it; heads d_model / 64), so plans can run shapes between the presets."""
    if size in SHAPES:
        return SHAPES[size]
    match = re.fullmatch(r"L(\d+)-d(\d+)", size)
    if match is None:
        raise PlcError(
            f"unknown size {size!r}; choose one of {', '.join(SHAPES)} or name a shape "
            "L<layers>-d<d_model> (e.g. L2-d64)"
        )
    layers, d_model = int(match.group(1)), int(match.group(2))
    if layers <= 0 or d_model <= 0 or d_model % HEAD_DIM:
        raise PlcError(
            f"size {size!r}: layers and d_model must be positive, d_model a multiple of {HEAD_DIM}"
        )
    return layers, d_model, d_model // HEAD_DIM


def make_config(
    size: str | None = None,
    *,
    layers: int | None = None,
    d_model: int | None = None,
    heads: int | None = None,
    vocab_size: int,
    context: int,
    sink_tokens: int = 0,
    qk_norm: bool = False,
) -> GPTConfig:
    """A config from a preset name or an explicit shape (heads default to d_model / 64)."""
    if size is not None:
        layers, d_model, heads = shape_of(size)
    if layers is None or d_model is None:
        raise PlcError("give a --size or both --layers and --d-model")
    if layers <= 0 or d_model <= 0 or (heads is not None and heads <= 0):
        raise PlcError("layers, d_model and heads must be positive")
    if heads is None:
        if d_model % HEAD_DIM:
            raise PlcError(f"d_model {d_model} is not a multiple of {HEAD_DIM}: pass --heads")
        heads = d_model // HEAD_DIM
    return GPTConfig(layers, d_model, heads, vocab_size, context, sink_tokens, qk_norm)


def size_name(config: GPTConfig) -> str:
    """The preset name of a shape, or a descriptive one such as 'L6-d384'."""
    for name, shape in SHAPES.items():
        if shape == (config.n_layer, config.d_model, config.n_head):
            return name
    return f"L{config.n_layer}-d{config.d_model}"


def size_table(vocab_size: int = 151_680, context: int = 2048) -> list[dict]:
    """One row per preset: shape, d/L, non-embedding and total parameters, learning rate."""
    rows = []
    for name in SHAPES:
        c = make_config(name, vocab_size=vocab_size, context=context)
        rows.append(
            {
                "size": name,
                "layers": c.n_layer,
                "d_model": c.d_model,
                "heads": c.n_head,
                "d_over_l": c.d_model / c.n_layer,
                "n_params": c.n_params,
                "n_params_total": c.n_params_total,
                "lr": paper_lr(c.d_model),
            }
        )
    return rows


def train_flops_per_token(config: GPTConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6 per weight of every matmul, the tied LM
    head included, plus causal attention's scores and weighted sum (PaLM's appendix B estimate)."""
    matmul_weights = config.n_params + config.vocab_size * config.d_model
    return 6 * matmul_weights + 6 * config.n_layer * config.d_model * seq_len
