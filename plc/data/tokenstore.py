"""The Zarr v3 token store (`data/<lang>.zarr`): the one place that knows its format.

Group attributes: format, format_version, lang, tokenizer {name, vocab_size, eos_id, fingerprint},
source, docs/tokens per split, plc_version. Arrays `train` and `val`: 1-D uint32 token ids,
documents concatenated, each followed by EOS.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plc import __version__
from plc.errors import PlcError

STORE_FORMAT = "plc-token-store"
STORE_VERSION = 1
CHUNK_TOKENS = 1 << 20  # 4 MiB chunks: a window of seq_len+1 tokens touches at most two
# Below this size a split is read into memory once: random windows then cost a slice, not a read.
IN_MEMORY_BYTES = 2 << 30


def store_path(data_dir: str | os.PathLike, lang: str) -> Path:
    return Path(data_dir) / f"{lang}.zarr"


@dataclass
class TokenStore:
    path: Path
    attrs: dict[str, Any]
    train: Any  # zarr.Array or np.ndarray; both index like numpy
    val: Any

    @property
    def lang(self) -> str:
        return str(self.attrs.get("lang", ""))

    @property
    def tokenizer(self) -> dict[str, Any]:
        return dict(self.attrs.get("tokenizer", {}))

    def split(self, name: str) -> Any:
        if name not in ("train", "val"):
            raise ValueError(name)
        return getattr(self, name)


def open_store(path: str | os.PathLike) -> TokenStore:
    import zarr

    path = Path(path)
    if not path.exists():
        raise PlcError(f"no token store at {path} (make one with `plc shard`)")
    try:
        group = zarr.open_group(path, mode="r")
        attrs = dict(group.attrs)
        train, val = group["train"], group["val"]
    except Exception as e:
        raise PlcError(f"{path} is not a readable token store ({type(e).__name__}: {e})") from e
    if attrs.get("format") != STORE_FORMAT:
        raise PlcError(f"{path} is not a plc token store")
    if attrs.get("format_version") != STORE_VERSION:
        raise PlcError(f"{path} has store version {attrs.get('format_version')}; this plc reads 1")
    arrays = []
    for arr in (train, val):
        arrays.append(arr[:] if arr.nbytes <= IN_MEMORY_BYTES else arr)
    return TokenStore(path, attrs, *arrays)


def open_lang(data_dir: str | os.PathLike, lang: str) -> TokenStore:
    """The store of one language in a data folder, with a clear error if it is not there."""
    path = store_path(data_dir, lang)
    if not path.exists():
        have = (
            sorted(p.stem for p in Path(data_dir).glob("*.zarr")) if Path(data_dir).is_dir() else []
        )
        hint = f" (it has: {', '.join(have)})" if have else ""
        raise PlcError(
            f"language {lang!r} is not in {data_dir}{hint}; run `plc shard --lang {lang}`"
        )
    return open_store(path)


class StoreWriter:
    """Append token arrays to a new store under a temporary name; `commit` renames it into place.

    A killed writer leaves only `.<name>.partial`, which `open_store` never mistakes for a store.
    """

    def __init__(self, path: str | os.PathLike, attrs: dict[str, Any], force: bool = False):
        import zarr

        self.path = Path(path)
        if self.path.exists() and not force:
            raise PlcError(f"{self.path} exists; pass --force to overwrite it")
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        self.group = zarr.open_group(self.tmp, mode="w")
        self.arrays = {
            name: self.group.create_array(name, shape=(0,), dtype="uint32", chunks=(CHUNK_TOKENS,))
            for name in ("train", "val")
        }
        self.attrs = {"format": STORE_FORMAT, "format_version": STORE_VERSION, **attrs}
        self.counts = {"train_tokens": 0, "val_tokens": 0, "train_docs": 0, "val_docs": 0}
        self._buffers: dict[str, list[np.ndarray]] = {"train": [], "val": []}
        self._buffered = {"train": 0, "val": 0}

    def add(self, split: str, tokens: np.ndarray, docs: int = 1) -> None:
        tokens = np.asarray(tokens, dtype=np.uint32)
        self._buffers[split].append(tokens)
        self._buffered[split] += tokens.size
        self.counts[f"{split}_tokens"] += int(tokens.size)
        self.counts[f"{split}_docs"] += docs
        if self._buffered[split] >= CHUNK_TOKENS:
            self._flush(split)

    def _flush(self, split: str) -> None:
        if self._buffers[split]:
            self.arrays[split].append(np.concatenate(self._buffers[split]))
            self._buffers[split], self._buffered[split] = [], 0

    def commit(self) -> Path:
        for split in ("train", "val"):
            self._flush(split)
        self.group.attrs.update({**self.attrs, **self.counts, "plc_version": __version__})
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_store(
    path: str | os.PathLike,
    train: np.ndarray,
    val: np.ndarray,
    *,
    lang: str,
    tokenizer: dict[str, Any],
    source: str = "arrays",
    force: bool = False,
) -> Path:
    """Write a whole store from two token arrays (tests and small tools)."""
    with StoreWriter(path, {"lang": lang, "tokenizer": tokenizer, "source": source}, force) as w:
        w.add("train", train)
        w.add("val", val)
        return w.commit()
