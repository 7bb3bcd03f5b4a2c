"""Synthetic languages: random sparse first-order Markov chains over byte symbols.

A chain's loss floor is known exactly: its entropy rate Σ_i π_i H(P_i·) (stationary distribution
times per-state entropy, nats per token). That makes it a positive control for plasticity loss:
every task a new chain, training on it learns nothing that the next chain can use.

`markov:SEED[,symbols=S,successors=K,alpha=A,shared=β,shared_seed=M]` (`plc shard --source`)
names one chain:
- symbol k is byte id SYMBOL_BYTES[k]: printable ASCII first (so `plc data info` shows readable
  text), then the other bytes; the store uses the byte tokenizer unchanged;
- state s gets K distinct successors with Dirichlet(A) weights. The first is s's next symbol on a
  random cycle through all S symbols, so the chain is irreducible: every symbol occurs and the
  stationary distribution is unique (unless alpha ≲ 0.01 rounds some weights to 0); the other
  K−1 are drawn at random from the rest;
- with `shared=β` > 0 (the transfer control, issue 22), each next symbol is G[x_{t−1}] with
  probability β — the symbol two back mapped by a permutation G of the S symbols drawn from
  `shared_seed` alone (default 0), so every chain of a plan and its probe share it and training on
  one task teaches something the next can use — and otherwise the chain's successor of x_t. The
  next symbol then depends on the last two: the floor is the entropy rate of the pair chain,
  Σ_{a,b} μ(a,b) H(Q(·|a,b)), with μ its stationary distribution. G comes from a random stream
  of its own (not any chain's), so no shared seed can make two chains of a plan equal.

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
_PAIR_ITERATIONS = 100_000  # the pair chain's fixed point: random sparse chains mix in far fewer
BLOCK_DOCS = 256  # documents generated together: ~1 Mi tokens per block, ~8 MiB of uniforms
SPEC_HELP = "markov:SEED[,symbols=64,successors=4,alpha=1,shared=0,shared_seed=0]"
# Default budgets: a 128-step task of 16 × 65-token windows reads ~133 K train tokens, half the
# split; val holds 252 windows of 65 tokens (the control evaluates 28).
DEFAULT_TRAIN_TOKENS = 262_144
DEFAULT_VAL_TOKENS = 16_384
_TAG = 0x6D61726B  # "mark": keeps the chain's random streams apart from any other use of SEED
_SHARED_TAG = 0x73686172  # "shar": the shared map's stream, apart from every chain's


@dataclass(frozen=True)
class MarkovSpec:
    seed: int
    symbols: int = 64
    successors: int = 4
    alpha: float = 1.0
    shared: float = 0.0  # β: the probability of the shared map's symbol
    shared_seed: int = 0  # the shared map's seed

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
        if not (math.isfinite(self.shared) and 0 <= self.shared < 1):
            raise PlcError(f"markov: shared (β) must be in [0, 1), got {self.shared}")
        if self.shared_seed < 0:
            raise PlcError(f"markov: shared_seed must be non-negative, got {self.shared_seed}")

    def describe(self) -> str:
        """The canonical spec string (stored as the store's `source`)."""
        text = (
            f"markov:{self.seed},symbols={self.symbols},successors={self.successors},"
            f"alpha={self.alpha:g}"
        )
        if self.shared:
            text += f",shared={self.shared:g},shared_seed={self.shared_seed}"
        return text

    def record(self) -> dict:
        """The spec's fields as a store records them: without β's fields when β = 0, so such a
        store is byte for byte the plain chain's."""
        fields = asdict(self)
        if not self.shared:
            del fields["shared"], fields["shared_seed"]
        return fields


def parse_markov(spec: str) -> MarkovSpec:
    """`markov:SEED[,symbols=S,successors=K,alpha=A,shared=β,shared_seed=M]` → MarkovSpec, or a
    one-line PlcError."""
    body = spec.removeprefix("markov:")
    seed, *options = body.split(",")
    if not re.fullmatch(r"\d+", seed.strip()):
        raise PlcError(f"{spec!r}: expected {SPEC_HELP} with SEED a non-negative integer")
    kwargs: dict[str, int | float] = {}
    for option in options:
        key, eq, value = (part.strip() for part in option.partition("="))
        if key not in ("symbols", "successors", "alpha", "shared", "shared_seed") or not eq:
            raise PlcError(f"{spec!r}: unknown option {option!r}; expected {SPEC_HELP}")
        if key in kwargs:
            raise PlcError(f"{spec!r}: {key} given twice")
        try:
            kwargs[key] = float(value) if key in ("alpha", "shared") else int(value)
        except ValueError:
            kind = "a number" if key in ("alpha", "shared") else "an integer"
            raise PlcError(f"{spec!r}: {key} must be {kind}, got {value!r}") from None
    if "shared_seed" in kwargs and not kwargs.get("shared"):
        # β = 0 never uses the map: the seed would name a second spelling of the same chain.
        raise PlcError(f"{spec!r}: shared_seed without shared=β > 0 has no map to seed")
    return MarkovSpec(int(seed), **kwargs)


@dataclass(frozen=True)
class MarkovChain:
    """Symbol s goes to successors[s, j] with probability probs[s, j] (symbol indices, not bytes)."""

    spec: MarkovSpec
    successors: np.ndarray  # (S, K) int64, distinct per row
    probs: np.ndarray  # (S, K) float64, rows sum to 1
    shared_map: np.ndarray | None = None  # (S,) permutation G when spec.shared > 0

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

    @cached_property
    def pair_stationary(self) -> np.ndarray:
        """μ[a, b] = P(x_{t−1} = a, x_t = b) in the stationary process (rows: a).

        Without a shared map it is π_a P_ab. With one, μ is the fixed point of the pair chain,
        μ'[b, c] = β μ[G⁻¹(c), b] + (1 − β) π_b P_bc (π_b = Σ_a μ[a, b]), found by iterating its
        lazy form (aperiodic, the same fixed point) from π_a P_ab to the last bit.
        """
        mu = self.stationary[:, None] * self.matrix
        if self.shared_map is None:
            return mu
        beta, inverse = self.spec.shared, np.argsort(self.shared_map)
        for _ in range(_PAIR_ITERATIONS):
            step = beta * mu[inverse, :].T + (1 - beta) * mu.sum(axis=0)[:, None] * self.matrix
            new = 0.5 * (mu + step)
            new /= new.sum()
            if np.abs(new - mu).sum() < 1e-14:
                return new
            mu = new
        raise PlcError(f"{self.spec.describe()}: the pair chain did not converge")

    @cached_property
    def pair_entropy(self) -> np.ndarray:
        """H(Q(·|a, b)) in nats for each pair (a, b): the next symbol's law given the last two."""
        if self.shared_map is None:
            return np.broadcast_to(self.state_entropy, (self.spec.symbols,) * 2)
        beta = self.spec.shared
        # q[a, b, j]: successor j of b, plus β where it is G(a); β alone where no successor is.
        hit = self.successors[None, :, :] == self.shared_map[:, None, None]
        q = (1 - beta) * self.probs[None, :, :] + beta * hit
        return _entropy(q) - np.where(hit.any(axis=2), 0.0, beta * math.log(beta))

    @property
    def entropy_rate(self) -> float:
        """Nats per token, the floor of a next-token loss on this chain: Σ_s π_s H(P_s·), or
        with a shared map Σ_{a,b} μ(a,b) H(Q(·|a,b))."""
        if self.shared_map is None:
            return float(self.stationary @ self.state_entropy)
        return float(np.sum(self.pair_stationary * self.pair_entropy))

    def attrs(self) -> dict:
        """What a token store records about its chain (JSON-able)."""
        marginal = self.stationary if self.shared_map is None else self.pair_stationary.sum(0)
        return {
            **self.spec.record(),
            "stationary_entropy": float(_entropy(marginal)),
            "doc_symbols": DOC_SYMBOLS,
            "symbol_bytes": "printable ASCII 33-126, then bytes 0-32 and 127-255",
        }

    def documents(self, first: int, count: int, stream: Sequence[int]) -> np.ndarray:
        """Symbol indices of documents first…first+count−1 of `stream` (non-negative integers
        naming one sample of the chain), shape (count, DOC_SYMBOLS).

        Document d is a pure function of (seed, stream, d): its own generator draws a uniform for
        its start (inverse CDF of π) and one for each step (inverse CDF of the current row). With
        a shared map it then draws a second uniform per step, the coin of β; the start is a pair
        drawn from μ (u[0]; u[1] is unused).
        """
        shared = self.shared_map is not None
        u = np.empty((DOC_SYMBOLS, count))
        coin = np.empty((DOC_SYMBOLS, count)) if shared else None
        for i in range(count):
            rng = np.random.default_rng([_TAG, self.spec.seed, *stream, first + i])
            u[:, i] = rng.random(DOC_SYMBOLS)
            if shared:
                coin[:, i] = rng.random(DOC_SYMBOLS)
        if shared:
            return self._shared_documents(u, coin)
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

    def _shared_documents(self, u: np.ndarray, coin: np.ndarray) -> np.ndarray:
        S, G = self.spec.symbols, self.shared_map
        pair = np.searchsorted(np.cumsum(self.pair_stationary.ravel()), u[0], side="right")
        pair = np.minimum(pair, S * S - 1)
        row_cdf = np.cumsum(self.probs, axis=1)[:, :-1]
        out = np.empty(u.shape, dtype=np.int64)
        out[0], out[1] = pair // S, pair % S
        for t in range(2, DOC_SYMBOLS):
            j = (u[t, :, None] >= row_cdf[out[t - 1]]).sum(axis=1)
            out[t] = np.where(
                coin[t] < self.spec.shared, G[out[t - 2]], self.successors[out[t - 1], j]
            )
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
    if not spec.shared:
        return MarkovChain(spec, succ, probs)
    shared_map = np.random.default_rng([_SHARED_TAG, S, spec.shared_seed]).permutation(S)
    return MarkovChain(spec, succ, probs, shared_map)


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
