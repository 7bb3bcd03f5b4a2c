"""Fresh checkpoints (`plc init`) and their description (`plc inspect`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plc.errors import PlcError
from plc.presets import get_preset
from plc.protocol import cycle_of
from plc.sizes import make_config, padded_vocab, paper_lr, size_name
from plc.store import Checkpoint, check_output, load_checkpoint, new_meta, save_checkpoint


@dataclass
class InitResult:
    path: str
    size: str
    run_id: str
    n_params: int
    n_params_total: int
    vocab_size: int
    context: int
    seed: int
    preset: str | None = None
    sink_tokens: int = 0
    n_sink_params: int = 0
    qk_norm: bool = False


def init_checkpoint(
    out: str | os.PathLike,
    *,
    size: str | None = None,
    layers: int | None = None,
    d_model: int | None = None,
    heads: int | None = None,
    tokenizer: str | None = None,
    vocab_size: int | None = None,
    context: int | None = None,
    preset: str | None = None,
    seed: int = 0,
    run_id: str | None = None,
    sink_tokens: int = 0,
    qk_norm: bool = False,
    force: bool = False,
) -> InitResult:
    """Write a randomly initialised checkpoint (task index 0), reproducible from `seed`.

    The shape is a `size` preset or a custom `layers` and `d_model` (`heads` default d_model / 64),
    never a mix: a preset with one of them changed is refused, not half applied.

    With `preset`, the context and tokenizer default to the preset's and the checkpoint remembers
    it, so train-task, probe, eval and diagnose of this run default to that preset too. Without,
    the context defaults to the paper's 2,048.

    `sink_tokens` and `qk_norm` are the architecture options of plc.sizes.GPTConfig. The meta
    records `init_digest`, the digest of these weights, so that a later task can rebuild them from
    the config and seed and know it has them exactly (plc.mitigations.initial_state).
    """
    shape = {"--layers": layers, "--d-model": d_model, "--heads": heads}
    if size is not None and any(v is not None for v in shape.values()):
        flags = " and ".join(f for f, v in shape.items() if v is not None)
        raise PlcError(
            f"--size {size} sets the whole shape; give either --size or a custom shape (--layers "
            f"and --d-model, optionally --heads), not both (got {flags})"
        )
    check_output(out, force)
    if preset is not None:
        p = get_preset(preset)
        context = p.context if context is None else context
        if tokenizer is None and vocab_size is None:
            tokenizer = p.tokenizer
    context = 2048 if context is None else context
    identity = None
    if tokenizer is not None:
        from plc.data.tokenizers import get_tokenizer

        identity = get_tokenizer(tokenizer).identity()
        if vocab_size is not None and vocab_size < identity["vocab_size"]:
            raise PlcError(f"--vocab-size {vocab_size} is smaller than {tokenizer}'s vocabulary")
        vocab_size = vocab_size or padded_vocab(identity["vocab_size"])
    if vocab_size is None:
        raise PlcError("give --tokenizer (byte, qwen3, hf:NAME) or --vocab-size")
    if context <= 0:
        raise PlcError(f"--context must be positive, got {context}")
    config = make_config(
        size,
        layers=layers,
        d_model=d_model,
        heads=heads,
        vocab_size=vocab_size,
        context=context,
        sink_tokens=sink_tokens,
        qk_norm=qk_norm,
    )
    model = build_model(config, seed)
    name = size or size_name(config)
    # The options go into the default run id: runs with and without them write distinct files.
    options = (f"-sink{sink_tokens}" if sink_tokens else "") + ("-qknorm" if qk_norm else "")
    run_id = run_id or f"{name}{options}-s{seed}"
    meta = new_meta(config, run_id=run_id, seed=seed, size=name, tokenizer=identity, preset=preset)
    meta["init_digest"] = state_digest(model.state_dict())
    save_checkpoint(out, Checkpoint(config, model.state_dict(), meta), force=force)
    return InitResult(
        str(out),
        name,
        run_id,
        config.n_params,
        config.n_params_total,
        vocab_size,
        context,
        seed,
        preset,
        config.sink_tokens,
        config.n_sink_params,
        config.qk_norm,
    )


def build_model(config, seed: int):
    """A GPT initialised from `seed` alone (independent of any global RNG state)."""
    import torch

    from plc.model import GPT

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(config)


def state_digest(state: dict) -> str:
    """SHA-256 (first 16 hex digits) of a state dict: names, dtypes, shapes and bytes, in name order."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()[:16]


def describe_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    ckpt = load_checkpoint(Path(path))
    c, m = ckpt.config, ckpt.meta
    tok = m.get("tokenizer") or {}
    return {
        "path": str(path),
        "run_id": ckpt.run_id,
        "size": ckpt.size,
        "layers": c.n_layer,
        "d_model": c.d_model,
        "heads": c.n_head,
        "vocab_size": c.vocab_size,
        "context": c.context,
        "sink_tokens": c.sink_tokens,
        "qk_norm": c.qk_norm,
        "n_params": c.n_params,
        "n_sink_params": c.n_sink_params,
        "n_params_total": c.n_params_total,
        "paper_lr": paper_lr(c.d_model),
        "seed": m.get("seed"),
        "preset": m.get("preset"),
        "tokenizer": tok.get("name", "(none)"),
        "task_index": ckpt.task_index,
        "cycle": cycle_of(ckpt.task_index),
        "tokens_seen": int(m.get("tokens_seen", 0)),
        "history": list(m.get("history", [])),
    }
