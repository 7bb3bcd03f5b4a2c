"""Tokenizers, each with a stable identity: {name, vocab_size, eos_id, fingerprint}.

The identity is stored in token stores and checkpoints so that data made with one vocabulary is
never fed to a model trained on another.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from plc.errors import PlcError


class ByteTokenizer:
    """UTF-8 bytes 0–255 and EOS = 256: no vocabulary file, every language, the CPU default."""

    name = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint32)

    def decode(self, ids) -> str:
        data = bytes(int(i) for i in ids if int(i) < 256)
        return data.decode("utf-8", errors="replace")

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "fingerprint": hashlib.sha256(b"plc-byte-tokenizer-v1").hexdigest()[:16],
        }


TOKENIZERS = "byte, qwen3, hf:NAME_OR_PATH"


def get_tokenizer(spec: str):
    """A tokenizer by name: `byte`, `qwen3`, or `hf:NAME_OR_PATH`."""
    if spec == "byte":
        return ByteTokenizer()
    raise PlcError(f"unknown tokenizer {spec!r}; choose one of {TOKENIZERS}")
