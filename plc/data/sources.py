"""Text sources: streams of documents from the embedded corpus, local files, or the HF hub.

Every source is a lazy iterator of documents (str), so inputs larger than memory stream:
- `embedded`: the corpus shipped in the package, `plc/data/corpus/<lang>.txt`;
- a local file or folder: `.txt` (one document per blank-line-separated paragraph block),
  `.jsonl` (one JSON object per line with a `text` field), `.parquet` (a `text` column), the
  text formats also compressed as `.gz` or `.zst`; a folder means every such file under it
  (other files are skipped) in an order shuffled by the shard's seed, so that a budget smaller
  than the folder samples documents from across it;
- `hf:DATASET[:CONFIG]`: a Hugging Face dataset in streaming mode, split `train`, field `text`.
  For CulturaX (`uonlp/CulturaX`) the language is the config. The stream is shuffled with the
  shard's seed (`IterableDataset.shuffle`: the order of the dataset's files, then a buffer of
  HF_SHUFFLE_BUFFER documents), so a budget smaller than the source samples documents from across
  it rather than its first files; the same seed gives the same documents.

Each document has a key, k·KEY_STRIDE + j for the j-th document of file k of a folder's order (or
of part k of a dataset), from which `plc shard` draws its train/val split: a document's split does
not depend on how the source is read in parts. A source can be opened as part i of n (`part`):
a folder as a run of its files (about 1/n of its bytes), a dataset as `split_dataset_by_node`'s
share; a folder's parts, one after the other, are the whole folder in its order.
"""

from __future__ import annotations

import gzip
import importlib.resources
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from plc.errors import PlcError

TEXT_SUFFIXES = (".txt", ".jsonl")
COMPRESSIONS = ("", ".gz", ".zst")
FORMATS = ".txt, .jsonl, .parquet (text formats also .gz or .zst)"
HF_SHUFFLE_BUFFER = 10_000  # documents; in a dataset of many files the file order mixes most
KEY_STRIDE = 1 << 40  # documents per file (or dataset part) that keep distinct keys
FOLDER_STREAM = 4099  # the random stream of a folder's file order (numpy default_rng([seed, 4099]))


@dataclass(frozen=True)
class Source:
    """A named, re-iterable stream of documents: `source.keyed()` starts a new pass of
    (key, document) pairs, `source.documents()` one of the documents alone."""

    description: str  # stored in the token store's `source` attribute
    keyed: Callable[[], Iterator[tuple[int, str]]] = field(repr=False)
    identity: str = ""  # what the whole source is (files, sizes, times): parts must agree on it

    def documents(self) -> Iterator[str]:
        return (doc for _, doc in self.keyed())


def open_source(spec: str, lang: str, seed: int = 0, part: tuple[int, int] | None = None) -> Source:
    """The source named by `spec` (`embedded`, a path, or `hf:DATASET[:CONFIG]`) for `lang`;
    `seed` orders a dataset's stream and a folder's files; `part` (i, n), i from 0: the i-th of
    n disjoint parts of it (a folder or a dataset only)."""
    if part is not None and not (part[1] >= 1 and 0 <= part[0] < part[1]):
        raise PlcError(f"part {part[0] + 1} of {part[1]} does not exist")
    if spec == "embedded":
        return _whole(_embedded(lang), part)
    if spec.startswith("hf:"):
        name, _, config = spec[3:].partition(":")
        if not name:
            raise PlcError("hf: needs a dataset name, e.g. hf:uonlp/CulturaX")
        return _hf(name, config or None, lang, seed, part or (0, 1))
    return _local(Path(spec), seed, part or (0, 1))


def _whole(source: Source, part: tuple[int, int] | None) -> Source:
    if part is not None and part[1] > 1:
        raise PlcError(_unsplittable(source.description, 1, part[1]))
    return source


def _unsplittable(what: str, files: int, n: int) -> str:
    return (
        f"{what} is {files} file{'s' if files > 1 else ''}: it cannot be read in {n} parts "
        f"(give a folder of at least {n} files, or hf:DATASET)"
    )


def _numbered(stream: Iterator[str], base: int) -> Iterator[tuple[int, str]]:
    for j, doc in enumerate(stream):
        yield base + j, doc


# ---------------------------------------------------------------------------------- embedded


def embedded_languages() -> list[str]:
    corpus = importlib.resources.files("plc.data") / "corpus"
    return sorted(p.name[:-4] for p in corpus.iterdir() if p.name.endswith(".txt"))


def _embedded(lang: str) -> Source:
    if lang not in embedded_languages():
        raise PlcError(
            f"the embedded corpus has no language {lang!r}; it has "
            f"{', '.join(embedded_languages())} (or give --source FILE|FOLDER|hf:DATASET)"
        )
    resource = importlib.resources.files("plc.data") / "corpus" / f"{lang}.txt"

    def iterate() -> Iterator[tuple[int, str]]:
        with resource.open("r", encoding="utf-8") as f:
            yield from _numbered(paragraphs(f), 0)

    return Source(f"embedded:{lang}", iterate, f"embedded:{lang}")


def paragraphs(lines) -> Iterator[str]:
    """Blank-line-separated blocks of lines, each a document (lines joined by newlines)."""
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line.rstrip("\r\n"))
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


# ------------------------------------------------------------------------------------- local


def _kind(path: Path) -> str | None:
    """'txt', 'jsonl' or 'parquet' for a supported file name, else None."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    for suffix in TEXT_SUFFIXES:
        for comp in COMPRESSIONS:
            if name.endswith(suffix + comp):
                return suffix[1:]
    return None


def folder_files(path: Path) -> list[Path]:
    """The files of a folder that plc reads (by suffix, not hidden), sorted."""
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and _kind(p) and not any(part.startswith(".") for part in p.parts)
    )


def _local(path: Path, seed: int, part: tuple[int, int]) -> Source:
    if not path.exists():
        raise PlcError(
            f"source {path} does not exist (give embedded, a file, a folder or hf:DATASET)"
        )
    description = f"file:{path.resolve()}"
    if path.is_dir():
        import numpy as np

        files = folder_files(path)
        if not files:
            raise PlcError(f"folder {path} has no {FORMATS} files")
        files = [
            files[k] for k in np.random.default_rng([seed, FOLDER_STREAM]).permutation(len(files))
        ]
    else:
        if _kind(path) is None:
            raise PlcError(f"{path}: unsupported file type; plc reads {FORMATS}")
        files = [path]
    stats = [f.stat() for f in files]
    identity = json.dumps(
        [[str(f.relative_to(path)) if f != path else f.name, s.st_size, s.st_mtime_ns]
         for f, s in sorted(zip(files, stats, strict=True))]
    )  # fmt: skip
    i, n = part
    if n > len(files):
        raise PlcError(_unsplittable(str(path), len(files), n))
    first, stop = _file_run([s.st_size for s in stats], i, n)

    def iterate() -> Iterator[tuple[int, str]]:
        for k in range(first, stop):
            yield from _numbered(_file_documents(files[k]), k * KEY_STRIDE)

    return Source(description, iterate, identity)


def _file_run(sizes: list[int], i: int, n: int) -> tuple[int, int]:
    """Files [first, stop) of part i of n: runs of about equal bytes, each at least one file."""
    total, before, cuts = sum(sizes), 0, [0]
    starts = []
    for size in sizes:
        starts.append(before)
        before += size
    for p in range(1, n):
        k = next((k for k, s in enumerate(starts) if s * n >= total * p), len(sizes))
        cuts.append(min(max(k, cuts[-1] + 1), len(sizes) - (n - p)))
    cuts.append(len(sizes))
    return cuts[i], cuts[i + 1]


def _open_text(path: Path) -> io.TextIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if name.endswith(".zst"):
        import zstandard

        return io.TextIOWrapper(zstandard.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _file_documents(path: Path) -> Iterator[str]:
    kind = _kind(path)
    try:
        if kind == "parquet":
            yield from _parquet_documents(path)
            return
        with _open_text(path) as f:
            if kind == "txt":
                yield from paragraphs(f)
            else:
                yield from _jsonl_documents(f, path)
    except PlcError:
        raise
    except UnicodeDecodeError as e:
        raise PlcError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except Exception as e:  # gzip/zstd/parquet/OS errors: a corrupt or unreadable file
        raise PlcError(f"cannot read {path}: {type(e).__name__}: {e}") from e


def _jsonl_documents(lines, path: Path) -> Iterator[str]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise PlcError(f"{path}:{lineno}: not a JSON object ({e.msg})") from e
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise PlcError(f"{path}:{lineno}: no string field 'text'")
        if record["text"].strip():
            yield record["text"]


def _parquet_documents(path: Path) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if "text" not in pf.schema_arrow.names:
        raise PlcError(
            f"{path} has no 'text' column (columns: {', '.join(pf.schema_arrow.names) or 'none'})"
        )
    for batch in pf.iter_batches(batch_size=1024, columns=["text"]):
        for text in batch.column(0).to_pylist():
            if isinstance(text, str) and text.strip():
                yield text


# ---------------------------------------------------------------------------------------- hf


def _hf(name: str, config: str | None, lang: str, seed: int, part: tuple[int, int]) -> Source:
    if config is None and name.rstrip("/").lower().endswith("culturax"):
        config = lang  # CulturaX has one config per language code
    i, n = part

    def documents() -> Iterator[str]:
        import datasets
        from datasets.distributed import split_dataset_by_node

        try:
            ds = datasets.load_dataset(name, config, split="train", streaming=True)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise PlcError(
                f"cannot open dataset hf:{name}{':' + config if config else ''}: {first}"
            ) from e
        columns = ds.column_names
        if columns is not None and "text" not in columns:
            raise PlcError(f"dataset hf:{name} has no 'text' field (fields: {', '.join(columns)})")
        ds = ds.shuffle(seed=seed, buffer_size=HF_SHUFFLE_BUFFER)
        if n > 1:  # whole files per part where the dataset has a multiple of n, else every n-th row
            ds = split_dataset_by_node(ds, rank=i, world_size=n)
        try:
            for row in ds:
                text = row.get("text")
                if isinstance(text, str) and text.strip():
                    yield text
        except Exception as e:
            raise PlcError(f"error reading hf:{name}: {type(e).__name__}: {e}") from e

    description = f"hf:{name}" + (f":{config}" if config else "")
    return Source(description, lambda: _numbered(documents(), i * KEY_STRIDE), description)
