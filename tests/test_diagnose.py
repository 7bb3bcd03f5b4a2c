"""plc diagnose: |θ|, dormant units (eq. 3–4), attention entropy (eq. 5) and feature ranks, each
checked against a direct computation on a tiny model, plus constructed dead units and heads."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch
import zarr
from conftest import assert_bad_input, run_plc

from plc.data.sampling import eval_windows
from plc.data.tokenizers import ByteTokenizer
from plc.data.tokenstore import open_lang, write_store
from plc.diagnose import diagnose
from plc.init import init_checkpoint
from plc.measures import PERTURB_STREAM, h_max, param_abs_mean
from plc.store import load_checkpoint, save_checkpoint

CTX = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(root, langs=("vi", "ru"), val_tokens=4000, tokenizer=None):
    rng = np.random.default_rng(1)
    for lang in langs:
        write_store(
            root / f"{lang}.zarr",
            rng.integers(0, 256, 5000),
            rng.integers(0, 256, val_tokens),
            lang=lang,
            tokenizer=tokenizer or ByteTokenizer().identity(),
        )
    return root


def _ckpt(path, size="micro", edit=None):
    init_checkpoint(path, size=size, tokenizer="byte", context=CTX, seed=3)
    if edit is not None:
        ckpt = load_checkpoint(path)
        model = ckpt.build_model()
        with torch.no_grad():
            edit(model)
        ckpt.model = model.state_dict()
        save_checkpoint(path, ckpt, force=True)
    return path


def _windows(data, lang, n, L=CTX, seed=3):
    """The windows diagnose reads: the evaluation draw of the run's seed (the checkpoints' 3)."""
    _, windows = eval_windows(open_lang(data, lang), n, L, seed)
    return torch.from_numpy(windows[:, :L])


def _direct_activations(model, x):
    """Post-GeLU activations of every layer, (layers, tokens, units), by plain forward hooks."""
    acts = []
    hooks = [
        b.mlp.act.register_forward_hook(lambda m, i, o: acts.append(o.flatten(0, 1)))
        for b in model.transformer.h
    ]
    with torch.no_grad():
        model.hidden(x)
    for h in hooks:
        h.remove()
    return torch.stack(acts).double()


def _direct_entropy(model, x, q_from):
    """Per-head mean entropy by hand: explicit scores, causal mask, exp / sum, −Σ p ln p."""
    with torch.no_grad():
        T = x.shape[1]
        h = model.transformer.wte(x) + model.transformer.wpe(torch.arange(T))
        out = []
        for block in model.transformer.h:
            a = block.attn
            q, k, _ = a.c_attn(block.ln_1(h)).split(h.shape[-1], dim=2)
            q, k = (t.view(*x.shape, a.n_head, -1).transpose(1, 2).double() for t in (q, k))
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), -math.inf)
            e = (scores - scores.amax(-1, keepdim=True)).exp()
            p = e / e.sum(-1, keepdim=True)
            logp = torch.where(p > 0, p.log(), torch.zeros_like(p))
            ent = -(p * logp).sum(-1)[:, :, q_from - 1 :]  # (B, H, queries)
            out.append(ent.mean(dim=(0, 2)))
            h = block(h)
    return torch.stack(out)


def test_h_max_is_the_papers_value_and_the_mean_log():
    assert round(h_max(256, 2048), 4) == 6.9215
    assert h_max(256, 2048) == pytest.approx(np.mean(np.log(np.arange(256, 2049))), rel=1e-12)
    assert h_max(7, 7) == pytest.approx(math.log(7))


def test_param_abs_mean_pools_every_non_embedding_parameter(tmp_path):
    model = load_checkpoint(_ckpt(tmp_path / "c.pt")).build_model()
    rest = [
        p
        for n, p in model.named_parameters()
        if not n.startswith(("transformer.wte", "transformer.wpe"))
    ]
    assert sum(p.numel() for p in rest) == model.config.n_params
    pooled = torch.cat([p.detach().flatten() for p in rest]).double().abs().mean()
    assert param_abs_mean(model) == pytest.approx(float(pooled), rel=1e-12)
    # Pooled, not a mean of per-tensor means (LayerNorm weights of 1 would dominate those).
    per_tensor = np.mean([p.detach().abs().mean().item() for p in rest])
    assert abs(param_abs_mean(model) - per_tensor) > 0.01


def test_dormant_and_ranks_match_direct_hooks_on_a_model_with_dead_units(tmp_path):
    dead = {0: [3, 17, 100], 1: [5]}

    def kill(model):
        for layer, units in dead.items():
            fc = model.transformer.h[layer].mlp.c_fc
            fc.weight[units] = 0.0
            fc.bias[units] = -10.0  # GeLU(−10) ≈ −8e−23: silent on every token

    path = _ckpt(tmp_path / "c.pt", edit=kill)
    data = _data(tmp_path / "data")
    # 7 windows in batches of 3: the last batch is partial and the entropy pass (on ru) is separate.
    res = diagnose(
        path,
        data=data,
        metrics=tmp_path / "m",
        dormant_seqs=7,
        entropy_seqs=5,
        batch_size=3,
        device="cpu",
    )

    model = load_checkpoint(path).build_model()
    acts = _direct_activations(model, _windows(data, "vi", 7))  # (L, tokens, N)
    mean_abs = acts.abs().mean(dim=1)
    scores = mean_abs / mean_abs.mean(dim=1, keepdim=True)
    units = zarr.open_group(res.units_path, mode="r")
    np.testing.assert_allclose(units["mean_abs_activation"][:], mean_abs.numpy(), rtol=1e-5)
    np.testing.assert_allclose(units["dormant_score"][:], scores.numpy(), rtol=1e-5, atol=1e-7)

    found = {
        layer: np.flatnonzero(units["dormant_score"][layer] <= 0.01).tolist() for layer in (0, 1)
    }
    assert found == dead
    n = 4 * model.config.d_model
    assert res.dormant_pct_per_layer == pytest.approx([100 * 3 / n, 100 * 1 / n])
    assert res.dormant_pct == pytest.approx(100 * 4 / (2 * n))

    for layer in range(2):
        sv = torch.linalg.svdvals(acts[layer])
        p = sv / sv.sum()
        assert res.effective_rank[layer] == pytest.approx(
            float(torch.exp(-(p * p.log()).sum())), rel=1e-6
        )
        assert res.stable_rank[layer] == pytest.approx(
            float((sv**2).sum() / sv.max() ** 2), rel=1e-6
        )
        assert res.feature_norm[layer] == pytest.approx(
            float(acts[layer].norm(dim=1).mean()), rel=1e-6
        )

    df = pl.read_parquet(res.metrics_path)
    dormant = df.filter(pl.col("metric") == "dormant_pct").sort("layer", nulls_last=True)
    assert dormant["layer"].to_list() == [0, 1, None]
    assert dormant["value"].to_list() == pytest.approx(
        [*res.dormant_pct_per_layer, res.dormant_pct]
    )


def test_entropy_matches_explicit_softmax_with_a_uniform_and_a_collapsed_head(tmp_path):
    def shape_heads(model):
        attn = model.transformer.h[0].attn
        C, D = model.config.d_model, 64
        w, b = attn.c_attn.weight, attn.c_attn.bias
        # Head 0: zero queries → equal scores → uniform over the q visible keys (entropy ln q).
        w[0:D], b[0:D] = 0.0, 0.0
        # Head 1: q = k = 10·(its slice of ln_1(x)) → each query sees itself far above the rest.
        for base in (D, C + D):
            w[base : base + D] = 0.0
            w[base : base + D, D : 2 * D] = 10.0 * torch.eye(D)
            b[base : base + D] = 0.0

    path = _ckpt(tmp_path / "c.pt", edit=shape_heads)
    data = _data(tmp_path / "data")
    res = diagnose(
        path,
        data=data,
        metrics=tmp_path / "m",
        dormant=False,
        ranks=False,
        params=False,
        features=False,
        perturb=False,
        distance=False,
        entropy_seqs=6,
        device="cpu",
    )

    q_from = CTX // 8
    assert res.query_from == q_from and res.h_max == pytest.approx(h_max(q_from, CTX))
    model = load_checkpoint(path).build_model()
    expected = _direct_entropy(model, _windows(data, "ru", 6), q_from)
    np.testing.assert_allclose(np.array(res.entropy), expected.numpy(), rtol=1e-5, atol=1e-6)

    assert res.entropy[0][0] == pytest.approx(res.h_max, rel=1e-6)  # uniform: exactly H_max
    assert res.entropy[0][1] < 0.1 * res.h_max  # one key: collapsed
    # The untouched layer-1 heads of a fresh model attend almost uniformly: lazy too.
    assert all(e > 0.9 * res.h_max for e in res.entropy[1])
    assert res.lazy_pct == pytest.approx(75.0) and res.collapsed_pct == pytest.approx(25.0)

    df = pl.read_parquet(res.metrics_path)
    assert set(df["metric"]) == {"entropy", "h_max", "lazy_pct", "collapsed_pct"}
    ent = df.filter(pl.col("metric") == "entropy").sort("layer", "head")
    assert ent.select("layer", "head").rows() == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_one_pass_over_a_shared_language_gives_the_same_numbers(tmp_path):
    path = _ckpt(tmp_path / "c.pt")
    data = _data(tmp_path / "data", langs=("vi",))
    both = diagnose(
        path,
        data=data,
        metrics=tmp_path / "a",
        dormant_seqs=5,
        entropy_lang="vi",
        entropy_seqs=9,
        device="cpu",
    )
    alone_d = diagnose(
        path, data=data, metrics=tmp_path / "b", entropy=False, dormant_seqs=5, device="cpu"
    )
    alone_e = diagnose(
        path,
        data=data,
        metrics=tmp_path / "c",
        dormant=False,
        ranks=False,
        features=False,
        perturb=False,
        entropy_lang="vi",
        entropy_seqs=9,
        device="cpu",
    )
    assert both.dormant_pct_per_layer == alone_d.dormant_pct_per_layer
    assert both.effective_rank == pytest.approx(alone_d.effective_rank, rel=1e-6)
    assert np.allclose(both.entropy, alone_e.entropy, rtol=1e-6)


def test_cli_writes_the_diagnose_schema(tmp_path):
    path = _ckpt(tmp_path / "c.pt", size="nano")
    data = _data(tmp_path / "data")
    proc = run_plc(
        "diagnose", path, "--data", data, "--metrics", tmp_path / "m", "--preset", "tiny", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dormant_seqs"] == 4 and out["entropy_seqs"] == 4 and out["query_from"] == CTX // 8
    df = pl.read_parquet(out["metrics_path"])
    assert df.columns == [
        "kind", "run_id", "size", "n_params", "task_index", "cycle", "lang",
        "metric", "layer", "head", "value", "method", "eval_seed",
    ]  # fmt: skip
    assert set(df["kind"]) == {"diagnose"} and set(df["run_id"]) == {"nano-s3"}
    assert set(df["task_index"]) == {0} and set(df["cycle"]) == {0} and set(df["lang"]) == {""}
    assert set(df["metric"]) == {
        "param_abs_mean", "dormant_pct", "entropy", "h_max", "lazy_pct", "collapsed_pct",
        "effective_rank", "stable_rank", "feature_norm", "last_hidden_norm", "last_hidden_var",
        "init_distance", "perturb_loss_increase", "perturb_sigma",
    }  # fmt: skip
    assert df.filter(pl.col("metric") == "init_distance")["value"][0] == 0.0  # a fresh init
    assert df.filter(pl.col("metric") == "h_max")["value"][0] == pytest.approx(h_max(4, CTX))
    # A second run refuses to overwrite without --force.
    again = run_plc(
        "diagnose", path, "--data", data, "--metrics", tmp_path / "m", "--preset", "tiny"
    )
    assert_bad_input(again, "exists", "--force")


@pytest.mark.parametrize(
    "case",
    ["missing_lang", "few_val", "tokenizer", "query_window", "query_from", "eps"],
)
def test_cli_bad_input(tmp_path, case):
    path = _ckpt(tmp_path / "c.pt", size="nano")
    other = {"name": "other", "vocab_size": 257, "eos_id": 256, "fingerprint": "0123456789abcdef"}
    data = _data(
        tmp_path / "data",
        val_tokens=100 if case == "few_val" else 4000,
        tokenizer=other if case == "tokenizer" else None,
    )
    base = ["diagnose", path, "--data", data, "--metrics", tmp_path / "m", "--preset", "tiny"]
    args, fragments = {
        "missing_lang": (["--dormant-lang", "xx"], ["'xx'", "ru, vi"]),
        "few_val": ([], ["100 val tokens", "pass --dormant-seqs 2"]),
        "tokenizer": ([], ["'other'", "'byte'"]),
        "query_window": (["--seq-len", str(2 * CTX)], ["64", "context 32"]),
        "query_from": (["--query-from", str(CTX + 1)], ["--query-from"]),
        "eps": (["--eps", "1.5"], ["--eps"]),
    }[case]
    assert_bad_input(run_plc(*base, *args), *fragments)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_the_newer_measures_match_a_direct_computation(tmp_path):
    """Distance from θ₀, the last hidden state's norm and variance, and the loss increase under
    a Gaussian perturbation drawn like the initialisation, each by hand."""
    import torch.nn.functional as F

    def shift(model):
        for p in model.parameters():
            p.add_(0.01)

    path = _ckpt(tmp_path / "c.pt", size="nano", edit=shift)
    data = _data(tmp_path / "data")
    res = diagnose(
        path, data=data, metrics=tmp_path / "m", dormant_seqs=6, entropy=False, device="cpu",
        perturb_sigma=0.5, perturb_draws=2,
    )  # fmt: skip
    ckpt = load_checkpoint(path)
    model = ckpt.build_model()
    n = sum(p.numel() for p in model.parameters())
    assert res.init_distance == pytest.approx(0.01 * math.sqrt(n), rel=1e-6)
    x = _windows(data, "vi", 6)
    with torch.no_grad():
        h = model.hidden(x).flatten(0, 1).double()
    assert res.last_hidden_norm == pytest.approx(float(h.norm(dim=1).mean()), rel=1e-9)
    assert res.last_hidden_var == pytest.approx(float(h.var(dim=0, unbiased=False).mean()), 1e-9)
    # The perturbation: a fresh init's last language is none, so the dormant windows (vi).
    assert res.perturb_lang == "vi" and res.perturb_sigma == 0.5
    _, full = eval_windows(open_lang(data, "vi"), 6, CTX, 3)
    w = torch.from_numpy(full)

    def loss(m):
        with torch.no_grad():
            logits = m(w[:, :-1])
        return float(F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten()))

    clean = loss(model)
    assert res.perturb_loss == pytest.approx(clean, rel=1e-6)
    stds = model.init_stds()
    for d, got in enumerate(res.perturb_draws):
        words = np.random.SeedSequence([3, PERTURB_STREAM, d]).generate_state(2)
        gen = torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))
        noisy = ckpt.build_model()
        with torch.no_grad():
            for name, p in noisy.named_parameters():
                if stds[name]:  # LayerNorm and biases (constants at init) are not perturbed
                    p.add_(torch.randn(p.shape, generator=gen) * 0.5 * stds[name])
        assert got == pytest.approx(loss(noisy) - clean, abs=1e-5)
    assert res.perturb_loss_increase == pytest.approx(sum(res.perturb_draws) / 2)


def test_the_perturbation_reads_as_many_windows_as_a_small_store_holds(tmp_path):
    """The last task's store may hold fewer val windows than --dormant-seqs asks of the probe
    language (the embedded corpus's ru under the cpu preset): the perturbation takes what it has."""
    path = _ckpt(tmp_path / "c.pt", size="nano")
    data = _data(tmp_path / "data", langs=("vi",))
    _data(data, langs=("es",), val_tokens=4 * (CTX + 1))  # room for 3 or 4 windows, not 6
    res = diagnose(
        path, data=data, metrics=tmp_path / "m", dormant_seqs=6, entropy=False, device="cpu",
        perturb_lang="es", perturb_draws=1,
    )  # fmt: skip
    assert res.perturb_lang == "es" and math.isfinite(res.perturb_loss_increase)
    assert 3 <= len(res.window_starts["es"]) <= 4 and len(res.window_starts["vi"]) == 6
