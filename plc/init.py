"""Fresh checkpoints (`plc init`) and their description (`plc inspect`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plc.errors import PlcError
from plc.hf.config import HFConfig
from plc.presets import get_preset
from plc.protocol import PRETRAIN_LANG, cycle_of
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
    source: str | None = None  # hf:ID_OR_PATH[@REVISION] of a model started from
    architecture: str | None = None
    task_index: int = 0
    tokens_seen: int = 0


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
    source: str | None = None,
    along_pretraining: bool = False,
    tokens_per_step: int | None = None,
    force: bool = False,
) -> InitResult:
    """Write a randomly initialised checkpoint (task index 0), reproducible from `seed`; or with
    `source` (`hf:ID_OR_PATH[@REVISION]`) a pretrained Hugging Face model's (`init_from_hf`).

    The shape is a `size` preset or a custom `layers` and `d_model` (`heads` default d_model / 64),
    never a mix: a preset with one of them changed is refused, not half applied.

    With `preset`, the context and tokenizer default to the preset's and the checkpoint remembers
    it, so train-task, probe, eval and diagnose of this run default to that preset too. Without,
    the context defaults to the paper's 2,048.

    `sink_tokens` and `qk_norm` are the architecture options of plc.sizes.GPTConfig. The meta
    records `init_digest`, the digest of these weights, so that a later task can rebuild them from
    the config and seed and know it has them exactly (plc.mitigations.initial_state).
    """
    if source is not None:
        gpt_only = {
            "--size": size,
            "--layers": layers,
            "--d-model": d_model,
            "--heads": heads,
            "--vocab-size": vocab_size,
            "--context": context,
            "--sink-tokens": sink_tokens or None,
            "--qk-norm": qk_norm or None,
        }
        given = [f for f, v in gpt_only.items() if v is not None]
        if given:
            raise PlcError(
                f"--from takes the architecture from the model; {' and '.join(given)} "
                "shape plc's own GPT only"
            )
        return init_from_hf(
            out,
            source,
            tokenizer=tokenizer,
            preset=preset,
            seed=seed,
            run_id=run_id,
            along_pretraining=along_pretraining,
            tokens_per_step=tokens_per_step,
            force=force,
        )
    if along_pretraining or tokens_per_step is not None:
        raise PlcError("--along-pretraining and --tokens-per-step go with --from hf:ID@REVISION")
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


def init_from_hf(
    out: str | os.PathLike,
    source: str,
    *,
    tokenizer: str | None = None,
    preset: str | None = None,
    seed: int = 0,
    run_id: str | None = None,
    along_pretraining: bool = False,
    tokens_per_step: int | None = None,
    force: bool = False,
) -> InitResult:
    """`plc init --from hf:ID_OR_PATH[@REVISION]`: a plc checkpoint of a Hugging Face causal LM.

    The weights are stored as the model stores them (their dtype; trained in fp32); the meta
    records the source, revision, the Hub snapshot's commit, the architecture and the dropout set
    to 0 (`hf`), the tokenizer (the model's own unless `tokenizer` names another: its vocabulary
    must fit the embedding), and `init_digest`, the digest of these weights: θ₀ of any run
    started here (L2-init pulls towards the pretrained weights). The size is the model's name.

    By default the checkpoint is the start of plc's protocol (task index 0, no tokens seen: the
    paper's cycle from a pretrained model). `along_pretraining` records it instead as the point of
    its suite's pretraining the revision is (`plc plan checkpoints`): task index = the revision's
    step, tokens seen = step × `tokens_per_step` (or the tokens the revision's name gives, as
    OLMo's `…-tokens4B`), one task 'pretrain' in its history; probes of a suite's revisions are
    then one run's series along pretraining.
    """
    from plc.data.tokenizers import get_tokenizer
    from plc.hf.adapter import import_model
    from plc.hf.source import parse_source, resolve

    src = parse_source(source)
    if tokens_per_step is not None and tokens_per_step <= 0:
        raise PlcError(f"--tokens-per-step must be positive, got {tokens_per_step}")
    check_output(out, force)
    pretrained = _pretraining_tokens(src, tokens_per_step)
    if along_pretraining and (src.step is None or pretrained is None):
        raise PlcError(
            f"--along-pretraining: {src.spec} "
            + (
                "names no pretraining step (a revision such as step1000)"
                if src.step is None
                else "gives no token count: pass --tokens-per-step (Pythia: 2097152)"
            )
        )
    resolved = resolve(src)
    config, state, record = import_model(resolved)
    record["tokens"] = pretrained
    tok_spec = tokenizer or f"hf:{resolved.folder}"
    try:
        identity = get_tokenizer(tok_spec).identity()
    except PlcError as e:
        if tokenizer is not None:
            raise
        raise PlcError(
            f"{src.spec} comes without a tokenizer plc can load ({e}); pass --tokenizer"
        ) from e
    if tokenizer is None:  # named as a user names it, not by the cache folder it was read from
        identity["name"] = src.spec
    if identity["vocab_size"] > config.vocab_size:
        raise PlcError(
            f"tokenizer {identity['name']} has {identity['vocab_size']:,} tokens but "
            f"{src.spec} embeds only {config.vocab_size:,}: not the model's tokenizer"
        )
    if preset is not None:
        get_preset(preset)
    name = src.model_name
    run_id = run_id or "-".join([name, *([src.revision] if src.revision else []), f"s{seed}"])
    meta = new_meta(config, run_id=run_id, seed=seed, size=name, tokenizer=identity, preset=preset)
    meta["hf"] = record
    meta["init_digest"] = state_digest(state)
    meta["init_path"] = str(Path(out).resolve())
    if along_pretraining:
        meta["task_index"], meta["tokens_seen"] = src.step, pretrained
        step = {"lang": PRETRAIN_LANG, "revision": src.revision, "steps": src.step}
        meta["history"] = [{**step, "tokens": pretrained, "pretraining": True}]
    save_checkpoint(out, Checkpoint(config, state, meta), force=force)
    return InitResult(
        str(out),
        name,
        run_id,
        config.n_params,
        config.n_params_total,
        config.vocab_size,
        config.context,
        seed,
        preset,
        qk_norm=config.qk_norm,
        source=src.spec,
        architecture=config.architecture,
        task_index=int(meta["task_index"]),
        tokens_seen=int(meta["tokens_seen"]),
    )


def _pretraining_tokens(src, tokens_per_step: int | None) -> int | None:
    """The tokens a revision was pretrained on: step × tokens per step, or what its name says."""
    if tokens_per_step is not None and src.step is not None:
        return src.step * tokens_per_step
    return src.tokens_in_name


def build_model(config: Any, seed: int) -> Any:
    """A freshly initialised model of `config` drawn from `seed` alone (independent of any
    global RNG state): plc's GPT, or the Hugging Face architecture with its family's init."""
    import torch

    if isinstance(config, HFConfig):
        from plc.hf.adapter import build

        return build(config, None, seed)
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
    hf = m.get("hf") or {}
    origin = {}
    if isinstance(c, HFConfig):
        origin = {
            "source": hf.get("source"),
            "commit": hf.get("commit"),
            "architecture": c.architecture,
            "mlp_width": c.mlp_width,
            "kv_heads": c.n_kv_head,
        }
    return {
        "path": str(path),
        "run_id": ckpt.run_id,
        "size": ckpt.size,
        **origin,
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
