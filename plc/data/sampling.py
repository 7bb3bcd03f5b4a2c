"""Batches of token windows: random training windows and the fixed evaluation windows.

Training windows are a pure function of (seed, task index, step): a resumed run needs only the step
to continue the same stream, each rank can take its rows of the same global batch, and every
appearance of a language (a new task index) sees a new sample of its data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from plc.data.tokenstore import TokenStore
from plc.errors import PlcError


def _windows(arr, starts: np.ndarray, length: int) -> np.ndarray:
    if isinstance(arr, np.ndarray):
        # Rows of a strided view of all windows: one copy per row, no index array, no Python loop.
        return np.lib.stride_tricks.sliding_window_view(arr, length)[starts]
    if hasattr(arr, "windows"):  # RawTokens: one read per window from the chunk files
        return arr.windows(starts, length)
    return np.stack([arr[s : s + length] for s in starts.tolist()])


def eval_windows(store: TokenStore, n: int, seq_len: int, flag: str = "--seqs") -> np.ndarray:
    """The fixed evaluation set: window i is val[i·(L+1) : (i+1)·(L+1)], i = 0…n−1. Shape (n, L+1).

    `flag` names the option that set `n`, so the error says what to pass instead."""
    if n <= 0 or seq_len <= 0:
        raise PlcError("the number of evaluation sequences and their length must be positive")
    need = n * (seq_len + 1)
    have = int(store.val.shape[0])
    if have < need:
        raise PlcError(
            f"{store.path} has {have:,} val tokens, fewer than {n} sequences × {seq_len + 1} = "
            f"{need:,}; pass {flag} {have // (seq_len + 1)} (or fewer) or shard more val tokens"
        )
    return np.asarray(store.val[:need], dtype=np.int64).reshape(n, seq_len + 1)


class BatchSampler:
    """Global batches of `batch_size` windows of `seq_len + 1` tokens from one store or a mixture."""

    def __init__(
        self,
        stores: Sequence[TokenStore],
        seq_len: int,
        batch_size: int,
        seed: int,
        task_index: int,
        weights: Sequence[float] | None = None,
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

    def batch(self, step: int) -> np.ndarray:
        """The global batch of training step `step`: int64 array (batch_size, seq_len + 1)."""
        rng = np.random.default_rng([self.seed, self.task_index, step])
        n = self.batch_size
        which = (
            np.zeros(n, dtype=np.int64)
            if len(self.stores) == 1
            else rng.choice(len(self.stores), size=n, p=self.weights)
        )
        out = np.empty((n, self.seq_len + 1), dtype=np.int64)
        for i, store in enumerate(self.stores):
            rows = np.flatnonzero(which == i)
            if rows.size:
                high = store.train.shape[0] - self.seq_len - 1
                starts = rng.integers(0, high + 1, size=rows.size)
                out[rows] = _windows(store.train, starts, self.seq_len + 1)
        return out
