"""Tiny random Hugging Face causal LMs of every family plc supports, saved as a user has them —
a model folder, a folder per revision, or a Hugging Face cache (snapshots and refs) read offline —
and a small byte-level BPE tokenizer for them. Nothing is downloaded."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

VOCAB = 320  # embedding rows: more than the tokenizer's 300 tokens, as real models pad theirs
TOKENIZER_SIZE = 300
FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2", "qwen3", "olmo", "olmo2")


def hf_config(family: str, *, width: int = 32, layers: int = 2, vocab: int = VOCAB):
    import transformers as t

    heads = width // 8
    shape = dict(
        vocab_size=vocab,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=3 * width // 2,
        max_position_embeddings=64,
        eos_token_id=0,
        bos_token_id=0,
        pad_token_id=None,
    )
    gqa = dict(num_key_value_heads=max(1, heads // 2))
    if family == "gpt2":
        return t.GPT2Config(
            vocab_size=vocab,
            n_embd=width,
            n_layer=layers,
            n_head=heads,
            n_positions=64,
            eos_token_id=0,
            bos_token_id=0,
        )
    if family == "gpt_neox":  # Pythia's: untied head, parallel residual, partial rotary
        return t.GPTNeoXConfig(**shape, tie_word_embeddings=False)
    if family == "llama":
        return t.LlamaConfig(**shape, **gqa)
    if family == "qwen2":
        return t.Qwen2Config(**shape, **gqa, tie_word_embeddings=True)
    if family == "qwen3":
        return t.Qwen3Config(**shape, **gqa, head_dim=8)
    if family == "olmo":
        return t.OlmoConfig(**shape)
    if family == "olmo2":
        return t.Olmo2Config(**shape, **gqa)
    raise ValueError(family)


def tokenizer_dir(path: Path, size: int = TOKENIZER_SIZE) -> Path:
    """A byte-level BPE of `size` tokens (EOS id 0) trained on the embedded corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from plc.data.sources import embedded_languages, open_source

    docs = [
        d for lang in embedded_languages() for d in open_source("embedded", lang, 0).documents()
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(docs[:200], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.save_pretrained(path)
    return path


def save_model(
    family: str,
    path: Path,
    *,
    seed: int = 0,
    tokenizer: Path | None = None,
    dtype: str | None = None,
    **shape,
) -> Path:
    """A randomly initialised model of `family` saved in `path` (with the tokenizer's files)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(family, **shape))
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
    model.save_pretrained(path)
    if tokenizer is not None:
        for f in tokenizer.iterdir():
            shutil.copy(f, path / f.name)
    return path


def hub_cache(cache: Path, repo: str, revisions: dict[str, Path]) -> Path:
    """The Hugging Face cache layout of `repo` with the model folders of `revisions`: each a
    snapshot under its commit, each revision a ref naming it (as `from_pretrained` leaves them)."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    for revision, folder in revisions.items():
        commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
        shutil.copytree(folder, storage / "snapshots" / commit)
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / revision).write_text(commit)
    return cache


def offline_env(cache: Path) -> dict[str, str]:
    """The environment of a plc process that reads only this cache and never the network."""
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
