"""The Zarr v3 token store (`data/<lang>.zarr`): the one place that knows its format.

Group attributes: format, format_version, lang, tokenizer {name, vocab_size, eos_id, fingerprint},
source, docs/tokens per split, plc_version; a synthetic store also `entropy_rate` (the floor of the
next-token loss on it, nats per token) and its generator's parameters (e.g. `markov`).

Format 2 (written now): groups `train` and `val`, each of arrays `0` … `parts − 1` whose
concatenation is the split (one array unless the store was sharded in parts and merged): 1-D
token ids, documents concatenated, each followed by EOS, in the narrowest unsigned dtype that holds
the vocabulary (uint16 up to 65,536 ids, else uint32), Zarr v3 sharded: one file per
SHARD_TOKENS tokens holding blosc-zstd (byte-shuffled) chunks of CHUNK_TOKENS tokens and an index.
Format 1 (read only): arrays `train` and `val`, uint32, uncompressed chunk files of 2^20 tokens.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plc import __version__
from plc.data.tokenizers import get_tokenizer
from plc.errors import PlcError

STORE_FORMAT = "plc-token-store"
STORE_VERSION = 2
READ_VERSIONS = (1, 2)
SPLITS = ("train", "val")
# A random window of seq_len + 1 tokens decodes one chunk (two across a boundary): 32 Ki tokens
# decode in ~0.3 ms, and blosc compresses them as well as 4× larger chunks (benchmarks/bench_data.py).
CHUNK_TOKENS = 1 << 15
# One file per 128 Mi tokens: a 100B-token language is ~750 files, not ~95,000.
SHARD_TOKENS = 1 << 27
# blosc-zstd with byte shuffle at level 1: 2.10 bytes a Qwen3 token (0.66 a byte token) on the
# embedded corpus, as small as zstd-3 or ids packed into 18 bits and faster to decode; level 5 saves
# 2 % for 5× the compression time (39M → 7M Qwen3 tokens/s a core: a shard's one writer would
# then be slower than 2 tokenizer processes). benchmarks/bench_data.py --only codecs.
BLOSC = {"cname": "zstd", "clevel": 1, "shuffle": "shuffle"}
# A split is read into memory only when small (decoded): random windows then cost a slice. Larger
# splits are read window by window from their files (8 languages on 8 ranks: ≤ 4 GiB a node).
IN_MEMORY_BYTES = 64 << 20
_EMPTY = np.uint64(2**64 - 1)  # the shard index's (offset, nbytes) of a chunk that was not written


def store_path(data_dir: str | os.PathLike, lang: str) -> Path:
    return Path(data_dir) / f"{lang}.zarr"


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every id of a vocabulary."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def store_attrs(path: str | os.PathLike) -> dict[str, Any] | None:
    """The group attributes of a plc token store at `path`, or None if it is not one."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) and attrs.get("format") == STORE_FORMAT else None


def check_replaceable(path: str | os.PathLike, force: bool) -> Path:
    """Refuse an existing `path` without --force, and with it anything but a token store.

    --force replaces what `plc shard` makes, never a folder or file it did not make."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return path
    if not force:
        raise PlcError(f"{path} exists; pass --force to overwrite it")
    if store_attrs(path) is None and not (path.is_dir() and not any(path.iterdir())):
        raise PlcError(
            f"{path} exists and is not a token store; --force replaces only token stores, so "
            "move it away or choose another --out"
        )
    return path


@dataclass
class TokenStore:
    path: Path
    attrs: dict[str, Any]
    train: Any  # np.ndarray or a reader (RawTokens, ShardedTokens, ConcatTokens, zarr.Array)
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
    except Exception as e:
        raise PlcError(f"{path} is not a readable token store ({type(e).__name__}: {e})") from e
    if attrs.get("format") != STORE_FORMAT:
        raise PlcError(f"{path} is not a plc token store")
    version = attrs.get("format_version")
    if version not in READ_VERSIONS:
        raise PlcError(f"{path} has store version {version}; this plc reads versions 1 and 2")
    opener = _open_split_v1 if version == 1 else _open_split_v2
    try:
        train, val = (opener(group, path, split, attrs) for split in SPLITS)
    except PlcError:
        raise
    except Exception as e:
        raise PlcError(f"{path} is not a readable token store ({type(e).__name__}: {e})") from e
    return TokenStore(path, attrs, train, val)


def _open_split_v1(group, path: Path, split: str, attrs: dict[str, Any]):
    arr = group[split]
    reader = RawTokens(arr, path, split) if RawTokens.readable(arr) else None
    if arr.nbytes > IN_MEMORY_BYTES:
        return reader or arr
    if reader is not None:
        return reader[:]
    try:
        return arr[:]
    except Exception as e:
        raise _corrupt(path, split, "a chunk", f"{type(e).__name__}: {e}") from e


def _open_split_v2(group, path: Path, split: str, attrs: dict[str, Any]):
    parts = int(attrs.get("parts", 1))
    pieces = [ShardedTokens(group[split][str(i)], path, f"{split}/{i}") for i in range(parts)]
    tokens = pieces[0] if parts == 1 else ConcatTokens(pieces)
    return tokens[:] if tokens.nbytes <= IN_MEMORY_BYTES else tokens


def _corrupt(store: Path, split: str, where: str, why: str) -> PlcError:
    return PlcError(
        f"token store {store} is damaged: {split} {where} {why}; shard it again (`plc shard "
        "--force`) or restore it"
    )


class _Reader:
    """A split (or part of one) read from its files: 1-D slices and batches of windows."""

    shape: tuple[int]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError(f"{type(self).__name__} supports slices only")
        start, stop, step = key.indices(self.shape[0])
        if step != 1:
            raise TypeError(f"{type(self).__name__} supports contiguous slices only")
        return self._read(start, max(start, stop))

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Rows starts[i] … starts[i]+length−1, shape (len(starts), length), in the store's dtype."""
        out = np.empty((len(starts), length), dtype=self.dtype)
        for i, s in enumerate(np.asarray(starts).tolist()):
            out[i] = self._read(s, s + length)
        return out

    def _read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError


class RawTokens(_Reader):
    """A large format-1 split read straight from its raw chunk files (no compression): a window
    costs one `pread` (two across a chunk boundary), and nothing is held in memory. The last
    files used stay open, so a batch does not open a file per window when windows share one."""

    OPEN_FILES = 32

    def __init__(self, arr, store_dir: Path, split: str = "train"):
        self.shape = tuple(arr.shape)
        self.dtype = np.dtype(np.uint32)
        self._chunk = int(arr.chunks[0])
        self._fill = np.uint32(arr.metadata.fill_value or 0)
        self._key = arr.metadata.encode_chunk_key
        self._store, self._split = Path(store_dir), split
        self._dir = Path(store_dir) / arr.path
        self._fds: OrderedDict[int, int | None] = OrderedDict()
        self._lock = threading.Lock()

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

    def _fd(self, index: int) -> int | None:
        """An open descriptor of chunk file `index`, None where Zarr wrote none (all fill)."""
        if index in self._fds:
            self._fds.move_to_end(index)
            return self._fds[index]
        try:
            fd = os.open(self._dir / self._key((index,)), os.O_RDONLY)
        except FileNotFoundError:  # Zarr skips chunks that hold only the fill value
            fd = None
        self._fds[index] = fd
        if len(self._fds) > self.OPEN_FILES:
            old = self._fds.popitem(last=False)[1]
            if old is not None:
                os.close(old)
        return fd

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.full(stop - start, self._fill, dtype=np.uint32)
        pos = start
        while pos < stop:
            index, offset = divmod(pos, self._chunk)
            n = min(stop - pos, self._chunk - offset)
            with self._lock:
                fd = self._fd(index)
                data = b"" if fd is None else os.pread(fd, 4 * n, 4 * offset)
            if fd is not None:
                if len(data) != 4 * n:
                    raise _corrupt(
                        self._store, self._split, f"chunk {self._key((index,))}",
                        f"is truncated ({len(data)} of {4 * n} bytes at byte {4 * offset})",
                    )  # fmt: skip
                out[pos - start : pos - start + n] = np.frombuffer(data, dtype="<u4")
            pos += n
        return out

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            if fd is not None:
                os.close(fd)


def _layout(dtype: np.dtype, chunk: int) -> dict[str, Any]:
    """The sharding codec of a format-2 array, as Zarr writes it into zarr.json."""
    return {
        "name": "sharding_indexed",
        "configuration": {
            "chunk_shape": [chunk],
            "codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {
                    "name": "blosc",
                    "configuration": {"typesize": dtype.itemsize, **BLOSC, "blocksize": 0},
                },
            ],
            "index_codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "crc32c"},
            ],
            "index_location": "end",
        },
    }


class ShardedTokens(_Reader):
    """A format-2 array read from its shard files without Zarr: each file is memory-mapped once
    (hundreds per store; the page cache is shared by every rank of a node) and its index checked
    once; a batch of windows decodes each chunk it touches once."""

    def __init__(self, arr, store_dir: Path, label: str):
        self._store, self._label = Path(store_dir), label
        self._split = label.split("/")[0]
        meta = arr.metadata.to_dict()
        layout = json.loads(json.dumps(meta["codecs"]))  # tuples → lists, as in zarr.json
        with contextlib.suppress(KeyError, IndexError, TypeError):  # any blosc settings decode
            layout[0]["configuration"]["codecs"][1]["configuration"].update(BLOSC, blocksize=0)
        self.dtype = np.dtype(meta["data_type"])
        shard = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        try:
            chunk = int(layout[0]["configuration"]["chunk_shape"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            chunk = 0
        if (
            arr.ndim != 1
            or self.dtype not in (np.uint16, np.uint32)
            or chunk <= 0
            or shard % chunk
            or layout != [_layout(self.dtype, chunk)]
        ):
            raise PlcError(f"{store_dir}: array {label} is not laid out as plc shard writes it")
        self.shape = tuple(arr.shape)
        self._chunk = chunk
        self._per_shard = shard // chunk
        self._key = arr.metadata.encode_chunk_key
        self._dir = Path(store_dir) / arr.path
        self._shards: dict[int, tuple[mmap.mmap, np.ndarray]] = {}
        self._lock = threading.Lock()

    def _damaged(self, shard: int, why: str) -> PlcError:
        return _corrupt(self._store, self._split, f"file {self._label}/{self._key((shard,))}", why)

    def _shard(self, shard: int) -> tuple[mmap.mmap, np.ndarray]:
        with self._lock:
            if shard in self._shards:
                return self._shards[shard]
            import google_crc32c

            index_bytes = 16 * self._per_shard
            try:
                fd = os.open(self._dir / self._key((shard,)), os.O_RDONLY)
            except FileNotFoundError:
                raise self._damaged(shard, "is missing") from None
            try:
                size = os.fstat(fd).st_size
                if size < index_bytes + 4:
                    raise self._damaged(shard, f"is truncated ({size} bytes)")
                mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
            raw = mm[size - index_bytes - 4 : size - 4]
            if np.uint32(google_crc32c.value(raw)).tobytes() != mm[size - 4 :]:
                raise self._damaged(shard, "has a corrupt index (checksum mismatch)")
            index = np.frombuffer(raw, dtype="<u8").reshape(self._per_shard, 2)
            data_end = size - index_bytes - 4
            written = index[:, 0] != _EMPTY
            if (index[written, 0] + index[written, 1] > data_end).any():
                raise self._damaged(shard, "is truncated (its index points past its data)")
            self._shards[shard] = (mm, index)
            return mm, index

    def _decode(self, c: int) -> np.ndarray:
        """Chunk c, all CHUNK_TOKENS of it (the last chunk is padded with zeros)."""
        import numcodecs.blosc

        shard, j = divmod(c, self._per_shard)
        mm, index = self._shard(shard)
        offset, nbytes = index[j]
        if offset == _EMPTY:
            return np.zeros(self._chunk, dtype=self.dtype)
        try:
            data = numcodecs.blosc.decompress(mm[int(offset) : int(offset + nbytes)])
        except Exception as e:
            raise self._damaged(shard, f"has a corrupt chunk {j} ({e})") from e
        if len(data) != self._chunk * self.dtype.itemsize:
            raise self._damaged(shard, f"has a chunk {j} of the wrong size ({len(data)} bytes)")
        return np.frombuffer(data, dtype=self.dtype.newbyteorder("<"))

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty(stop - start, dtype=self.dtype)
        pos = start
        while pos < stop:
            c, offset = divmod(pos, self._chunk)
            n = min(stop - pos, self._chunk - offset)
            out[pos - start : pos - start + n] = self._decode(c)[offset : offset + n]
            pos += n
        return out

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        starts = np.asarray(starts, dtype=np.int64)
        out = np.empty((len(starts), length), dtype=self.dtype)
        chunks: dict[int, np.ndarray] = {}
        # In start order, so each chunk is decoded once per batch and dropped once passed.
        for i in np.argsort(starts, kind="stable").tolist():
            s = int(starts[i])
            first, last = s // self._chunk, (s + length - 1) // self._chunk
            for c in [c for c in chunks if c < first]:
                del chunks[c]
            for c in range(first, last + 1):
                if c not in chunks:
                    chunks[c] = self._decode(c)
            if first == last:
                o = s - first * self._chunk
                out[i] = chunks[first][o : o + length]
            else:
                joined = np.concatenate([chunks[c] for c in range(first, last + 1)])
                o = s - first * self._chunk
                out[i] = joined[o : o + length]
        return out


class ConcatTokens(_Reader):
    """The pieces of a split written in parts, read as their concatenation."""

    def __init__(self, pieces: list[_Reader]):
        self.pieces = pieces
        self.dtype = np.result_type(*[p.dtype for p in pieces])
        self.ends = np.cumsum([len(p) for p in pieces])
        self.shape = (int(self.ends[-1]),)

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty(stop - start, dtype=self.dtype)
        pos = start
        while pos < stop:
            k = int(np.searchsorted(self.ends, pos, side="right"))
            begin = int(self.ends[k - 1]) if k else 0
            n = min(stop, int(self.ends[k])) - pos
            out[pos - start : pos - start + n] = self.pieces[k][pos - begin : pos - begin + n]
            pos += n
        return out

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        starts = np.asarray(starts, dtype=np.int64)
        out = np.empty((len(starts), length), dtype=self.dtype)
        first = np.searchsorted(self.ends, starts, side="right")
        last = np.searchsorted(self.ends, starts + length - 1, side="right")
        for k, piece in enumerate(self.pieces):
            rows = np.flatnonzero((first == k) & (last == k))
            if rows.size:
                begin = int(self.ends[k - 1]) if k else 0
                out[rows] = piece.windows(starts[rows] - begin, length)
        for i in np.flatnonzero(first != last).tolist():
            out[i] = self._read(int(starts[i]), int(starts[i]) + length)
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


class _ArrayWriter:
    """One format-2 array written shard file by shard file: each chunk is compressed as it fills
    and appended to the open shard, whose index is written when it is full. No Zarr append (no
    read-modify-write of a shard, no listing of chunks) and memory for one chunk."""

    def __init__(self, group, name: str, dtype: np.dtype, root: Path):
        import numcodecs
        from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec

        self.dtype = dtype
        self.arr = group.create_array(
            name,
            shape=(0,),
            dtype=dtype,
            chunks=(SHARD_TOKENS,),
            serializer=ShardingCodec(
                chunk_shape=(CHUNK_TOKENS,),
                codecs=[BytesCodec(endian="little"), BloscCodec(typesize=dtype.itemsize, **BLOSC)],
                index_codecs=[BytesCodec(endian="little"), Crc32cCodec()],
                index_location="end",
            ),
            compressors=None,
            filters=None,
            fill_value=0,
        )
        self.dir = root / self.arr.path
        self.codec = numcodecs.Blosc(
            cname=BLOSC["cname"], clevel=BLOSC["clevel"], shuffle=numcodecs.Blosc.SHUFFLE,
            typesize=dtype.itemsize,
        )  # fmt: skip
        self.per_shard = SHARD_TOKENS // CHUNK_TOKENS
        self.buf = np.zeros(CHUNK_TOKENS, dtype=dtype.newbyteorder("<"))
        self.filled = self.n = self.shard = self.pos = self.j = 0
        self.file = None
        self.index = np.full((self.per_shard, 2), _EMPTY, dtype="<u8")

    def write(self, tokens: np.ndarray) -> None:
        i = 0
        while i < tokens.size:
            k = min(CHUNK_TOKENS - self.filled, tokens.size - i)
            self.buf[self.filled : self.filled + k] = tokens[i : i + k]
            self.filled += k
            i += k
            if self.filled == CHUNK_TOKENS:
                self._emit()
        self.n += tokens.size

    def _emit(self) -> None:
        if self.file is None:
            path = self.dir / self.arr.metadata.encode_chunk_key((self.shard,))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "wb")
            self.index[:], self.pos, self.j = _EMPTY, 0, 0
        self.buf[self.filled :] = 0  # the last chunk of an array is padded with the fill value
        data = self.codec.encode(self.buf)
        self.file.write(data)
        self.index[self.j] = (self.pos, len(data))
        self.pos += len(data)
        self.j += 1
        self.filled = 0
        if self.j == self.per_shard:
            self._close_shard()

    def _close_shard(self) -> None:
        import google_crc32c

        raw = self.index.tobytes()
        self.file.write(raw + np.uint32(google_crc32c.value(raw)).tobytes())
        self.file.close()
        self.file = None
        self.shard += 1

    def finish(self) -> None:
        if self.filled:
            self._emit()
        if self.file is not None:
            self._close_shard()
        self.arr.resize((self.n,))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class StoreWriter:
    """Append token arrays to a new store under a temporary name; `commit` renames it into place.

    A killed writer leaves only `.<name>.partial`, which `open_store` never mistakes for a store.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        attrs: dict[str, Any],
        force: bool = False,
        vocab_size: int | None = None,
    ):
        """`vocab_size` (default: the tokenizer's) sets the dtype of the ids."""
        import zarr

        self.path, self.force = check_replaceable(path, force), force
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        self.group = zarr.open_group(self.tmp, mode="w")
        vocab = attrs.get("tokenizer", {}).get("vocab_size", 1 << 32)
        self.dtype = token_dtype(int(vocab if vocab_size is None else vocab_size))
        self.arrays = {
            split: _ArrayWriter(self.group.create_group(split), "0", self.dtype, self.tmp)
            for split in SPLITS
        }
        self.attrs = {"format": STORE_FORMAT, "format_version": STORE_VERSION, "parts": 1, **attrs}
        self.counts = {"train_tokens": 0, "val_tokens": 0, "train_docs": 0, "val_docs": 0}
        # Documents are added one by one; they reach the array writer a chunk's worth at a time.
        self._buffers: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
        self._buffered = dict.fromkeys(SPLITS, 0)

    def add(self, split: str, tokens: np.ndarray, docs: int = 1) -> None:
        tokens = np.asarray(tokens)
        self._buffers[split].append(tokens)
        self._buffered[split] += tokens.size
        self.counts[f"{split}_tokens"] += int(tokens.size)
        self.counts[f"{split}_docs"] += docs
        if self._buffered[split] >= CHUNK_TOKENS:
            self._flush(split)

    def _flush(self, split: str) -> None:
        if not self._buffers[split]:
            return
        tokens = np.concatenate(self._buffers[split])
        self._buffers[split], self._buffered[split] = [], 0
        if tokens.size and (tokens.min() < 0 or tokens.max() > np.iinfo(self.dtype).max):
            raise PlcError(
                f"token ids {tokens.min()}…{tokens.max()} do not fit the store's {self.dtype} "
                f"(vocabulary {self.attrs.get('tokenizer', {}).get('vocab_size')})"
            )
        self.arrays[split].write(tokens)

    def commit(self) -> Path:
        for split, writer in self.arrays.items():
            self._flush(split)
            writer.finish()
        self.group.attrs.update({**self.attrs, **self.counts, "plc_version": __version__})
        _replace(self.tmp, self.path, self.force)
        return self.path

    def abort(self) -> None:
        for writer in self.arrays.values():
            writer.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def _replace(tmp: Path, path: Path, force: bool) -> None:
    """Rename the finished `tmp` onto `path`; an old store there is moved aside, then removed."""
    check_replaceable(path, force)  # again: something may have appeared there meanwhile
    old = None
    if path.exists() or path.is_symlink():
        old = path.with_name(f".{path.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()


def merge_parts(
    path: str | os.PathLike, parts: list[Path], attrs: dict[str, Any], force: bool
) -> Path:
    """One store at `path` from part stores (each written by StoreWriter), their splits in order.

    Cheap: the parts' shard files are hard-linked (copied only where the file system cannot link)
    into the new store, not rewritten; the parts stay intact until the store is in place, so a
    merge that fails leaves them for the next try."""
    import zarr

    path = check_replaceable(path, force)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(tmp, mode="w")
    counts = {"train_tokens": 0, "val_tokens": 0, "train_docs": 0, "val_docs": 0}
    for split in SPLITS:
        group.create_group(split)
        for i, part in enumerate(parts):
            _link_tree(part / split / "0", tmp / split / str(i))
    for part in parts:
        part_attrs = store_attrs(part) or {}
        for key in counts:
            counts[key] += int(part_attrs.get(key, 0))
    group.attrs.update(
        {
            "format": STORE_FORMAT,
            "format_version": STORE_VERSION,
            **attrs,
            "parts": len(parts),
            **counts,
            "plc_version": __version__,
        }
    )
    _replace(tmp, path, force)
    return path


def _link_tree(src: Path, dst: Path) -> None:
    for root, _, files in os.walk(src):
        target = dst / Path(root).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            try:
                os.link(Path(root) / name, target / name)
            except OSError:
                shutil.copy2(Path(root) / name, target / name)


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
    """Write a whole store from two token arrays (tests and small tools); ids beyond the
    tokenizer's vocabulary are kept (the dtype holds them)."""
    top = max([int(np.max(a)) + 1 for a in (train, val) if np.size(a)], default=0)
    vocab = max(top, int(tokenizer.get("vocab_size", 1 << 32)))
    attrs = {"lang": lang, "tokenizer": tokenizer, "source": source}
    with StoreWriter(path, attrs, force, vocab_size=vocab) as w:
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
    format_version: int
    dtype: str  # of the token ids on disk
    files: int  # files of the store on disk
    disk_bytes: int  # their size

    @property
    def bytes_per_token(self) -> float:
        return self.disk_bytes / max(1, self.train_tokens + self.val_tokens)


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
    sizes = [f.stat().st_size for f in Path(path).rglob("*") if f.is_file()]
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
        int(attrs.get("format_version", 0)),
        str(store.train.dtype),
        len(sizes),
        sum(sizes),
    )
