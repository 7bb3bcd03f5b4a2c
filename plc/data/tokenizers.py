"""Tokenizers, each with a stable identity: {name, vocab_size, eos_id, fingerprint}.

The identity is stored in token stores and checkpoints so that data made with one vocabulary is
never fed to a model trained on another. Every tokenizer encodes one document to a uint32 array
(no EOS; `plc shard` appends it) and decodes ids back to text.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import unicodedata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from plc.errors import PlcError

TOKENIZERS = "byte, qwen3, hf:NAME_OR_PATH"


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> np.ndarray: ...
    def decode(self, ids) -> str: ...
    def identity(self) -> dict[str, Any]: ...


class ByteTokenizer:
    """UTF-8 bytes 0–255 and EOS = 256: no vocabulary file, every language, the CPU default."""

    name = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint32)

    def decode(self, ids) -> str:
        ids = np.asarray(ids).ravel()
        return ids[ids < 256].astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "fingerprint": hashlib.sha256(b"plc-byte-tokenizer-v1").hexdigest()[:16],
        }


# ------------------------------------------------------------------------------------- qwen3

# Qwen2/Qwen3's pre-tokenizer (tokenizer.json "Split" regex); the text is NFC-normalised first.
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN_BPE_RANKS = 151_643
# Qwen3's added tokens, ids 151643…151668, in order (tokenizer_config.json added_tokens_decoder).
QWEN3_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]
QWEN_VOCAB_RESOURCE = "dashscope/resources/qwen.tiktoken"
QWEN_INSTALL_HINT = (
    f"the qwen3 tokenizer needs Qwen's BPE vocabulary ({QWEN_VOCAB_RESOURCE}), which is not "
    "installed: run `pip install --no-deps dashscope` (it works offline afterwards)"
)


def qwen_vocab_file() -> Path | None:
    """Where the `dashscope` package keeps qwen.tiktoken, or None when it is not installed."""
    try:
        dist = importlib.metadata.distribution("dashscope")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(QWEN_VOCAB_RESOURCE)))
    return path if path.is_file() else None


@functools.lru_cache(maxsize=2)
def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=2)
def _qwen_encoding(path: Path):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    try:
        ranks = load_tiktoken_bpe(str(path))
    except Exception as e:
        raise PlcError(f"{path} is not a readable tiktoken vocabulary ({e})") from e
    if len(ranks) != QWEN_BPE_RANKS:
        raise PlcError(f"{path} has {len(ranks):,} BPE ranks, not Qwen's {QWEN_BPE_RANKS:,}")
    specials = {tok: QWEN_BPE_RANKS + i for i, tok in enumerate(QWEN3_SPECIAL_TOKENS)}
    return tiktoken.Encoding(
        "qwen3", pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )


class Qwen3Tokenizer:
    """The paper's tokenizer: Qwen's byte-level BPE (via tiktoken) plus Qwen3's 26 added tokens.

    Text that happens to contain "<|endoftext|>" is encoded as ordinary text, so a corpus can never
    inject control tokens; EOS is added by `plc shard` between documents only.
    """

    name = "qwen3"
    vocab_size = QWEN_BPE_RANKS + len(QWEN3_SPECIAL_TOKENS)  # 151,669
    eos_id = QWEN_BPE_RANKS  # <|endoftext|>

    def __init__(self) -> None:
        path = qwen_vocab_file()
        if path is None:
            raise PlcError(QWEN_INSTALL_HINT)
        self.path = path

    @property
    def _enc(self):
        return _qwen_encoding(self.path)

    def encode(self, text: str) -> np.ndarray:
        ids = self._enc.encode_ordinary(unicodedata.normalize("NFC", text))
        return np.array(ids, dtype=np.uint32)

    def decode(self, ids) -> str:
        # Ids beyond the vocabulary (the model's padding rows) are no token: drop them.
        ids = np.asarray(ids, dtype=np.int64).ravel()
        ids = ids[(ids >= 0) & (ids < self.vocab_size)].tolist()
        return self._enc.decode(ids)

    def identity(self) -> dict[str, Any]:
        specials = json.dumps(QWEN3_SPECIAL_TOKENS).encode()
        digest = hashlib.sha256(_file_sha256(self.path).encode() + specials).hexdigest()
        return {
            "name": self.name,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "fingerprint": digest[:16],
        }


# ---------------------------------------------------------------------------------------- hf


class HFTokenizer:
    """Any `transformers` tokenizer, by hub name or local folder, at a revision if given
    (`hf:NAME_OR_PATH[@REVISION]`: plc.hf.source; a local folder's revision is its subfolder)."""

    def __init__(self, name_or_path: str):
        from plc.hf.source import resolve

        folder = resolve(name_or_path, weights=False).folder
        import transformers

        transformers.logging.set_verbosity_error()  # "sequence longer than model max" is noise here
        try:
            self._tok = transformers.AutoTokenizer.from_pretrained(folder)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise PlcError(f"cannot load tokenizer hf:{name_or_path}: {first}") from e
        if self._tok.eos_token_id is None:
            raise PlcError(f"tokenizer hf:{name_or_path} has no EOS token to separate documents")
        self.name = f"hf:{name_or_path}"
        self.vocab_size = len(self._tok)
        self.eos_id = int(self._tok.eos_token_id)

    def encode(self, text: str) -> np.ndarray:
        return np.array(self._tok.encode(text, add_special_tokens=False), dtype=np.uint32)

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        ids = ids[(ids >= 0) & (ids < self.vocab_size)].tolist()
        return self._tok.decode(ids)

    def identity(self) -> dict[str, Any]:
        vocab = sorted(self._tok.get_vocab().items(), key=lambda kv: kv[1])
        digest = hashlib.sha256(json.dumps([vocab, self.eos_id]).encode()).hexdigest()
        return {
            "name": self.name,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "fingerprint": digest[:16],
        }


def get_tokenizer(spec: str) -> Tokenizer:
    """A tokenizer by name: `byte`, `qwen3`, or `hf:NAME_OR_PATH`."""
    if spec == "byte":
        return ByteTokenizer()
    if spec == "qwen3":
        return Qwen3Tokenizer()
    if spec.startswith("hf:") and len(spec) > 3:
        return HFTokenizer(spec[3:])
    raise PlcError(f"unknown tokenizer {spec!r}; choose one of {TOKENIZERS}")
