"""Architecture options beyond the paper: attention-sink tokens and QK-norm (plc init flags)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from conftest import assert_bad_input, run_plc
from test_model import TABLE_I

from plc.data.tokenizers import ByteTokenizer
from plc.data.tokenstore import write_store
from plc.diagnose import diagnose
from plc.errors import PlcError
from plc.init import build_model, init_checkpoint
from plc.measures import h_max
from plc.model import GPT, PAPER_SIZES, make_config
from plc.store import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", PAPER_SIZES)
def test_sink_tokens_leave_table_i_counts_and_report_theirs_apart(size):
    layers, d, heads, eff, total = TABLE_I[size]
    c = make_config(size, vocab_size=151_680, context=2048, sink_tokens=4)
    assert c.n_params == eff
    assert c.n_sink_params == 4 * d
    assert c.n_params_total == total + 4 * d


@pytest.mark.parametrize("size", PAPER_SIZES)
def test_qk_norm_adds_four_head_dims_per_layer(size):
    layers, d, heads, eff, total = TABLE_I[size]
    c = make_config(size, vocab_size=151_680, context=2048, qk_norm=True)
    # q and k LayerNorm over the 64-wide head dimension, gain and bias each, shared by the heads.
    assert c.n_params == eff + layers * 4 * 64
    assert c.n_params_total == total + layers * 4 * 64


def test_counts_match_the_built_modules():
    c = make_config("5M", vocab_size=151_680, context=2048, sink_tokens=3, qk_norm=True)
    with torch.device("meta"):
        m = GPT(c)
    tables = m.transformer.wte.weight.numel() + m.transformer.wpe.weight.numel()
    assert _params(m) == c.n_params_total
    assert _params(m) - tables - m.sink.numel() == c.n_params == 4_932_480 + 4 * 4 * 64
    # Options off: exactly the paper's parameters, nothing else registered.
    plain = build_model(make_config("nano", vocab_size=320, context=16), 0)
    assert not any("sink" in n or "_norm" in n for n, _ in plain.named_parameters())
    assert plain.sink is None and plain.transformer.h[0].attn.q_norm is None


def test_options_change_no_other_initial_weight():
    kw = dict(vocab_size=320, context=16)
    plain = build_model(make_config("micro", **kw), 4).state_dict()
    both = build_model(make_config("micro", sink_tokens=2, qk_norm=True, **kw), 4).state_dict()
    assert set(both) - set(plain) == {"sink"} | {
        f"transformer.h.{i}.attn.{n}_norm.{w}"
        for i in range(2)
        for n in "qk"
        for w in ("weight", "bias")
    }
    assert all(torch.equal(v, both[k]) for k, v in plain.items())


def test_sinks_are_never_predicted_and_the_loss_is_over_real_tokens():
    model = build_model(make_config("micro", vocab_size=320, context=16, sink_tokens=3), 0)
    x = torch.randint(0, 320, (2, 16))
    y = torch.randint(0, 320, (2, 16))
    logits = model(x)
    assert logits.shape == (2, 16, 320)
    direct = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    assert model(x, y).item() == pytest.approx(direct.item(), rel=1e-6)
    # The sink is used: the loss has a gradient with respect to it.
    model(x, y).backward()
    assert float(model.sink.grad.abs().sum()) > 0
    # A full context of real tokens still fits (sinks take no position of the table).
    assert model(torch.randint(0, 320, (1, 16))).shape == (1, 16, 320)


def _sink_magnet(model):
    """Layer 0, one head: every real query equals the sink's key direction, real keys are 0."""
    with torch.no_grad():
        C = model.config.d_model
        model.transformer.wte.weight.zero_()
        model.transformer.wpe.weight.zero_()  # real tokens: x = 0 → LayerNorm output 0
        u = torch.tensor([1.0, -1.0] * (C // 2))  # mean 0, variance 1: LayerNorm keeps it
        model.sink.copy_(u)
        attn = model.transformer.h[0].attn
        attn.c_attn.weight.zero_()
        attn.c_attn.bias.zero_()
        attn.c_attn.bias[:C] = u  # q = u for real tokens
        attn.c_attn.weight[C : 2 * C] = torch.eye(C)  # k = LayerNorm(x): u for the sink, 0 else


def test_a_sink_takes_the_attention_mass_in_a_constructed_case():
    model = build_model(make_config("nano", vocab_size=320, context=16, sink_tokens=1), 0)
    _sink_magnet(model)
    seen = {}
    model.set_probs_hook(lambda layer, p: seen.setdefault(layer, p))
    with torch.no_grad():
        model.hidden(torch.randint(0, 320, (2, 16)))
    p = seen[0]  # (B, H, 1 + T, 1 + T)
    assert p.shape == (2, 1, 17, 17)
    # score of the sink u·u/√64 = 8 against 0 for the q real keys: mass e⁸ / (e⁸ + q).
    q = torch.arange(1, 17, dtype=torch.float32)
    torch.testing.assert_close(p[:, 0, 1:, 0], (math.exp(8) / (math.exp(8) + q)).expand(2, 16))
    assert float(p[:, 0, 1:, 0].min()) > 0.99


def test_explicit_attention_matches_sdpa_with_both_options():
    model = build_model(
        make_config("micro", vocab_size=320, context=16, sink_tokens=2, qk_norm=True), 1
    )
    with torch.no_grad():
        for block in model.transformer.h:  # non-trivial norms
            block.attn.q_norm.weight.uniform_(0.5, 2.0)
            block.attn.k_norm.bias.normal_(0, 0.5)
        x = torch.randint(0, 320, (2, 16))
        fast = model(x)
        model.set_probs_hook(lambda layer, p: None)
        slow = model(x)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def test_checkpoints_without_the_option_keys_still_load(tmp_path):
    path = tmp_path / "c0.pt"
    init_checkpoint(path, size="nano", vocab_size=320, context=16, sink_tokens=2, qk_norm=True)
    ckpt = load_checkpoint(path)
    assert (ckpt.config.sink_tokens, ckpt.config.qk_norm) == (2, True)
    assert ckpt.run_id == "nano-sink2-qknorm-s0"
    old = tmp_path / "old.pt"
    init_checkpoint(old, size="nano", vocab_size=320, context=16)
    payload = torch.load(old, weights_only=True)
    del payload["config"]["sink_tokens"], payload["config"]["qk_norm"]
    torch.save(payload, old)
    c = load_checkpoint(old).config
    assert (c.sink_tokens, c.qk_norm) == (0, False)


def test_cli_init_inspect_and_export_refusal(tmp_path):
    c0 = tmp_path / "c0.pt"
    proc = run_plc(
        "init", "--size", "nano", "--vocab-size", "320", "--context", "16",
        "--sink-tokens", "4", "--qk-norm", "--out", c0,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "4 sink tokens (256 parameters), QK-norm" in " ".join(proc.stdout.split())
    info = json.loads(run_plc("inspect", c0, "--json").stdout)
    assert info["sink_tokens"] == 4 and info["qk_norm"] is True
    assert info["n_sink_params"] == 256
    assert info["n_params"] == make_config("nano", vocab_size=320, context=16).n_params + 4 * 64
    assert "qk_norm" in run_plc("inspect", c0).stdout
    assert_bad_input(run_plc("export", c0, tmp_path / "hf"), "attention-sink tokens")
    assert not (tmp_path / "hf").exists()
    q = tmp_path / "q.pt"
    init_checkpoint(q, size="nano", vocab_size=320, context=16, qk_norm=True)
    assert_bad_input(run_plc("export", q, tmp_path / "hf"), "QK-norm, which GPT-2 cannot hold")
    with pytest.raises(PlcError, match="--sink-tokens must be 0 or more"):
        make_config("nano", vocab_size=320, context=16, sink_tokens=-1)


def test_diagnose_scores_real_tokens_and_counts_sink_keys(tmp_path):
    K, L = 2, 32
    path = tmp_path / "c.pt"
    init_checkpoint(path, size="micro", tokenizer="byte", context=L, seed=2, sink_tokens=K)
    rng = np.random.default_rng(0)
    for lang in ("vi", "ru"):
        write_store(
            tmp_path / "data" / f"{lang}.zarr",
            rng.integers(0, 256, 3000),
            rng.integers(0, 256, 3000),
            lang=lang,
            tokenizer=ByteTokenizer().identity(),
        )
    res = diagnose(
        path, data=tmp_path / "data", metrics=tmp_path / "m", dormant_seqs=5, entropy_seqs=4,
        query_from=9, batch_size=2, device="cpu",
    )  # fmt: skip
    model = load_checkpoint(path).build_model()

    def windows(lang, n):
        from plc.data.sampling import eval_windows
        from plc.data.tokenstore import open_lang

        seed = load_checkpoint(path).meta["seed"]  # diagnose draws the run's evaluation windows
        _, drawn = eval_windows(open_lang(tmp_path / "data", lang), n, L, seed)
        return torch.from_numpy(drawn[:, :L])

    acts, probs = [], []
    hooks = [
        b.mlp.act.register_forward_hook(lambda m, i, o: acts.append(o)) for b in model.transformer.h
    ]
    with torch.no_grad():
        model.hidden(windows("vi", 5))
    for h in hooks:
        h.remove()
    real = torch.stack([a[:, K:].flatten(0, 1) for a in acts]).double()  # (layers, tokens, units)
    units = zarr.open_group(res.units_path, mode="r")
    np.testing.assert_allclose(
        units["mean_abs_activation"][:], real.abs().mean(1).numpy(), rtol=1e-5
    )

    model.set_probs_hook(lambda layer, p: probs.append(p.double()))
    with torch.no_grad():
        model.hidden(windows("ru", 4))
    for layer, p in enumerate(probs):
        rows = p[:, :, K + 9 - 1 :]  # real queries 9…L; each spans the K sink keys too
        ent = -(rows * torch.where(rows > 0, rows.log(), 0.0)).sum(-1).mean(dim=(0, 2))
        np.testing.assert_allclose(res.entropy[layer], ent.numpy(), rtol=1e-5)
    assert res.h_max == pytest.approx(float(np.mean(np.log(np.arange(9 + K, L + K + 1)))))
    assert res.h_max == pytest.approx(h_max(9 + K, L + K))
