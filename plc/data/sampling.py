"""Batches of token windows: random training windows and the fixed evaluation windows.

Training windows are a pure function of (seed, task index, step): a resumed run needs only the step
to continue the same stream, each rank reads only its rows (rank::world_size) of the same global
batch, and every appearance of a language (a new task index) sees a new sample of its data.
`BatchSampler.local` gives one rank's rows with the next step's read in a background thread.

Evaluation windows (§IV-A: "1,280 randomly sampled sequences") are drawn once per (val split,
length, seed): non-overlapping whole windows at random places in the whole val split
(`eval_slots`), so every probe of a run sees the same windows, and anyone can recompute them — or
a loss — from the seed and the starts that the metric files record.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from plc.data.tokenstore import TokenStore
from plc.errors import PlcError


def _windows(arr, starts: np.ndarray, length: int) -> np.ndarray:
    if isinstance(arr, np.ndarray):
        # Rows of a strided view of all windows: one copy per row, no index array, no Python loop.
        return np.lib.stride_tricks.sliding_window_view(arr, length)[starts]
    if hasattr(arr, "windows"):  # a reader of the store's files: each chunk read once a batch
        return arr.windows(starts, length)
    return np.stack([arr[s : s + length] for s in starts.tolist()])


# Distinguishes the evaluation draw's random stream from the training batches' (seed, task, step).
EVAL_STREAM = 7919


def eval_slots(val_tokens: int, seq_len: int, seed: int) -> tuple[int, np.ndarray]:
    """(offset, order): the val split cut into whole windows of seq_len + 1 tokens after a random
    offset in [0, seq_len], and a random order of those slots. Window i of a draw of n is slot
    order[i], starting at offset + order[i]·(seq_len + 1): non-overlapping, from the whole split,
    and the first k windows of any larger draw (diagnose takes two counts from one pass)."""
    w = seq_len + 1
    rng = np.random.default_rng([seed, EVAL_STREAM, w])
    offset = int(rng.integers(0, w)) if val_tokens >= 2 * w else 0
    return offset, rng.permutation(max(0, (val_tokens - offset) // w))


def eval_windows(
    store: TokenStore, n: int, seq_len: int, seed: int, flag: str = "--seqs"
) -> tuple[np.ndarray, np.ndarray]:
    """The fixed evaluation set of (store, seq_len, seed), first n: (starts (n,), windows (n, L+1)).

    `flag` names the option that set `n`, so the error says what to pass instead."""
    if n <= 0 or seq_len <= 0:
        raise PlcError("the number of evaluation sequences and their length must be positive")
    have = int(store.val.shape[0])
    offset, order = eval_slots(have, seq_len, seed)
    if order.size < n:
        raise PlcError(
            f"{store.path} has {have:,} val tokens: room for {order.size} windows of "
            f"{seq_len + 1}, not {n}; pass {flag} {order.size} (or fewer) or shard more val tokens"
        )
    starts = offset + order[:n].astype(np.int64) * (seq_len + 1)
    return starts, np.asarray(_windows(store.val, starts, seq_len + 1), dtype=np.int64)


def _check_rank(batch_size: int, rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size or batch_size % world_size:
        raise PlcError(f"a batch of {batch_size} sequences has no rank {rank} of {world_size}")


@dataclass(frozen=True)
class Composition:
    """An exact share of every batch from the stores after the first (the task's own): replay
    takes round(replay·B) rows, each from one of the other stores drawn uniformly; a transition
    takes round(B·(1 − (s+1)/(K+1))) rows from the second store at the task's step s < K, none
    after (its share falls linearly over K steps). Which rows is a random permutation of the
    batch, drawn from the step's generator like everything else of the batch."""

    replay: float = 0.0
    transition: int = 0  # K
    first: int = 0  # the sampler step of the task's step 0 (a continued run's schedule step)

    def others(self, step: int, n: int) -> int:
        """Rows of the batch of sampler step `step` that come from the other stores."""
        if self.transition:
            s = step - self.first
            return round(n * (1 - (s + 1) / (self.transition + 1))) if s < self.transition else 0
        return round(n * self.replay)

    def rows(self, step: int, n: int, stores: int, rng: np.random.Generator) -> np.ndarray:
        """The store of each of the n rows."""
        k = self.others(step, n)
        which = np.zeros(n, dtype=np.int64)
        if k:
            picked = rng.permutation(n)[:k]
            which[picked] = 1 if stores == 2 else 1 + rng.integers(0, stores - 1, size=k)
        return which


class BatchSampler:
    """Global batches of `batch_size` windows of `seq_len + 1` tokens from one store, a mixture
    (`weights`: each row's store drawn with those probabilities) or an exact `composition` (replay
    and gradual transitions: store 0 the task's own)."""

    def __init__(
        self,
        stores: Sequence[TokenStore],
        seq_len: int,
        batch_size: int,
        seed: int,
        task_index: int,
        weights: Sequence[float] | None = None,
        composition: Composition | None = None,
    ):
        if seq_len <= 0 or batch_size <= 0:
            raise PlcError("seq_len and batch size must be positive")
        for s in stores:
            if s.train.shape[0] < seq_len + 2:
                raise PlcError(
                    f"{s.path} has {s.train.shape[0]} train tokens, too few for seq_len {seq_len}"
                )
        self.stores, self.seq_len, self.batch_size = list(stores), seq_len, batch_size
        self.seed, self.task_index = seed, task_index
        w = np.ones(len(stores)) if weights is None else np.asarray(weights, dtype=float)
        if len(w) != len(stores) or (w < 0).any() or w.sum() <= 0:
            raise PlcError("mixture weights must be non-negative, one per language, not all zero")
        self.weights = w / w.sum()
        if composition is not None and (weights is not None or len(self.stores) < 2):
            raise PlcError("a batch composition needs the task's store and others, no weights")
        self.composition = composition

    def _which(self, step: int, rng: np.random.Generator) -> np.ndarray:
        n = self.batch_size
        if self.composition is not None:
            return self.composition.rows(step, n, len(self.stores), rng)
        if len(self.stores) == 1:
            return np.zeros(n, dtype=np.int64)
        return rng.choice(len(self.stores), size=n, p=self.weights)

    def sources(self, step: int) -> np.ndarray:
        """The store (its index in `stores`) of each row of the global batch of step `step`."""
        return self._which(step, np.random.default_rng([self.seed, self.task_index, step]))

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Rows rank::world_size of the global batch of training step `step`: int64 array
        (batch_size // world_size, seq_len + 1); the whole batch by default. Only those rows are
        read, and they are the global batch's rows, byte for byte, whatever the world size."""
        _check_rank(self.batch_size, rank, world_size)
        rng = np.random.default_rng([self.seed, self.task_index, step])
        n = self.batch_size
        which = self._which(step, rng)
        out = np.empty((n // world_size, self.seq_len + 1), dtype=np.int64)
        for i, store in enumerate(self.stores):
            rows = np.flatnonzero(which == i)
            if rows.size:
                high = store.train.shape[0] - self.seq_len - 1
                # Every row's start is drawn, so the stream is the same for any world size.
                starts = rng.integers(0, high + 1, size=rows.size)
                mine = rows % world_size == rank
                if mine.any():
                    out[rows[mine] // world_size] = _windows(
                        store.train, starts[mine], self.seq_len + 1
                    )
        return out

    def local(self, rank: int = 0, world_size: int = 1, stop: int | None = None) -> LocalBatches:
        """This rank's rows of every step, each next step read ahead in a background thread."""
        return LocalBatches(self, rank, world_size, stop)


class LocalBatches:
    """`batch(step)` = `sampler.batch(step, rank, world_size)`; after each call the next step's rows
    are read in a background thread (file reads and decompression release the GIL), so a training
    step waits for its data only when the read takes longer than the step. Steps ≥ `stop` are
    never read ahead. `close()` (or a `with` block) ends the thread."""

    def __init__(self, sampler: BatchSampler, rank: int, world_size: int, stop: int | None = None):
        _check_rank(sampler.batch_size, rank, world_size)  # here, not in the thread
        self.sampler, self.rank, self.world_size, self.stop = sampler, rank, world_size, stop
        self.batch_size, self.seq_len = sampler.batch_size // world_size, sampler.seq_len
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="plc-batches")
        self._ahead: tuple[int, Future] | None = None

    def _read(self, step: int) -> np.ndarray:
        return self.sampler.batch(step, self.rank, self.world_size)

    def batch(self, step: int) -> np.ndarray:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == step:
            rows = ahead[1].result()
        else:
            if ahead is not None:
                ahead[1].cancel()
            rows = self._read(step)
        if self.stop is None or step + 1 < self.stop:
            self._ahead = (step + 1, self._pool.submit(self._read, step + 1))
        return rows

    def close(self) -> None:
        self._ahead = None
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LocalBatches:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
