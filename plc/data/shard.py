"""`plc shard`: text source → tokenizer → the Zarr token store of one language.

Streaming with bounded memory: documents are read lazily, tokenized in batches (in `workers`
processes when > 1, at most two batches per worker in flight) and appended to the store a chunk
at a time. The split is by document and reproducible: a document goes to val when a hash of
(seed, its key: its place in its file and the file's in the source) falls below the val fraction,
so the result depends neither on the number of workers, nor on how documents are batched, nor on
how a folder is read in parts. Budgets cut the last document of a split so counts are exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from plc.data import markov
from plc.data.sources import open_source
from plc.data.tokenizers import get_tokenizer
from plc.data.tokenstore import (
    STORE_VERSION,
    StoreWriter,
    check_replaceable,
    merge_parts,
    store_attrs,
    store_path,
)
from plc.errors import PlcError

DEFAULT_VAL_FRACTION = 0.1
BATCH_CHARS = 1 << 18  # text per tokenization batch: small enough for steady progress reports


@dataclass
class ShardProgress:
    docs: int  # documents read so far
    text_bytes: int  # UTF-8 bytes of those documents
    train_tokens: int
    val_tokens: int
    total_tokens: int | None  # train + val budget, when both are given

    @property
    def tokens(self) -> int:
        return self.train_tokens + self.val_tokens


@dataclass
class ShardResult:
    path: str
    lang: str
    source: str
    tokenizer: str
    train_tokens: int
    val_tokens: int
    train_docs: int
    val_docs: int
    docs_read: int
    text_bytes: int
    seconds: float
    entropy_rate: float | None = None  # nats per token, for a synthetic source with a known floor
    parts: int = 1  # the source was read in this many parts
    parts_reused: int = 0  # of which were written by an earlier run (docs_read counts the rest)

    COUNTS: ClassVar = ("train_tokens", "val_tokens", "train_docs", "val_docs")


def shard(
    lang: str,
    out: str | os.PathLike | None = None,
    *,
    source: str = "embedded",
    tokenizer: str = "byte",
    train_tokens: int | None = None,
    val_tokens: int | None = None,
    workers: int = 1,
    seed: int = 0,
    force: bool = False,
    progress: Callable[[ShardProgress], None] | None = None,
    part: tuple[int, int] | None = None,
    parts: int = 1,
) -> ShardResult:
    """Tokenize `source` into the token store `out` (default `data/<lang>.zarr`).

    A `markov:SEED[,…]` source is generated instead (see `_shard_markov`). Without budgets every document is used and ~10 % of them (at least one) go to val. With both
    budgets documents go to val at the rate val/(train+val) until each split holds exactly its
    budget; with only `train_tokens` val gets ~10 % of the documents read until train is full;
    with only `val_tokens` val takes documents until full and train all the rest.

    In parts (a folder or an `hf:` dataset): `part=(i, n)` (i from 1) writes only part i of n,
    the part store `<out>.parts/i-of-n.zarr`, taking 1/n of each budget from its share of the
    source; `parts=n` writes every part not yet written (in `workers` processes at once) and then
    merges the parts into `out` without rewriting them (hard links: the parts stay, at no cost).
    So n jobs `part=(i, n)` and one `parts=n` after them, or one `parts=n` alone, make the same
    store, and a part that failed is redone alone. Unbudgeted, a folder's store does not depend
    on n; see docs/data.md.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", lang or ""):
        raise PlcError(f"--lang must be a language code such as en or vi, got {lang!r}")
    for flag, value in (("--train-tokens", train_tokens), ("--val-tokens", val_tokens)):
        if value is not None and value <= 0:
            raise PlcError(f"{flag} must be positive, got {value}")
    if workers < 1:
        raise PlcError(f"--workers must be at least 1, got {workers}")
    if parts < 1:
        raise PlcError(f"--parts must be at least 1, got {parts}")
    if part is not None:
        if parts != 1:
            raise PlcError("give --part I/N (one part) or --parts N (all of them), not both")
        i, parts = part
        if not (parts >= 1 and 1 <= i <= parts):
            raise PlcError(f"--part {i}/{parts}: I must be one of 1…N")
    for flag, value in (("--train-tokens", train_tokens), ("--val-tokens", val_tokens)):
        if value is not None and value < parts:
            raise PlcError(f"{flag} {value} cannot be shared by {parts} parts")
    out = Path(out) if out is not None else store_path("data", lang)
    if source.startswith("markov:"):
        if parts > 1:
            raise PlcError("a markov: source is generated in one piece; drop --part/--parts")
        check_replaceable(out, force)
        return _shard_markov(
            lang, out, source, tokenizer, train_tokens, val_tokens, seed, force, progress
        )
    job = _PartJob(lang, source, tokenizer, train_tokens, val_tokens, seed, parts)
    if parts == 1:
        check_replaceable(out, force)
        return job.run(out, None, workers, force, progress)
    if part is not None:
        path = part_path(out, part[0], parts)
        check_replaceable(path, force)
        return job.run(path, part[0], workers, force, progress)
    return _shard_parts(job, out, workers, force, progress)


def part_path(out: str | os.PathLike, i: int, n: int) -> Path:
    """Where part i of n of the store `out` is written before the merge."""
    return Path(f"{out}.parts") / f"{i:03d}-of-{n:03d}.zarr"


@dataclass(frozen=True)
class _PartJob:
    """What every part of one store shares (picklable: parts run in worker processes)."""

    lang: str
    source: str
    tokenizer: str
    train_tokens: int | None
    val_tokens: int | None
    seed: int
    parts: int

    def signature(self) -> str:
        """What a part store must have been made from to be merged with the others."""
        whole = open_source(self.source, self.lang, self.seed)
        key = [self.lang, whole.identity, get_tokenizer(self.tokenizer).identity(), self.seed]
        key += [self.train_tokens, self.val_tokens, self.parts, STORE_VERSION]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]

    def run(
        self,
        out: Path,
        i: int | None,
        workers: int,
        force: bool,
        progress: Callable[[ShardProgress], None] | None = None,
        signature: str | None = None,
    ) -> ShardResult:
        """The store `out` of the whole source (i None) or of its part i of `parts`."""
        n = self.parts
        tok = get_tokenizer(self.tokenizer)
        src = open_source(self.source, self.lang, self.seed, None if i is None else (i - 1, n))
        budgets = [
            None if b is None else (b * i // n - b * (i - 1) // n if i else b)
            for b in (self.train_tokens, self.val_tokens)
        ]
        # The whole source's val rate, and the small-source rule only where the store begins.
        router = _Router(self.seed, *budgets, p=_Router.rate(self.train_tokens, self.val_tokens))
        router.keep_one &= i in (None, 1)
        attrs = {
            "lang": self.lang,
            "tokenizer": tok.identity(),
            "source": src.description,
            "seed": self.seed,
            "val_fraction": router.p,
        }
        if i is not None:
            attrs["part"] = {"index": i, "of": n, "signature": signature or self.signature()}
        total = budgets[0] + budgets[1] if budgets[0] and budgets[1] else None
        start = time.perf_counter()
        docs = text_bytes = 0
        with StoreWriter(out, attrs, force=force) as writer:
            router.writer = writer
            batches = _encoded(_batches(src.keyed()), self.tokenizer, tok, workers)
            with closing(batches):
                for keys, tokens, lengths, nbytes in batches:
                    ends = np.cumsum(lengths)
                    u = doc_uniforms_at(self.seed, keys)
                    done = False
                    for k in range(len(lengths)):
                        done = router.route(u[k], tokens[ends[k] - lengths[k] : ends[k]])
                        if done:
                            break
                    docs += k + 1
                    text_bytes += nbytes
                    if progress:
                        progress(ShardProgress(docs, text_bytes, *router.counts(), total))
                    if done:
                        break
            router.finish()
            where = src.description + ("" if i is None else f" (part {i} of {n})")
            router.check(where, docs, whole=i is None)
            path = writer.commit()
        c = writer.counts
        return ShardResult(
            str(path), self.lang, src.description, tok.name, c["train_tokens"], c["val_tokens"],
            c["train_docs"], c["val_docs"], docs, text_bytes, time.perf_counter() - start,
            parts=n,
        )  # fmt: skip


def _run_part(args: tuple[_PartJob, Path, int, bool, str]) -> ShardResult:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool on Ctrl-C
    job, path, i, force, signature = args
    return job.run(path, i, 1, force, signature=signature)


def _shard_parts(
    job: _PartJob,
    out: Path,
    workers: int,
    force: bool,
    progress: Callable[[ShardProgress], None] | None,
) -> ShardResult:
    """Every part of `out` not yet written (a part of other settings only with --force), then
    the merge."""
    check_replaceable(out, force)
    start = time.perf_counter()
    signature = job.signature()
    paths = [part_path(out, i, job.parts) for i in range(1, job.parts + 1)]
    todo = []
    for i, path in enumerate(paths, 1):
        attrs = store_attrs(path)
        if attrs is not None and attrs.get("part", {}).get("signature") == signature:
            continue
        if path.exists() and not force:
            raise PlcError(
                f"{path} was made with other settings (or is not a part store); pass --force to "
                "redo it"
            )
        check_replaceable(path, force)
        todo.append(i)
    results: list[ShardResult] = []
    done = ShardProgress(0, 0, 0, 0, None)

    def finished(res: ShardResult) -> None:
        results.append(res)
        done.docs += res.docs_read
        done.text_bytes += res.text_bytes
        done.train_tokens += res.train_tokens
        done.val_tokens += res.val_tokens
        if progress:
            progress(done)

    if workers > 1 and len(todo) > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, len(todo))) as pool:  # terminated on leaving, also on error
            args = [(job, paths[i - 1], i, force, signature) for i in todo]
            for res in pool.imap_unordered(_run_part, args):
                finished(res)
    else:
        for i in todo:
            finished(job.run(paths[i - 1], i, workers, force, signature=signature))
    stores = [store_attrs(path) or {} for path in paths]
    counts = {k: sum(int(a.get(k, 0)) for a in stores) for k in ShardResult.COUNTS}
    if counts["train_docs"] == 0 or counts["val_docs"] == 0:
        empty = "train" if counts["train_docs"] == 0 else "val"
        raise PlcError(f"{job.source} in {job.parts} parts: too few documents, {empty} is empty")
    first = stores[0]
    attrs = {k: first[k] for k in ("lang", "tokenizer", "source", "seed", "val_fraction")}
    # The parts stay: they share their files with the store (no space), and they are the outputs
    # of a plan's part jobs, which make would otherwise run again.
    merge_parts(out, paths, attrs, force)
    return ShardResult(
        str(out), job.lang, str(attrs["source"]), str(attrs["tokenizer"]["name"]),
        counts["train_tokens"], counts["val_tokens"], counts["train_docs"], counts["val_docs"],
        sum(r.docs_read for r in results), sum(r.text_bytes for r in results),
        time.perf_counter() - start, parts=job.parts, parts_reused=job.parts - len(todo),
    )  # fmt: skip


def _shard_markov(
    lang: str,
    out: Path,
    source: str,
    tokenizer: str,
    train_tokens: int | None,
    val_tokens: int | None,
    seed: int,
    force: bool,
    progress: Callable[[ShardProgress], None] | None,
) -> ShardResult:
    """A store sampled from the chain named by `source`; `seed` picks the sample, not the chain.

    Train and val are independent samples (documents of their own streams), so they never share
    a stretch of the chain. Missing budgets take the control's defaults.
    """
    spec = markov.parse_markov(source)
    if tokenizer != "byte":
        raise PlcError(f"markov sources write byte tokens; drop --tokenizer {tokenizer}")
    if seed < 0:
        raise PlcError(f"--seed must be non-negative for a markov source, got {seed}")
    tok = get_tokenizer("byte")
    chain = markov.draw_chain(spec)
    budget = {
        "train": train_tokens or markov.DEFAULT_TRAIN_TOKENS,
        "val": val_tokens or markov.DEFAULT_VAL_TOKENS,
    }
    attrs = {
        "lang": lang,
        "tokenizer": tok.identity(),
        "source": spec.describe(),
        "seed": seed,
        "entropy_rate": chain.entropy_rate,
        "markov": chain.attrs(),
    }
    start = time.perf_counter()
    docs = symbols = 0
    done = {"train": 0, "val": 0}
    with StoreWriter(out, attrs, force=force) as writer:
        for split_id, split in enumerate(("train", "val")):
            for tokens, count in markov.markov_tokens(
                chain, budget[split], (seed, split_id), tok.eos_id
            ):
                writer.add(split, tokens, docs=count)
                docs += count
                symbols += int(np.count_nonzero(tokens != tok.eos_id))
                done[split] += tokens.size
                if progress:
                    progress(
                        ShardProgress(
                            docs, symbols, done["train"], done["val"], sum(budget.values())
                        )
                    )
        path = writer.commit()
    c = writer.counts
    return ShardResult(
        str(path),
        lang,
        spec.describe(),
        tok.name,
        c["train_tokens"],
        c["val_tokens"],
        c["train_docs"],
        c["val_docs"],
        docs,
        symbols,
        time.perf_counter() - start,
        chain.entropy_rate,
    )


def doc_uniforms(seed: int, start: int, n: int) -> np.ndarray:
    """A uniform [0, 1) number for each of documents start…start+n−1: splitmix64 of (seed, index)."""
    return doc_uniforms_at(seed, np.arange(start, start + n, dtype=np.uint64))


def doc_uniforms_at(seed: int, keys) -> np.ndarray:
    """The uniform [0, 1) number of each document key (sources.KEY_STRIDE): splitmix64 of (seed,
    key); a document's split is a function of its key, not of when or by whom it is read."""
    mix = np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
    with np.errstate(over="ignore"):
        z = np.asarray(keys, dtype=np.uint64) + mix
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53


class _Router:
    """Sends each document to train or val, cutting the last one of a split to its budget."""

    def __init__(
        self, seed: int, train_budget: int | None, val_budget: int | None, p: float | None = None
    ):
        self.budget = {"train": train_budget, "val": val_budget}
        self.n = {"train": 0, "val": 0}
        self.ndocs = {"train": 0, "val": 0}
        self.p = self.rate(train_budget, val_budget) if p is None else p
        # Without budgets, the train document with the smallest draw waits here until val has a
        # document; if none ever comes it becomes val, so a small source still yields both splits.
        self.keep_one = train_budget is None and val_budget is None
        self.held: tuple[float, np.ndarray] | None = None
        self.tokens_read = 0
        self.writer: StoreWriter | None = None

    @staticmethod
    def rate(train_budget: int | None, val_budget: int | None) -> float:
        """The probability that a document goes to val first."""
        if train_budget and val_budget:
            return val_budget / (val_budget + train_budget)
        if val_budget:
            return 1.0  # val takes documents until full, train the rest of the source
        return DEFAULT_VAL_FRACTION

    def counts(self) -> tuple[int, int]:
        return self.n["train"], self.n["val"]

    def is_open(self, split: str) -> bool:
        budget = self.budget[split]
        if budget is not None:
            return self.n[split] < budget
        if split == "val":  # unbudgeted val follows train, and gets at least one document
            return self.is_open("train") or self.ndocs["val"] == 0
        return True

    def route(self, u: float, tokens: np.ndarray) -> bool:
        """Place one document (tokens incl. EOS); True when neither split takes more."""
        self.tokens_read += tokens.size
        order = ("val", "train") if u < self.p else ("train", "val")
        split = next(s for s in order if self.is_open(s))
        if split == "train" and self.keep_one and self.ndocs["val"] == 0:
            if self.held is None:
                self.held = (u, tokens.copy())
                return False
            if u < self.held[0]:
                self.held, tokens = (u, tokens.copy()), self.held[1]
        self._write(split, tokens)
        if split == "val" and self.held is not None:
            self._write("train", self.held[1])
            self.held = None
        return not (self.is_open("train") or self.is_open("val"))

    def _write(self, split: str, tokens: np.ndarray) -> None:
        budget = self.budget[split]
        if budget is not None:
            tokens = tokens[: budget - self.n[split]]
        self.writer.add(split, tokens)
        self.n[split] += tokens.size
        self.ndocs[split] += 1

    def finish(self) -> None:
        if self.held is not None:
            self._write("val" if self.ndocs["val"] == 0 else "train", self.held[1])
            self.held = None

    def check(self, source: str, docs: int, whole: bool = True) -> None:
        """Refuse a store that does not hold what was asked for (the writer is then discarded);
        a part of a store (`whole` False) may leave a split empty."""
        if docs == 0:
            raise PlcError(f"{source} has no documents (empty, or only blank text)")
        have = f"{source} has {docs:,} documents, {self.tokens_read:,} tokens in all"
        for split in ("val", "train"):
            budget, n = self.budget[split], self.n[split]
            if budget is not None and n < budget:
                share = self.p if split == "val" else 1 - self.p
                raise PlcError(
                    f"asked for {budget:,} {split} tokens but {source} has only "
                    f"{self.tokens_read:,} tokens in {docs:,} documents"
                    + (f", and {split} gets ~{share:.0%} of them: {n:,}" if share < 1 else "")
                )
        if whole and (self.ndocs["train"] == 0 or self.ndocs["val"] == 0):
            empty = "train" if self.ndocs["train"] == 0 else "val"
            raise PlcError(
                f"{have}: too few to split by document, {empty} would be empty"
                + ("; lower --train-tokens" if empty == "val" else "")
            )


def _batches(docs: Iterable[tuple[int, str]]) -> Iterator[tuple[list[int], list[str]]]:
    keys, batch, size = [], [], 0
    for key, doc in docs:
        keys.append(key)
        batch.append(doc)
        size += len(doc)
        if size >= BATCH_CHARS:
            yield keys, batch
            keys, batch, size = [], [], 0
    if batch:
        yield keys, batch


_worker_tokenizer = None


def _init_worker(spec: str) -> None:
    import signal

    global _worker_tokenizer
    # Ctrl-C is the parent's to handle: it discards the partial store and shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_tokenizer = get_tokenizer(spec)


def _encode_batch(texts: list[str], tok=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Token ids of a batch of documents, each followed by EOS; per-document lengths; text bytes."""
    tok = tok or _worker_tokenizer
    eos = np.array([tok.eos_id], dtype=np.uint32)
    pieces, lengths, nbytes = [], np.empty(len(texts), dtype=np.int64), 0
    for i, text in enumerate(texts):
        ids = tok.encode(text)
        pieces += (ids, eos)
        lengths[i] = ids.size + 1
        nbytes += len(text.encode("utf-8"))
    return np.concatenate(pieces), lengths, nbytes


def _encoded(batches: Iterator[tuple[list[int], list[str]]], spec: str, tok, workers: int):
    """(keys, tokens, lengths, text bytes) of each batch in source order; with workers > 1 encoded
    in a process pool, bounded in flight."""
    if workers == 1:
        for keys, batch in batches:
            yield (keys, *_encode_batch(batch, tok))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold threads (torch, tokenizers) that fork would break.
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(spec,),
    )
    try:
        inflight: deque = deque()
        for keys, batch in batches:
            inflight.append((keys, pool.submit(_encode_batch, batch)))
            if len(inflight) >= 2 * workers:
                keys, future = inflight.popleft()
                yield (keys, *future.result())
        while inflight:
            keys, future = inflight.popleft()
            yield (keys, *future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
