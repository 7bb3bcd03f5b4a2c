"""How much accelerator memory a training job needs, and how it is made to fit (torch-free).

`plc plan` prints it per size and the training commands choose by it on CUDA: the strategy (DDP
keeps every weight, gradient and AdamW moment on every rank; FSDP2's `fully_shard` splits them
over the ranks and gathers one block at a time), the micro-batch (at most the preset's, so that
nothing changes where that fits) and, where nothing else fits, activation checkpointing (each
block keeps only its input and recomputes the rest in the backward pass: ≈ 1/3 more compute).

What autograd keeps for the backward pass (`saved_bytes`) is exact for plc's GPT: the test counts
the tensors saved by a forward pass on CPU, in fp32 and under bf16 autocast. The rest is a model,
not a measurement (no GPU was available to this project): the optimizer's states, DDP's gradient
buckets, FSDP's gathered blocks, the LM head's chunk and one layer of gradients in flight, and
a reserve for the CUDA context, NCCL and the allocator's fragmentation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from plc.errors import PlcError
from plc.sizes import GPTConfig

GIB = 1 << 30
STRATEGIES = ("auto", "ddp", "fsdp")
# Bytes autograd keeps per token, per layer and per unit of d_model (counted on CPU): in fp32 the
# LayerNorm inputs and outputs, q/k/v, the attention output, the residual and the MLP's 4·d
# pre- and post-GeLU (4+4+12+4+4+4+16+16); under bf16 autocast the residual stream and the
# LayerNorm inputs stay fp32, the rest is bf16 (4+2+6+2+4+2+8+8).
SAVED_PER_D = {"fp32": 64, "bf16": 36}
# Under autocast each layer's weights are cast to bf16 once, and the casts kept for the backward
# pass: 2 bytes per weight of the blocks' 12·d² (the biases are not kept).
CAST_BYTES = 2
# The LM head's chunk of logits on a GPU (plc.model.lm_loss: 2²⁸), and the bytes each of its
# entries takes under autocast at once: bf16 logits, their fp32 copy, fp32 log-probabilities,
# the bf16 softmax gradient.
HEAD_CHUNK = 1 << 28
HEAD_CHUNK_BYTES = 2 + 4 + 4 + 2
# fp32 weights and gradients and AdamW's two moments (16 B per parameter); DDP's gradient buckets
# are a second copy of the gradients (gradient_as_bucket_view is off).
STATE_BYTES, DDP_BUCKET_BYTES = 16, 4
# Not measured (no GPU here): the CUDA context (≈ 0.5 GiB), NCCL's buffers and what the caching
# allocator cannot reuse are kept out of the device's memory before anything is fitted.
USABLE_FRACTION, RESERVED_BYTES = 0.9, 2 * GIB
# Activation checkpointing runs each block's forward pass twice: 8 FLOPs per weight and token
# instead of 6 (an MFU counts the model's 6).
RECOMPUTE = 8 / 6
# bf16 dense peak TFLOP/s and memory (GiB) of the GPUs a plan can be costed for (SXM parts).
GPUS: dict[str, tuple[float, float]] = {
    "h100": (989.0, 80.0),
    "h200": (989.0, 141.0),
    "a100": (312.0, 80.0),
}


@dataclass(frozen=True)
class Estimate:
    """Peak bytes on one rank while it trains, and what they are."""

    strategy: str  # ddp or fsdp (one process: ddp, with nothing to all-reduce)
    micro_batch: int
    activation_checkpointing: bool
    states: int  # weights, gradients, AdamW moments (this rank's shard under FSDP), buckets
    gathered: int  # FSDP: the blocks and embeddings gathered whole while they are used
    saved: int  # what autograd keeps from the forward to the backward pass
    transient: int  # the larger of the LM head's chunk and one layer's gradients
    total: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Fit:
    """The strategy a job uses on a device, and its estimate; `fits` False: nothing does."""

    estimate: Estimate
    device_bytes: int
    usable_bytes: int
    fits: bool

    @property
    def strategy(self) -> str:
        return self.estimate.strategy

    @property
    def micro_batch(self) -> int:
        return self.estimate.micro_batch

    @property
    def activation_checkpointing(self) -> bool:
        return self.estimate.activation_checkpointing

    def to_dict(self) -> dict:
        return {**self.estimate.to_dict(), "device_bytes": self.device_bytes, "fits": self.fits}


def usable_bytes(device_bytes: int) -> int:
    """What is left to plc's tensors of a device's memory."""
    return max(0, int(device_bytes * USABLE_FRACTION) - RESERVED_BYTES)


def _block_weights(config: GPTConfig) -> int:
    return 12 * config.d_model**2


def _root_params(config: GPTConfig) -> int:
    """Parameters outside the blocks (token and position tables, final LayerNorm, sinks): the
    root unit of FSDP, gathered for the whole step."""
    return config.n_params_total - (config.n_params - 2 * config.d_model)


def saved_bytes(
    config: GPTConfig, tokens: int, seq_len: int, *, autocast: bool, checkpointing: bool = False
) -> int:
    """Bytes autograd keeps from a forward pass of `tokens` tokens (sequences of `seq_len`) to its
    backward pass, parameters excluded: per layer the activations (or with checkpointing the
    block's input alone), the final LayerNorm's input, the LM head's gradients (computed in the
    forward pass: fp32 (tokens, d) and (vocab, d)), the token ids and positions."""
    d, n_layer, heads = config.d_model, config.n_layer, config.n_head
    n = tokens + config.sink_tokens * tokens // seq_len  # sink positions pass the blocks too
    if checkpointing:
        per_layer = 4 * d * n
    else:
        per_d = SAVED_PER_D["bf16" if autocast else "fp32"]
        # + two LayerNorms' mean and rstd (fp32) and the attention's log-sum-exp per head
        per_layer = n * (per_d * d + 16 + 4 * heads)
        if config.qk_norm:  # q and k LayerNormed: copies, outputs and statistics (counted)
            per_layer += n * ((6 if autocast else 12) * d + 16 * heads)
        if autocast:
            per_layer += CAST_BYTES * _block_weights(config)
    # The final LayerNorm keeps its input with the sink positions (a view of the last block's).
    head = 4 * d * n + 8 * tokens + 4 * tokens * d + 4 * config.vocab_size * d
    ids = 8 * tokens + 8 * seq_len
    return n_layer * per_layer + head + ids


def estimate(
    config: GPTConfig,
    *,
    seq_len: int,
    micro_batch: int,
    world: int,
    strategy: str,
    checkpointing: bool,
) -> Estimate:
    """Peak bytes on one of `world` ranks training `config` on micro-batches of `micro_batch`
    sequences under bf16 autocast (what plc does on CUDA)."""
    if strategy not in ("ddp", "fsdp"):
        raise PlcError(f"strategy must be ddp or fsdp, got {strategy!r}")
    p = config.n_params_total
    tokens = micro_batch * seq_len
    block = _block_weights(config) + 13 * config.d_model
    if strategy == "fsdp" and world > 1:
        states = math.ceil(STATE_BYTES * p / world)
        # The root's tables whole for the step (weights and gradients, fp32); two blocks' weights
        # (the one computing and the one prefetched) and one block's unsharded gradients.
        gathered = 8 * _root_params(config) + 3 * 4 * block
    else:
        states = (STATE_BYTES + (DDP_BUCKET_BYTES if world > 1 else 0)) * p
        gathered = 0
    saved = saved_bytes(config, tokens, seq_len, autocast=True, checkpointing=checkpointing)
    layer = saved_bytes(config, tokens, seq_len, autocast=True) // max(1, config.n_layer)
    head = min(tokens, max(1, HEAD_CHUNK // config.vocab_size)) * config.vocab_size
    # The head's chunk, and the bf16 partial product of its weight gradient (vocab, d).
    head_bytes = HEAD_CHUNK_BYTES * head + 2 * config.vocab_size * config.d_model
    transient = max(head_bytes, (2 if checkpointing else 1) * layer)
    return Estimate(
        strategy,
        micro_batch,
        checkpointing,
        states,
        gathered,
        saved,
        transient,
        states + gathered + saved + transient,
    )


def choose(
    config: GPTConfig,
    *,
    seq_len: int,
    share: int,
    world: int,
    device_bytes: int,
    cap: int | None = None,
    micro_batch: int | None = None,
    strategy: str = "auto",
    checkpointing: bool = False,
) -> Fit:
    """How a job trains on devices of `device_bytes`: `share` sequences per rank and step, split
    into micro-batches that divide it, at most `cap` (the preset's micro-batch; None: the share).

    The first of DDP, FSDP (more than one rank), then each with activation checkpointing, in
    which some micro-batch fits, with its largest micro-batch that fits; a `micro_batch`, a
    `strategy` other than auto and `checkpointing` on are kept as given. Nothing fitting: the
    smallest estimate, `fits` False."""
    if strategy not in STRATEGIES:
        raise PlcError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    usable = usable_bytes(device_bytes)
    limit = min(cap or share, share)
    micros = [m for m in range(limit, 0, -1) if share % m == 0]
    if micro_batch is not None:
        micros = [micro_batch]
    strategies = ["ddp", "fsdp"] if strategy == "auto" else [strategy]
    if world == 1:
        strategies = strategies[:1]
    tried = []
    for ac in [checkpointing] if checkpointing else [False, True]:
        for s in strategies:
            for m in micros:
                e = estimate(
                    config,
                    seq_len=seq_len,
                    micro_batch=m,
                    world=world,
                    strategy=s,
                    checkpointing=ac,
                )
                if e.total <= usable:
                    return Fit(e, device_bytes, usable, True)
                tried.append(e)
    return Fit(min(tried, key=lambda e: e.total), device_bytes, usable, False)


def gpu_spec(name: str) -> tuple[float, float]:
    """(bf16 dense peak TFLOP/s, memory GiB) of a GPU by name."""
    if name not in GPUS:
        raise PlcError(f"unknown --gpu {name!r}; choose one of {', '.join(GPUS)}")
    return GPUS[name]
