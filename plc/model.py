"""The GPT of the paper (§IV-B, Fig. 8, Appendix A) in one file, after nanoGPT's model.py.

Pre-norm decoder-only transformer: learned absolute positions, causal self-attention,
LayerNorm before attention and MLP plus a final one, MLP ×4 with exact GeLU, biases everywhere,
input and output embeddings tied. Shapes: B batch, T time, C = d_model, H heads, D = 64 head dim.

Two architecture options beyond the paper (GPTConfig; off by default, and then the module, its
parameters and its initial weights are exactly the paper's):
- sink tokens: K learned vectors (no position of their own) are prepended to the embedded sequence,
  pass through every block as keys any query may attend to, and are dropped before the final
  LayerNorm, so logits, targets and the loss are those of the real tokens alone. They are drawn
  (N(0, 0.02), like the embeddings) after every other weight, so a seed gives the same other
  weights with or without them.
- QK-norm: LayerNorm(head_dim) on queries and keys of every head before the dot product.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from plc.errors import PlcError
from plc.sizes import (  # noqa: F401  (re-exported: plc.model is the model's public face)
    HEAD_DIM,
    PAPER_SIZES,
    SHAPES,
    GPTConfig,
    make_config,
    padded_vocab,
    paper_lr,
    size_name,
)

# Called with (layer index, attention probabilities (B, H, T, T)) by diagnose; None = fast SDPA.
AttnHook = Callable[[int, torch.Tensor], None]


class LanguageModel(Protocol):
    """The model under study: what the training loop, the probes, eval, diagnose and the remedies
    ask of a model. plc's GPT implements it, and so does plc.hf.adapter.HFModel around any
    supported Hugging Face causal LM (GPT-2, GPT-NeoX, Llama, Qwen2, Qwen3, OLMo, OLMo-2); code that
    uses only this and the seam works on every family.

    - an nn.Module whose `forward(idx, targets=None)` gives logits (B, T, V), or with targets
      (B, T) the mean cross-entropy computed by `lm_loss` (chunked: the (B·T, V) logits are never
      held whole, which matters at a 50k–150k vocabulary);
    - `hidden(idx)`: the final-norm hidden states (B, T, C);
    - `config`: n_layer, d_model, n_head, mlp_width, vocab_size (embedding rows), context,
      n_params (non-embedding), sink_tokens (plc.sizes.GPTConfig or plc.hf.config.HFConfig);
    - `n_sink`: leading positions of every block's input that are not tokens (0 but for plc's
      sink tokens);
    - `init_stds()`: per parameter name, the std of the normal it is initialised from, or None
      for a constant (what re-initialising remedies draw from);
    - its inside — MLP hidden units (the input of each block's output projection; SwiGLU's gated
      product), attention probabilities per layer and head (explicit or eager attention while
      watched), each parameter's kind, an MLP unit's slices of the weights — through its seam
      (plc.measures.seam, plc.measures.ModelSeam);
    - parameter groups for weight decay are one rule for every family (plc.train.make_optimizer):
      ≥ 2-D parameters (matrices, tables) decay, 1-D ones (biases, norm gains) do not.
    """

    config: Any
    n_sink: int

    def __call__(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor: ...

    def hidden(self, idx: torch.Tensor) -> torch.Tensor: ...

    def init_stds(self) -> dict[str, float | None]: ...


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.n_head, self.layer = config.n_head, layer
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model)
        self.c_proj = nn.Linear(config.d_model, config.d_model)
        self.probs_hook: AttnHook | None = None
        self.q_norm = nn.LayerNorm(config.head_dim) if config.qk_norm else None
        self.k_norm = nn.LayerNorm(config.head_dim) if config.qk_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
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
        # Activation checkpointing (plc.memory): while training, each block keeps only its input
        # and recomputes the rest in the backward pass; the loop switches it on.
        self.checkpointing = False
        self.n_sink = config.sink_tokens  # leading positions of every block's input that are sinks
        self.sink = None
        if self.n_sink:
            self.sink = nn.Parameter(torch.empty(self.n_sink, config.d_model))
            nn.init.normal_(self.sink, mean=0.0, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def init_stds(self) -> dict[str, float | None]:
        """Per parameter name, the std of the zero-mean normal __init__ draws it from, or None for
        the parameters it sets to a constant (Linear biases 0, LayerNorm gains 1 and biases 0).
        What re-initialising methods (plc.mitigations) draw fresh weights from."""
        residual = 0.02 / math.sqrt(2 * self.config.n_layer)
        stds: dict[str, float | None] = {}
        for mod_name, module in self.named_modules():
            for p_name, _ in module.named_parameters(recurse=False):
                name = f"{mod_name}.{p_name}" if mod_name else p_name
                if isinstance(module, nn.Linear) and p_name == "weight":
                    stds[name] = residual if name.endswith("c_proj.weight") else 0.02
                elif isinstance(module, nn.Embedding) or name == "sink":
                    stds[name] = 0.02
                else:
                    stds[name] = None
        return stds

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final-LayerNorm hidden states (B, T, C) for token ids (B, T)."""
        T = idx.size(1)
        if T > self.config.context:
            raise PlcError(f"sequence length {T} exceeds the model's context {self.config.context}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        if self.sink is not None:
            x = torch.cat([self.sink.expand(x.size(0), -1, -1), x], dim=1)
        recompute = self.checkpointing and torch.is_grad_enabled()
        for block in self.transformer.h:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        if self.sink is not None:
            x = x[:, self.n_sink :]
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
        """Route attention through explicit probabilities (B, H, K+T, K+T) passed to `hook`; the
        first K = n_sink rows and columns belong to the sink tokens."""
        for block in self.transformer.h:
            block.attn.probs_hook = hook


def lm_loss(
    h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Mean cross-entropy of logits h @ wᵀ, computed a chunk of rows at a time.

    The default chunk holds 2²⁶ fp32 logits on CPU (256 MB: 442 rows of the Qwen3 vocabulary, a
    whole batch of a byte vocabulary) and 2²⁸ on GPU. Each chunk adds into the full (V, d) gradient
    of w, 8·V·d bytes of memory traffic against 6·rows·V·d matmul FLOPs: the GPU, with ~7× more
    FLOPs per byte than this CPU, needs its larger chunks to stay matmul-bound.
    """
    if chunk is None:
        chunk = max(1, (1 << (28 if h.is_cuda else 26)) // w.size(0))
    if torch.is_grad_enabled() and (h.requires_grad or w.requires_grad):
        return _ChunkedLinearCE.apply(h, w, targets, chunk)
    picked = h.new_empty(h.size(0), dtype=torch.float32)
    for s, tc, logprobs in _chunk_log_probs(h, w, targets, chunk):
        picked[s : s + chunk] = logprobs.gather(1, tc[:, None]).squeeze(1)
    return _mean_nll(picked)


def _mean_nll(picked: torch.Tensor) -> torch.Tensor:
    """−mean of the targets' log-probabilities, summed in F.cross_entropy's order (same bits)."""
    return F.nll_loss(picked[:, None], picked.new_zeros(picked.size(0), dtype=torch.long))


def _chunk_log_probs(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, chunk: int):
    """Yield (first row, its chunk's targets, fp32 log-softmax of h[chunk] @ wᵀ) chunk by chunk.

    Without autocast the logits and log-probabilities live in two buffers that every chunk reuses:
    a fresh 256 MB tensor per chunk is a fresh mmap to fault in (glibc maps blocks > 32 MB anew),
    and reusing them made the Qwen3-vocabulary head 1.6× faster in eval, 1.2× in training on CPU.
    Under autocast (GPU) the matmul runs in bf16, which `out=` would bypass.
    """
    n, reuse = h.size(0), not torch.is_autocast_enabled(h.device.type) and h.dtype == w.dtype
    if reuse:
        logits_buf = h.new_empty((min(chunk, n), w.size(0)))
        logprobs_buf = torch.empty_like(logits_buf, dtype=torch.float32)
    for s in range(0, n, chunk):
        hc, tc = h[s : s + chunk], targets[s : s + chunk]
        if reuse:
            logits = torch.mm(hc, w.t(), out=logits_buf[: hc.size(0)])
            out = logprobs_buf[: hc.size(0)]
            yield s, tc, torch.log_softmax(logits, dim=-1, dtype=torch.float32, out=out)
        else:
            yield s, tc, torch.log_softmax((hc @ w.t()).float(), dim=-1)


class _ChunkedLinearCE(torch.autograd.Function):
    """Linear head + cross-entropy whose gradients are computed during the forward pass.

    Each chunk's logits live only long enough to give d(loss)/d(logits) = softmax − onehot, which is
    folded straight into the gradients of h and w. Same three matmuls as plain autograd, no recompute,
    and peak memory of one chunk's logits instead of all of them.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, chunk: int):
        n = h.size(0)
        device = h.device.type
        low = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        grad_h = torch.empty_like(h)
        grad_w = torch.empty(w.shape, dtype=torch.float32, device=w.device)
        picked = torch.empty(n, dtype=torch.float32, device=h.device)
        for s, tc, logprobs in _chunk_log_probs(h, w, targets, chunk):
            hc = h[s : s + chunk]
            picked[s : s + chunk] = logprobs.gather(1, tc[:, None]).squeeze(1)
            g = logprobs.exp_()  # softmax, in place of the log-probabilities
            g[torch.arange(hc.size(0), device=g.device), tc] -= 1.0
            g = g.to(hc.dtype)
            grad_h[s : s + chunk] = g @ w.to(hc.dtype)
            # The first chunk writes grad_w (no 4·V·d-byte zero fill), later ones add to it.
            if low is None:
                grad_w.addmm_(g.t().float(), hc.float(), beta=1 if s else 0)
            else:
                # As autocast computes every other weight's gradient: a bf16 matmul (fp32
                # accumulation, bf16 result) added into fp32. An in-place addmm_ escapes
                # autocast and ran in TF32, at half a GPU's bf16 rate (≈ +13 % step time at
                # 314M, +30 % at 5M, where this matmul is 12 % and 29 % of the FLOPs).
                part = torch.mm(g.t().to(low), hc.to(low))
                grad_w.add_(part) if s else grad_w.copy_(part)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.n, ctx.w_dtype = n, w.dtype
        return _mean_nll(picked)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        return grad_h * scale.to(grad_h.dtype), (grad_w * scale).to(ctx.w_dtype), None, None
