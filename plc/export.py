"""Export to Hugging Face: plc's GPT as `GPT2LMHeadModel` (the paper's architecture is GPT-2's
with exact GeLU); a model started from a Hugging Face family (`plc init --from`) in its own format,
by its own `save_pretrained` (plc.hf.adapter.export), its dropout back at the source's values."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from plc.errors import PlcError
from plc.hf.config import HFConfig
from plc.store import load_checkpoint


def export_hf(ckpt_path: str | os.PathLike, out: str | os.PathLike, force: bool = False) -> Path:
    """Write a folder that `AutoModelForCausalLM.from_pretrained(out)` loads offline: a
    `GPT2LMHeadModel` for plc's GPT, the model's own class for a Hugging Face family."""
    import torch

    out = Path(out)
    if out.exists() and not force:
        raise PlcError(f"{out} exists; pass --force to overwrite it")
    ckpt = load_checkpoint(ckpt_path)
    c = ckpt.config
    if isinstance(c, HFConfig):
        from plc.hf.adapter import export

        return _into_place(out, lambda tmp: export(c, ckpt.model, ckpt.meta, tmp))
    # GPT2LMHeadModel has neither: loading such weights would silently drop them.
    if c.sink_tokens:
        raise PlcError(
            f"{ckpt_path} has {c.sink_tokens} attention-sink tokens, which GPT-2 cannot hold; "
            "export a checkpoint initialised without --sink-tokens"
        )
    if c.qk_norm:
        raise PlcError(
            f"{ckpt_path} has QK-norm, which GPT-2 cannot hold; "
            "export a checkpoint initialised without --qk-norm"
        )
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.context,
        "n_embd": c.d_model,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": 4 * c.d_model,
        "activation_function": "gelu",  # exact erf GeLU, as plc's nn.GELU()
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
        "scale_attn_weights": True,
        "bos_token_id": None,
        "eos_token_id": (ckpt.meta.get("tokenizer") or {}).get("eos_id"),
        "plc": {"run_id": ckpt.run_id, "size": ckpt.size, "task_index": ckpt.task_index},
    }
    # HF's Conv1D stores (in, out) where nn.Linear stores (out, in).
    state = {}
    for k, v in ckpt.model.items():
        if k.endswith(".weight") and any(s in k for s in ("c_attn", "c_proj", "c_fc")):
            v = v.t()
        state[k] = v.contiguous()
    state["lm_head.weight"] = state["transformer.wte.weight"]

    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        torch.save(state, tmp / "pytorch_model.bin")

    return _into_place(out, write)


def _into_place(out: Path, write) -> Path:
    """Write the folder under a temporary name, then put it at `out` (replacing what was there)."""
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
