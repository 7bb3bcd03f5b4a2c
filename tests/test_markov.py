"""Synthetic Markov-chain languages: the chain, its entropy rate, the store it writes, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats
from conftest import assert_bad_input, cli

from plc.data.markov import (
    DOC_SYMBOLS,
    SYMBOL_BYTES,
    MarkovChain,
    MarkovSpec,
    draw_chain,
    parse_markov,
)
from plc.data.sampling import eval_windows
from plc.data.shard import shard
from plc.data.tokenstore import open_store

EOS = 256


def to_symbols(ids: np.ndarray, symbols: int) -> np.ndarray:
    """Byte ids → symbol indices (EOS → −1)."""
    inverse = np.full(EOS + 1, -1)
    inverse[SYMBOL_BYTES[:symbols]] = np.arange(symbols)
    return inverse[np.asarray(ids, dtype=np.int64)]


def transitions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(previous, next) symbol pairs inside documents: no pair touches an EOS."""
    ok = (x[:-1] >= 0) & (x[1:] >= 0)
    return x[:-1][ok], x[1:][ok]


def test_uniform_successors_give_entropy_rate_ln_k():
    succ = np.array([[(s + d) % 5 for d in (1, 2, 3)] for s in range(5)])
    chain = MarkovChain(MarkovSpec(0, symbols=5, successors=3), succ, np.full((5, 3), 1 / 3))
    np.testing.assert_allclose(chain.stationary, 0.2, atol=1e-12)
    assert chain.entropy_rate == pytest.approx(math.log(3), abs=1e-12)


def test_two_state_chain_has_the_textbook_entropy_rate():
    a, b = 0.1, 0.4  # P(0→1), P(1→0)
    chain = MarkovChain(
        MarkovSpec(0, symbols=2, successors=2),
        np.array([[0, 1], [1, 0]]),
        np.array([[1 - a, a], [1 - b, b]]),
    )

    def h(p: float) -> float:
        return -(p * math.log(p) + (1 - p) * math.log(1 - p))

    pi0 = b / (a + b)
    np.testing.assert_allclose(chain.stationary, [pi0, 1 - pi0], atol=1e-12)
    assert chain.entropy_rate == pytest.approx(pi0 * h(a) + (1 - pi0) * h(b), abs=1e-12)


@pytest.mark.parametrize(
    "symbols,successors,alpha", [(64, 4, 1.0), (128, 4, 0.5), (8, 8, 2.0), (16, 1, 1.0)]
)
def test_drawn_chains_are_sparse_irreducible_with_rate_pi_times_row_entropy(
    symbols, successors, alpha
):
    chain = draw_chain(MarkovSpec(3, symbols, successors, alpha))
    P = chain.matrix
    assert ((P > 0).sum(axis=1) == successors).all()  # distinct successors, none of weight 0
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)
    reach = (P > 0) | np.eye(symbols, dtype=bool)
    for _ in range(int(math.log2(symbols)) + 1):
        reach = (reach.astype(float) @ reach.astype(float)) > 0
    assert reach.all()  # irreducible: every symbol reaches every other
    # Reference definitions: π spans the null space of Pᵀ − I, the rate is Σ π_i H(P_i·).
    null = scipy.linalg.null_space(P.T - np.eye(symbols))
    assert null.shape[1] == 1
    pi = null[:, 0] / null[:, 0].sum()
    np.testing.assert_allclose(chain.stationary, pi, atol=1e-12)
    rate = sum(pi[i] * scipy.stats.entropy(P[i]) for i in range(symbols))
    assert chain.entropy_rate == pytest.approx(rate, abs=1e-12)
    if successors == 1:  # a single cycle through every symbol: deterministic, uniform π
        assert chain.entropy_rate == 0.0
        np.testing.assert_allclose(chain.stationary, 1 / symbols)


def test_weights_that_underflow_to_zero_still_give_a_stationary_distribution():
    chain = draw_chain(MarkovSpec(0, 64, 4, 0.01))
    assert (chain.probs == 0).any()  # the cycle may be cut: π need not be unique any more
    pi = chain.stationary
    assert (pi >= 0).all() and pi.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(pi @ chain.matrix, pi, atol=1e-12)
    assert chain.entropy_rate == pytest.approx(
        float(pi @ scipy.stats.entropy(chain.matrix, axis=1))
    )


def test_row_entropies_follow_the_dirichlet_weights():
    # E[H] of a Dirichlet(α) draw over k outcomes is ψ(kα + 1) − ψ(α + 1).
    for alpha in (0.5, 1.0, 4.0):
        h = draw_chain(MarkovSpec(1, 256, 4, alpha)).state_entropy
        expected = scipy.special.digamma(4 * alpha + 1) - scipy.special.digamma(alpha + 1)
        assert abs(h.mean() - expected) < 4 * h.std() / math.sqrt(h.size), alpha


def test_store_transitions_match_the_chain_and_the_loss_floor_is_its_rate(tmp_path):
    res = shard(
        "m07", tmp_path / "m.zarr", source="markov:11", train_tokens=200_000, val_tokens=8192
    )
    store = open_store(res.path)
    chain = draw_chain(parse_markov("markov:11"))
    S = chain.spec.symbols
    assert res.entropy_rate == store.entropy_rate == pytest.approx(chain.entropy_rate, abs=0)
    ids = np.asarray(store.train)
    assert ids.size == 200_000 and res.train_docs == math.ceil(200_000 / (DOC_SYMBOLS + 1))
    eos = np.flatnonzero(ids == EOS)
    np.testing.assert_array_equal(eos, np.arange(DOC_SYMBOLS, ids.size, DOC_SYMBOLS + 1))
    x = to_symbols(ids, S)
    assert (x[ids != EOS] >= 0).all()

    prev, nxt = transitions(x)
    counts = np.zeros((S, S))
    np.add.at(counts, (prev, nxt), 1)
    assert counts[chain.matrix == 0].sum() == 0  # only the chain's own transitions occur

    def chi2_p(P: np.ndarray) -> float:
        n = counts.sum(axis=1, keepdims=True)
        expected = n * P
        mask = P > 0
        stat = ((counts - expected)[mask] ** 2 / expected[mask]).sum()
        dof = int(((mask.sum(axis=1) - 1) * (n[:, 0] > 0)).sum())
        return scipy.stats.chi2.sf(stat, dof)

    assert chi2_p(chain.matrix) > 1e-3
    uniform = (chain.matrix > 0) / chain.spec.successors  # right support, wrong weights
    assert chi2_p(uniform) < 1e-9  # the test can tell

    # Documents start in the stationary distribution, so symbol frequencies follow π...
    freq = np.bincount(x[x >= 0], minlength=S) / np.count_nonzero(x >= 0)
    np.testing.assert_allclose(freq, chain.stationary, atol=0.004)
    # ...and the true chain's loss on the data, the best any model can do, is the entropy rate.
    # (Its standard error from the means of 50 stretches: neighbouring losses are correlated.)
    nll = -np.log(chain.matrix[prev, nxt])
    stretches = nll[: nll.size // 50 * 50].reshape(50, -1).mean(axis=1)
    assert abs(nll.mean() - chain.entropy_rate) < 4 * stretches.std(ddof=1) / math.sqrt(50)

    # Val is another sample of the same chain: its evaluation windows are the chain's symbols,
    # with an EOS only where a window crosses one of the 4,096-token documents' ends.
    _, windows = eval_windows(store, 28, 64, seed=0)
    assert set(np.unique(windows)) <= {*SYMBOL_BYTES[: chain.spec.symbols].tolist(), EOS}
    assert (windows == EOS).sum(axis=1).max() <= 1
    assert not np.array_equal(np.asarray(store.val[:4096]), ids[:4096])


def test_a_document_depends_only_on_its_index():
    chain = draw_chain(MarkovSpec(2, symbols=32))
    whole = chain.documents(0, 5, (0, 0))
    np.testing.assert_array_equal(chain.documents(3, 2, (0, 0)), whole[3:])
    assert not np.array_equal(chain.documents(0, 5, (0, 1)), whole)


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_same_seed_same_store_bytes_other_seeds_differ(tmp_path):
    def make(name: str, source: str, seed: int = 0):
        res = shard(
            "m", tmp_path / name, source=source, train_tokens=20_000, val_tokens=3000, seed=seed
        )
        return res, open_store(res.path)

    a, sa = make("a.zarr", "markov:5,symbols=32")
    b, sb = make("b.zarr", "markov:5,symbols=32")
    assert _files(Path(a.path)) == _files(Path(b.path))
    assert sa.train.size == 20_000 and sa.val.size == 3000
    assert sa.attrs["markov"] == {
        "seed": 5,
        "symbols": 32,
        "successors": 4,
        "alpha": 1.0,
        "stationary_entropy": pytest.approx(
            draw_chain(MarkovSpec(5, 32)).attrs()["stationary_entropy"]
        ),
        "doc_symbols": DOC_SYMBOLS,
        "symbol_bytes": "printable ASCII 33-126, then bytes 0-32 and 127-255",
    }

    c, sc = make("c.zarr", "markov:6,symbols=32")  # another chain
    assert not np.array_equal(sc.train, sa.train) and c.entropy_rate != a.entropy_rate
    assert not np.array_equal(
        draw_chain(MarkovSpec(6, 32)).successors, draw_chain(MarkovSpec(5, 32)).successors
    )

    d, sd = make("d.zarr", "markov:5,symbols=32", seed=1)  # the same chain, another sample
    assert d.entropy_rate == a.entropy_rate and sd.attrs["markov"] == sa.attrs["markov"]
    assert not np.array_equal(sd.train, sa.train) and not np.array_equal(sd.val, sa.val)


def test_cli_default_budgets_and_data_info_show_the_chain(monkeypatch, capsys, tmp_path):
    out = tmp_path / "m07.zarr"
    proc = cli(
        monkeypatch,
        capsys,
        "shard",
        "--lang",
        "m07",
        "--source",
        "markov:7",
        "--out",
        out,
        "--json",
    )
    assert proc.returncode in (0, None), proc.stderr
    res = json.loads(proc.stdout)
    rate = draw_chain(MarkovSpec(7)).entropy_rate
    assert (res["train_tokens"], res["val_tokens"]) == (262_144, 16_384)
    assert res["source"] == "markov:7,symbols=64,successors=4,alpha=1"
    assert res["entropy_rate"] == pytest.approx(rate, abs=0)

    info = json.loads(cli(monkeypatch, capsys, "data", "info", out, "--json").stdout)
    assert info["entropy_rate"] == pytest.approx(rate, abs=0)
    assert info["attrs"]["markov"]["successors"] == 4
    text = cli(monkeypatch, capsys, "data", "info", out).stdout
    assert f"{rate:.4f} nats/token" in text and "64 symbols, 4 successors" in text


@pytest.mark.parametrize(
    "extra,fragments",
    [
        (["--source", "markov:7,symbols=257"], ["symbols must be 1…256", "257"]),
        (["--source", "markov:7,symbols=0"], ["symbols must be 1…256"]),
        (["--source", "markov:7,successors=65"], ["successors must be 1…symbols (64)", "65"]),
        (["--source", "markov:7,symbols=8,successors=0"], ["successors must be 1…symbols (8)"]),
        (["--source", "markov:7,alpha=0"], ["alpha must be a positive number"]),
        (["--source", "markov:7,alpha=-1"], ["alpha must be a positive number"]),
        (["--source", "markov:7,alpha=nan"], ["alpha must be a positive number"]),
        (["--source", "markov:7,alpha=x"], ["alpha must be a number", "'x'"]),
        (["--source", "markov:7,symbols=1.5"], ["symbols must be an integer"]),
        (["--source", "markov:abc"], ["SEED a non-negative integer"]),
        (["--source", "markov:-3"], ["SEED a non-negative integer"]),
        (["--source", "markov:"], ["SEED a non-negative integer"]),
        (["--source", "markov:7,states=4"], ["unknown option 'states=4'"]),
        (["--source", "markov:7,symbols"], ["unknown option 'symbols'"]),
        (["--source", "markov:7,alpha=1,alpha=2"], ["alpha given twice"]),
        (["--source", "markov:7", "--tokenizer", "qwen3"], ["byte tokens"]),
        (["--source", "markov:7", "--seed", "-1"], ["--seed must be non-negative"]),
    ],
)
def test_bad_markov_specs_get_one_line_exit_2_and_write_nothing(
    monkeypatch, capsys, tmp_path, extra, fragments
):
    out = tmp_path / "out" / "m.zarr"
    proc = cli(monkeypatch, capsys, "shard", "--lang", "m07", "--out", out, *extra)
    assert_bad_input(proc, *fragments)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# ------------------------------------------------------------- the shared map (issue 22)


def _q(chain: MarkovChain) -> np.ndarray:
    """Q[a, b, c] = P(next = c | last two a, b), dense, straight from the definition."""
    S, beta = chain.spec.symbols, chain.spec.shared
    Q = np.empty((S, S, S))
    for a in range(S):
        for b in range(S):
            Q[a, b] = (1 - beta) * chain.matrix[b]
            Q[a, b, chain.shared_map[a]] += beta
    return Q


def test_shared_map_entropy_rate_is_the_pair_chain_brute_force():
    chain = draw_chain(parse_markov("markov:5,symbols=3,successors=2,shared=0.4"))
    S, Q = 3, _q(chain)
    # G(a) sometimes is a successor of b and sometimes not: both branches of the entropy.
    hits = [chain.shared_map[a] in chain.successors[b] for a in range(S) for b in range(S)]
    assert any(hits) and not all(hits)
    # The pair chain as a dense 9 × 9 matrix, its stationary vector from an eigendecomposition.
    T = np.zeros((S * S, S * S))
    for a in range(S):
        for b in range(S):
            T[a * S + b, b * S : b * S + S] = Q[a, b]
    w, v = scipy.linalg.eig(T.T)
    mu = np.real(v[:, np.argmin(np.abs(w - 1))])
    mu /= mu.sum()
    np.testing.assert_allclose(chain.pair_stationary.ravel(), mu, atol=1e-12)
    # Every sequence of 5 symbols from the stationary pair: H(X4 | X0…X3) is the entropy rate.
    seqs = np.array(np.meshgrid(*[range(S)] * 5, indexing="ij")).reshape(5, -1).T
    p = mu[seqs[:, 0] * S + seqs[:, 1]]
    for t in range(2, 5):
        p = p * Q[seqs[:, t - 2], seqs[:, t - 1], seqs[:, t]]
    prefix = p.reshape(-1, S).sum(axis=1)

    def h(x):
        x = x[x > 0]
        return -np.sum(x * np.log(x))

    assert chain.entropy_rate == pytest.approx(h(p) - h(prefix), abs=1e-12)
    plain = draw_chain(parse_markov("markov:5,symbols=3,successors=2"))
    assert chain.entropy_rate != pytest.approx(plain.entropy_rate, abs=1e-3)


def test_shared_map_is_one_permutation_for_every_chain_of_its_seed():
    maps = [draw_chain(parse_markov(f"markov:{k},shared=0.3")).shared_map for k in (0, 1, 9)]
    assert sorted(maps[0]) == list(range(64))
    assert all(np.array_equal(m, maps[0]) for m in maps)
    other = draw_chain(parse_markov("markov:1,shared=0.3,shared_seed=1")).shared_map
    assert not np.array_equal(other, maps[0])
    # The map's stream is its own: the map of seed k is not chain k's cycle.
    assert not np.array_equal(maps[0], np.random.default_rng([0x6D61726B, 0]).permutation(64))


def test_shared_store_follows_the_mixture_and_its_floor_is_the_rate(tmp_path):
    source = "markov:11,shared=0.3"
    res = shard("m07", tmp_path / "m.zarr", source=source, train_tokens=300_000, val_tokens=4096)
    store = open_store(res.path)
    chain = draw_chain(parse_markov(source))
    S, Q = 64, _q(chain)
    assert res.entropy_rate == store.entropy_rate == pytest.approx(chain.entropy_rate, abs=0)
    assert (
        store.attrs["source"]
        == "markov:11,symbols=64,successors=4,alpha=1,shared=0.3,shared_seed=0"
    )
    assert store.attrs["markov"]["shared"] == 0.3 and store.attrs["markov"]["shared_seed"] == 0
    assert (
        "shared"
        not in open_store(
            shard(
                "m", tmp_path / "p.zarr", source="markov:11", train_tokens=5000, val_tokens=500
            ).path
        ).attrs["markov"]
    )
    x = to_symbols(np.asarray(store.train), S)
    ok = (x[:-2] >= 0) & (x[1:-1] >= 0) & (x[2:] >= 0)
    a, b, c = x[:-2][ok], x[1:-1][ok], x[2:][ok]
    assert Q[a, b, c].min() > 0  # only the mixture's transitions occur
    # Where G(a) is not a successor of b, the next symbol is G(a) a fraction β of the time.
    off = ~(chain.successors[b] == chain.shared_map[a][:, None]).any(axis=1)
    frac = np.mean(c[off] == chain.shared_map[a[off]])
    assert frac == pytest.approx(0.3, abs=4 * math.sqrt(0.21 / off.sum()))
    # Given b, the chain's successors keep their weights relative to each other (β's coin aside).
    counts = np.zeros((S, S))
    np.add.at(counts, (b[~(c == chain.shared_map[a])], c[~(c == chain.shared_map[a])]), 1)
    n = counts.sum(axis=1, keepdims=True)
    stat = (counts - n * chain.matrix)[chain.matrix > 0] ** 2 / (n * chain.matrix)[chain.matrix > 0]
    # (Excluding every G hit also drops some chain draws, so only a loose check of the weights.)
    assert stat.sum() / (chain.matrix > 0).sum() < 3
    # Pairs follow μ, and the true process's loss on the data is the entropy rate.
    pairs = np.bincount(a * S + b, minlength=S * S) / a.size
    np.testing.assert_allclose(pairs, chain.pair_stationary.ravel(), atol=0.002)
    nll = -np.log(Q[a, b, c])
    stretches = nll[: nll.size // 50 * 50].reshape(50, -1).mean(axis=1)
    assert abs(nll.mean() - chain.entropy_rate) < 4 * stretches.std(ddof=1) / math.sqrt(50)
    assert abs(nll.mean() - draw_chain(parse_markov("markov:11")).entropy_rate) > 0.1


def test_shared_same_seed_same_store_and_beta_zero_is_the_plain_chain(tmp_path):
    def files(name: str, source: str) -> dict[str, bytes]:
        res = shard("m", tmp_path / name, source=source, train_tokens=20_000, val_tokens=3000)
        return _files(Path(res.path))

    a = files("a.zarr", "markov:5,symbols=32,shared=0.3")
    assert a == files("b.zarr", "markov:5,symbols=32,shared=0.3")
    assert a != files("c.zarr", "markov:5,symbols=32,shared=0.3,shared_seed=2")
    assert files("d.zarr", "markov:5,symbols=32,shared=0") == files("e.zarr", "markov:5,symbols=32")


@pytest.mark.parametrize(
    "source,fragments",
    [
        ("markov:7,shared=1", ["shared (β) must be in [0, 1)", "1.0"]),
        ("markov:7,shared=-0.1", ["shared (β) must be in [0, 1)"]),
        ("markov:7,shared=nan", ["shared (β) must be in [0, 1)"]),
        ("markov:7,shared=x", ["shared must be a number"]),
        ("markov:7,shared=0.3,shared_seed=-1", ["shared_seed must be non-negative"]),
        ("markov:7,shared=0.3,shared_seed=1.5", ["shared_seed must be an integer"]),
        ("markov:7,shared_seed=3", ["shared_seed without shared"]),
        ("markov:7,symbols=300,shared=0.3", ["symbols must be 1…256"]),
    ],
)
def test_bad_shared_specs_get_one_line_exit_2(monkeypatch, capsys, tmp_path, source, fragments):
    out = tmp_path / "out" / "m.zarr"
    proc = cli(monkeypatch, capsys, "shard", "--lang", "m", "--out", out, "--source", source)
    assert_bad_input(proc, *fragments)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
