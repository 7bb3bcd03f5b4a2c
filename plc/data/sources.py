"""Text sources: streams of documents from the embedded corpus, local files, or the HF hub.

Every source is a lazy iterator of documents (str), so inputs larger than memory stream:
- `embedded`: the corpus shipped in the package, `plc/data/corpus/<lang>.txt`;
- a local file or folder: `.txt` (one document per blank-line-separated paragraph block),
  `.jsonl` (one JSON object per line with a `text` field), `.parquet` (a `text` column), the
  text formats also compressed as `.gz` or `.zst`; a folder means every such file under it, in
  sorted path order (other files are skipped);
- `hf:DATASET[:CONFIG]`: a Hugging Face dataset in streaming mode, split `train`, field `text`.
  For CulturaX (`uonlp/CulturaX`) the language is the config. The stream is shuffled with the
  shard's seed (`IterableDataset.shuffle`: the order of the dataset's files, then a buffer of
  HF_SHUFFLE_BUFFER documents), so a budget smaller than the source samples documents from across
  it rather than its first files; the same seed gives the same documents.
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


@dataclass(frozen=True)
class Source:
    """A named, re-iterable stream of documents: `source.documents()` starts a new pass."""

    description: str  # stored in the token store's `source` attribute
    documents: Callable[[], Iterator[str]] = field(repr=False)


def open_source(spec: str, lang: str, seed: int = 0) -> Source:
    """The source named by `spec` (`embedded`, a path, or `hf:DATASET[:CONFIG]`) for `lang`;
    `seed` orders a dataset's stream (local and embedded sources are read in order)."""
    if spec == "embedded":
        return _embedded(lang)
    if spec.startswith("hf:"):
        name, _, config = spec[3:].partition(":")
        if not name:
            raise PlcError("hf: needs a dataset name, e.g. hf:uonlp/CulturaX")
        return _hf(name, config or None, lang, seed)
    return _local(Path(spec))


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

    def iterate() -> Iterator[str]:
        with resource.open("r", encoding="utf-8") as f:
            yield from paragraphs(f)

    return Source(f"embedded:{lang}", iterate)


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


def _local(path: Path) -> Source:
    if not path.exists():
        raise PlcError(
            f"source {path} does not exist (give embedded, a file, a folder or hf:DATASET)"
        )
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and _kind(p) and not any(part.startswith(".") for part in p.parts)
        )
        if not files:
            raise PlcError(f"folder {path} has no {FORMATS} files")
    else:
        if _kind(path) is None:
            raise PlcError(f"{path}: unsupported file type; plc reads {FORMATS}")
        files = [path]

    def iterate() -> Iterator[str]:
        for f in files:
            yield from _file_documents(f)

    return Source(f"file:{path.resolve()}", iterate)


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


def _hf(name: str, config: str | None, lang: str, seed: int) -> Source:
    if config is None and name.rstrip("/").lower().endswith("culturax"):
        config = lang  # CulturaX has one config per language code

    def iterate() -> Iterator[str]:
        import datasets

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
        try:
            for row in ds:
                text = row.get("text")
                if isinstance(text, str) and text.strip():
                    yield text
        except Exception as e:
            raise PlcError(f"error reading hf:{name}: {type(e).__name__}: {e}") from e

    return Source(f"hf:{name}" + (f":{config}" if config else ""), iterate)
