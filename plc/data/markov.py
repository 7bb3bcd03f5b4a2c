"""Synthetic languages: random sparse first-order Markov chains over byte symbols.

A chain's loss floor is known exactly: its entropy rate Σ_i π_i H(P_i·) (stationary distribution
times per-state entropy, nats per token). That makes it a positive control for plasticity loss:
every task a new chain, training on it learns nothing that the next chain can use.

`markov:SEED[,symbols=S,successors=K,alpha=A]` (`plc shard --source`) names one chain:
- symbol k is byte id SYMBOL_BYTES[k]: printable ASCII first (so `plc data info` shows readable
  text), then the other bytes; the store uses the byte tokenizer unchanged;
- state s gets K distinct successors with Dirichlet(A) weights. The first is s's next symbol on a
  random cycle through all S symbols, so the chain is irreducible: every symbol occurs and the
  stationary distribution is unique (unless alpha ≲ 0.01 rounds some weights to 0); the other
  K−1 are drawn at random from the rest.

A store's split is a run of documents, each DOC_SYMBOLS symbols of an independent stretch of the
chain started from its stationary distribution, then EOS. Inside a document every prediction's
floor is the entropy rate; the EOS and the symbol after it are not part of the chain, one pair per
DOC_SYMBOLS + 1 tokens (under 0.004 nats per token of excess for a perfect model), and the first
document of val holds every evaluation window of the small presets, which then have no EOS at all.
Independent documents are what make generation vectorised: all documents of a block advance one
step per numpy call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from plc.errors import PlcError

BYTE_VOCAB = 256  # symbols are byte ids; EOS (256) separates documents
SYMBOL_BYTES = np.concatenate([np.arange(33, 127), np.arange(0, 33), np.arange(127, 256)])
DOC_SYMBOLS = 4095  # a document and its EOS are 4,096 tokens
BLOCK_DOCS = 256  # documents generated together: ~1 Mi tokens per block, ~8 MiB of uniforms
SPEC_HELP = "markov:SEED[,symbols=64,successors=4,alpha=1]"
# Default budgets: a 128-step task of 16 × 65-token windows reads ~133 K train tokens, half the
# split; val holds 252 windows of 65 tokens (the control evaluates 28).
DEFAULT_TRAIN_TOKENS = 262_144
DEFAULT_VAL_TOKENS = 16_384
_TAG = 0x6D61726B  # "mark": keeps the chain's random streams apart from any other use of SEED


@dataclass(frozen=True)
class MarkovSpec:
    seed: int
    symbols: int = 64
    successors: int = 4
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise PlcError(f"markov: the seed must be a non-negative integer, got {self.seed}")
        if not 1 <= self.symbols <= BYTE_VOCAB:
            raise PlcError(
                f"markov: symbols must be 1…{BYTE_VOCAB} (the byte vocabulary), got {self.symbols}"
            )
        if not 1 <= self.successors <= self.symbols:
            raise PlcError(
                f"markov: successors must be 1…symbols ({self.symbols}), got {self.successors}"
            )
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise PlcError(f"markov: alpha must be a positive number, got {self.alpha}")

    def describe(self) -> str:
        """The canonical spec string (stored as the store's `source`)."""
        return (
            f"markov:{self.seed},symbols={self.symbols},successors={self.successors},"
            f"alpha={self.alpha:g}"
        )


def parse_markov(spec: str) -> MarkovSpec:
    """`markov:SEED[,symbols=S,successors=K,alpha=A]` → MarkovSpec, or one-line PlcError."""
    body = spec.removeprefix("markov:")
    seed, *options = body.split(",")
    if not re.fullmatch(r"\d+", seed.strip()):
        raise PlcError(f"{spec!r}: expected {SPEC_HELP} with SEED a non-negative integer")
    kwargs: dict[str, int | float] = {}
    for option in options:
        key, eq, value = (part.strip() for part in option.partition("="))
        if key not in ("symbols", "successors", "alpha") or not eq:
            raise PlcError(f"{spec!r}: unknown option {option!r}; expected {SPEC_HELP}")
        if key in kwargs:
            raise PlcError(f"{spec!r}: {key} given twice")
        try:
            kwargs[key] = float(value) if key == "alpha" else int(value)
        except ValueError:
            kind = "a number" if key == "alpha" else "an integer"
            raise PlcError(f"{spec!r}: {key} must be {kind}, got {value!r}") from None
    return MarkovSpec(int(seed), **kwargs)


@dataclass(frozen=True)
class MarkovChain:
    """Symbol s goes to successors[s, j] with probability probs[s, j] (symbol indices, not bytes)."""

    spec: MarkovSpec
    successors: np.ndarray  # (S, K) int64, distinct per row
    probs: np.ndarray  # (S, K) float64, rows sum to 1

    @cached_property
    def matrix(self) -> np.ndarray:
        """The dense (S, S) transition matrix."""
        S = self.spec.symbols
        P = np.zeros((S, S))
        np.put_along_axis(P, self.successors, self.probs, axis=1)
        return P

    @cached_property
    def stationary(self) -> np.ndarray:
        """π with π P = π, Σπ = 1 (unique: the chain is irreducible by construction)."""
        S = self.spec.symbols
        # Least squares keeps this a stationary distribution even if underflowing Dirichlet
        # weights (tiny alpha) cut the cycle and the chain were reducible.
        A = np.vstack([self.matrix.T - np.eye(S), np.ones(S)])
        b = np.zeros(S + 1)
        b[-1] = 1.0
        pi = np.clip(np.linalg.lstsq(A, b, rcond=None)[0], 0.0, None)
        return pi / pi.sum()

    @cached_property
    def state_entropy(self) -> np.ndarray:
        """H(P_s·) in nats for each state s."""
        return _entropy(self.probs)

    @property
    def entropy_rate(self) -> float:
        """Σ_s π_s H(P_s·): nats per token, the floor of a next-token loss on this chain."""
        return float(self.stationary @ self.state_entropy)

    def attrs(self) -> dict:
        """What a token store records about its chain (JSON-able)."""
        return {
            **asdict(self.spec),
            "stationary_entropy": float(_entropy(self.stationary)),
            "doc_symbols": DOC_SYMBOLS,
            "symbol_bytes": "printable ASCII 33-126, then bytes 0-32 and 127-255",
        }

    def documents(self, first: int, count: int, stream: Sequence[int]) -> np.ndarray:
        """Symbol indices of documents first…first+count−1 of `stream` (non-negative integers
        naming one sample of the chain), shape (count, DOC_SYMBOLS).

        Document d is a pure function of (seed, stream, d): its own generator draws a uniform for
        its start (inverse CDF of π) and one for each step (inverse CDF of the current row).
        """
        u = np.empty((DOC_SYMBOLS, count))
        for i in range(count):
            rng = np.random.default_rng([_TAG, self.spec.seed, *stream, first + i])
            u[:, i] = rng.random(DOC_SYMBOLS)
        S = self.spec.symbols
        start_cdf = np.cumsum(self.stationary)
        # Cumulative weights without the last column: j = how many of them u has passed.
        row_cdf = np.cumsum(self.probs, axis=1)[:, :-1]
        out = np.empty((DOC_SYMBOLS, count), dtype=np.int64)
        x = np.minimum(np.searchsorted(start_cdf, u[0], side="right"), S - 1)
        out[0] = x
        for t in range(1, DOC_SYMBOLS):
            j = (u[t, :, None] >= row_cdf[x]).sum(axis=1)
            x = self.successors[x, j]
            out[t] = x
        return out.T


def _entropy(p: np.ndarray) -> np.ndarray:
    """−Σ p log p over the last axis, in nats, with 0 log 0 = 0."""
    return -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=-1)


def draw_chain(spec: MarkovSpec) -> MarkovChain:
    """The chain named by `spec`: the same spec gives the same chain on every machine."""
    S, K = spec.symbols, spec.successors
    rng = np.random.default_rng([_TAG, spec.seed])
    cycle = rng.permutation(S)
    succ = np.empty((S, K), dtype=np.int64)
    succ[cycle, 0] = np.roll(cycle, -1)
    # K−1 more distinct successors per row: the smallest random keys, the cycle successor excluded.
    keys = rng.random((S, S))
    keys[np.arange(S), succ[:, 0]] = np.inf
    succ[:, 1:] = np.argsort(keys, axis=1)[:, : K - 1]
    probs = rng.dirichlet(np.full(K, spec.alpha), size=S)
    probs /= probs.sum(axis=1, keepdims=True)  # rows sum to 1 to the last bit (K = 1: exactly 1)
    return MarkovChain(spec, succ, probs)


def markov_tokens(
    chain: MarkovChain, tokens: int, stream: Sequence[int], eos_id: int
) -> Iterator[tuple[np.ndarray, int]]:
    """Blocks of byte-token ids (each document followed by EOS) totalling exactly `tokens`, with
    the number of documents each block starts; the last document is cut to fit."""
    doc_tokens = DOC_SYMBOLS + 1
    n_docs = -(-tokens // doc_tokens)
    to_byte = SYMBOL_BYTES[: chain.spec.symbols].astype(np.uint32)
    left = tokens
    for first in range(0, n_docs, BLOCK_DOCS):
        count = min(BLOCK_DOCS, n_docs - first)
        block = np.empty((count, doc_tokens), dtype=np.uint32)
        block[:, :-1] = to_byte[chain.documents(first, count, stream)]
        block[:, -1] = eos_id
        flat = block.ravel()[:left]
        left -= flat.size
        yield flat, count
