"""The Zarr v3 token store (`data/<lang>.zarr`): the one place that knows its format.

Group attributes: format, format_version, lang, tokenizer {name, vocab_size, eos_id, fingerprint},
source, docs/tokens per split, plc_version; a synthetic store also `entropy_rate` (the floor of the
next-token loss on it, nats per token) and its generator's parameters (e.g. `markov`). Arrays `train` and `val`: 1-D uint32 token ids,
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
from plc.data.tokenizers import get_tokenizer
from plc.errors import PlcError

STORE_FORMAT = "plc-token-store"
STORE_VERSION = 1
CHUNK_TOKENS = 1 << 20  # 4 MiB chunks: a window of seq_len+1 tokens touches at most two
# Below this size a split is read into memory once: random windows then cost a slice, not a read.
# Larger splits are read window by window from the raw chunk files (see RawTokens).
IN_MEMORY_BYTES = 2 << 30


def store_path(data_dir: str | os.PathLike, lang: str) -> Path:
    return Path(data_dir) / f"{lang}.zarr"


@dataclass
class TokenStore:
    path: Path
    attrs: dict[str, Any]
    train: Any  # np.ndarray, RawTokens or zarr.Array: all slice like a 1-D numpy array
    val: Any

    @property
    def lang(self) -> str:
        return str(self.attrs.get("lang", ""))

    @property
    def tokenizer(self) -> dict[str, Any]:
        return dict(self.attrs.get("tokenizer", {}))

    @property
    def entropy_rate(self) -> float | None:
        """The loss floor in nats per token when the store's source has one (markov:), else None."""
        rate = self.attrs.get("entropy_rate")
        return None if rate is None else float(rate)


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
        if arr.nbytes <= IN_MEMORY_BYTES:
            arrays.append(arr[:])
        else:
            arrays.append(RawTokens(arr, path) if RawTokens.readable(arr) else arr)
    return TokenStore(path, attrs, *arrays)


class RawTokens:
    """A large split read straight from the raw chunk files of an uncompressed Zarr array.

    `plc shard` writes chunks without compression, so a chunk file is the little-endian uint32
    tokens themselves: a window costs one `pread` (two across a chunk boundary) instead of a
    Zarr call that decodes a whole 4 MiB chunk, and nothing is held in memory.
    """

    def __init__(self, arr, store_dir: Path):
        self.shape = tuple(arr.shape)
        self.dtype = np.dtype(np.uint32)
        self.nbytes = int(arr.nbytes)
        self._chunk = int(arr.chunks[0])
        self._fill = np.uint32(arr.metadata.fill_value or 0)
        self._key = arr.metadata.encode_chunk_key
        self._dir = Path(store_dir) / arr.path

    @staticmethod
    def readable(arr) -> bool:
        from zarr.codecs import BytesCodec
        from zarr.storage import LocalStore

        return (
            isinstance(arr.store, LocalStore)
            and arr.ndim == 1
            and arr.dtype == np.uint32
            and not arr.compressors
            and not arr.filters
            and isinstance(arr.serializer, BytesCodec)
            and str(getattr(arr.serializer.endian, "value", "little")) == "little"
        )

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("RawTokens supports slices only")
        start, stop, step = key.indices(self.shape[0])
        if step != 1:
            raise TypeError("RawTokens supports contiguous slices only")
        return self._read(start, max(start, stop))

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Rows starts[i] … starts[i]+length−1, shape (len(starts), length)."""
        out = np.empty((len(starts), length), dtype=np.uint32)
        for i, s in enumerate(starts.tolist()):
            out[i] = self._read(s, s + length)
        return out

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.full(stop - start, self._fill, dtype=np.uint32)
        pos = start
        while pos < stop:
            index, offset = divmod(pos, self._chunk)
            n = min(stop - pos, self._chunk - offset)
            try:
                fd = os.open(self._dir / self._key((index,)), os.O_RDONLY)
            except FileNotFoundError:  # Zarr skips chunks that hold only the fill value
                pass
            else:
                try:
                    data = os.pread(fd, 4 * n, 4 * offset)
                finally:
                    os.close(fd)
                out[pos - start : pos - start + n] = np.frombuffer(data, dtype="<u4")
            pos += n
        return out


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
        # Uncompressed: token ids barely compress, and raw chunks let RawTokens read windows.
        self.arrays = {
            name: self.group.create_array(
                name, shape=(0,), dtype="uint32", chunks=(CHUNK_TOKENS,), compressors=None
            )
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
        if self.path.is_dir():
            shutil.rmtree(self.path)
        elif self.path.exists():
            self.path.unlink()
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


@dataclass
class StoreInfo:
    path: str
    lang: str
    source: str
    tokenizer: dict[str, Any]
    train_tokens: int
    val_tokens: int
    train_docs: int
    val_docs: int
    plc_version: str
    attrs: dict[str, Any]
    sample_ids: list[int]  # the first tokens of train
    sample_text: str | None  # decoded, when this machine has the same tokenizer
    sample_note: str  # why there is no decoded text
    entropy_rate: float | None  # the loss floor, nats per token, of a synthetic store


def describe_store(path: str | os.PathLike, sample_tokens: int = 64) -> StoreInfo:
    """Attributes, token and document counts, and the first train tokens decoded (`plc data info`)."""
    store = open_store(path)
    attrs, tok = store.attrs, store.tokenizer
    ids = [int(i) for i in np.asarray(store.train[: max(sample_tokens, 0)])]
    text, note = None, ""
    try:
        here = get_tokenizer(str(tok.get("name")))
        if here.identity()["fingerprint"] == tok.get("fingerprint"):
            text = here.decode(ids)
        else:
            note = f"the tokenizer {tok.get('name')!r} here has another vocabulary"
    except PlcError as e:
        note = str(e)
    return StoreInfo(
        str(path),
        store.lang,
        str(attrs.get("source", "")),
        tok,
        int(store.train.shape[0]),
        int(store.val.shape[0]),
        int(attrs.get("train_docs", 0)),
        int(attrs.get("val_docs", 0)),
        str(attrs.get("plc_version", "")),
        attrs,
        ids,
        text,
        note,
        store.entropy_rate,
    )
