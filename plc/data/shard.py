"""`plc shard`: text source → tokenizer → the Zarr token store of one language.

Streaming with bounded memory: documents are read lazily, tokenized in batches (in `workers`
processes when > 1, at most two batches per worker in flight) and appended to the store in 1 Mi
token chunks. The split is by document and reproducible: document i goes to val when a hash of
(seed, i) falls below the val fraction, so the result depends neither on the number of workers nor
on how documents are batched. Budgets cut the last document of a split so counts are exact.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plc.data import markov
from plc.data.sources import open_source
from plc.data.tokenizers import get_tokenizer
from plc.data.tokenstore import StoreWriter, store_path
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
) -> ShardResult:
    """Tokenize `source` into the token store `out` (default `data/<lang>.zarr`).

    A `markov:SEED[,…]` source is generated instead (see `_shard_markov`). Without budgets every document is used and ~10 % of them (at least one) go to val. With both
    budgets documents go to val at the rate val/(train+val) until each split holds exactly its
    budget; with only `train_tokens` val gets ~10 % of the documents read until train is full;
    with only `val_tokens` val takes documents until full and train all the rest.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", lang or ""):
        raise PlcError(f"--lang must be a language code such as en or vi, got {lang!r}")
    for flag, value in (("--train-tokens", train_tokens), ("--val-tokens", val_tokens)):
        if value is not None and value <= 0:
            raise PlcError(f"{flag} must be positive, got {value}")
    if workers < 1:
        raise PlcError(f"--workers must be at least 1, got {workers}")
    out = Path(out) if out is not None else store_path("data", lang)
    if out.exists() and not force:
        raise PlcError(f"{out} exists; pass --force to overwrite it")
    if source.startswith("markov:"):
        return _shard_markov(
            lang, out, source, tokenizer, train_tokens, val_tokens, seed, force, progress
        )
    tok = get_tokenizer(tokenizer)
    src = open_source(source, lang, seed)
    router = _Router(seed, train_tokens, val_tokens)
    attrs = {
        "lang": lang,
        "tokenizer": tok.identity(),
        "source": src.description,
        "seed": seed,
        "val_fraction": router.p,
    }
    total = train_tokens + val_tokens if train_tokens and val_tokens else None
    start = time.perf_counter()
    docs = text_bytes = 0
    with StoreWriter(out, attrs, force=force) as writer:
        router.writer = writer
        batches = _encoded(_batches(src.documents()), tokenizer, tok, workers)
        with closing(batches):
            for tokens, lengths, nbytes in batches:
                ends = np.cumsum(lengths)
                u = doc_uniforms(seed, docs, len(lengths))
                done = False
                for i in range(len(lengths)):
                    done = router.route(u[i], tokens[ends[i] - lengths[i] : ends[i]])
                    if done:
                        break
                docs += i + 1
                text_bytes += nbytes
                if progress:
                    progress(ShardProgress(docs, text_bytes, *router.counts(), total))
                if done:
                    break
        router.finish()
        router.check(src.description, docs)
        path = writer.commit()
    c = writer.counts
    return ShardResult(
        str(path),
        lang,
        src.description,
        tok.name,
        c["train_tokens"],
        c["val_tokens"],
        c["train_docs"],
        c["val_docs"],
        docs,
        text_bytes,
        time.perf_counter() - start,
    )


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
    mix = np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
    with np.errstate(over="ignore"):
        z = np.arange(start, start + n, dtype=np.uint64) + mix
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53


class _Router:
    """Sends each document to train or val, cutting the last one of a split to its budget."""

    def __init__(self, seed: int, train_budget: int | None, val_budget: int | None):
        self.budget = {"train": train_budget, "val": val_budget}
        self.n = {"train": 0, "val": 0}
        self.ndocs = {"train": 0, "val": 0}
        if train_budget and val_budget:
            self.p = val_budget / (val_budget + train_budget)
        elif val_budget:
            self.p = 1.0  # val takes documents until full, train the rest of the source
        else:
            self.p = DEFAULT_VAL_FRACTION
        # Without budgets, the train document with the smallest draw waits here until val has a
        # document; if none ever comes it becomes val, so a small source still yields both splits.
        self.keep_one = train_budget is None and val_budget is None
        self.held: tuple[float, np.ndarray] | None = None
        self.tokens_read = 0
        self.writer: StoreWriter | None = None

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

    def check(self, source: str, docs: int) -> None:
        """Refuse a store that does not hold what was asked for (the writer is then discarded)."""
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
        if self.ndocs["train"] == 0 or self.ndocs["val"] == 0:
            empty = "train" if self.ndocs["train"] == 0 else "val"
            raise PlcError(
                f"{have}: too few to split by document, {empty} would be empty"
                + ("; lower --train-tokens" if empty == "val" else "")
            )


def _batches(docs: Iterable[str]) -> Iterator[list[str]]:
    batch, size = [], 0
    for doc in docs:
        batch.append(doc)
        size += len(doc)
        if size >= BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


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


def _encoded(batches: Iterator[list[str]], spec: str, tok, workers: int):
    """Encoded batches in source order; with workers > 1 from a process pool, bounded in flight."""
    if workers == 1:
        for batch in batches:
            yield _encode_batch(batch, tok)
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
        for batch in batches:
            inflight.append(pool.submit(_encode_batch, batch))
            if len(inflight) >= 2 * workers:
                yield inflight.popleft().result()
        while inflight:
            yield inflight.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
