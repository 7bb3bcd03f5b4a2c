"""The model of §IV-B: Table I parameter counts, Table II learning rates, exact loss and attention."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

from plc.model import GPT, PAPER_SIZES, make_config, padded_vocab, paper_lr
from plc.sizes import size_name

# Table I: (layers, d, heads, Eff. Params, Total Params) with vocab 151,680 and context 2,048.
TABLE_I = {
    "5M": (4, 320, 5, 4_932_480, 54_125_440),
    "12M": (5, 448, 7, 12_072_256, 80_942_400),
    "27M": (7, 576, 9, 27_922_752, 116_470_080),
    "39M": (8, 640, 10, 39_389_440, 137_775_360),
    "53M": (9, 704, 11, 53_610_304, 161_834_816),
    "83M": (10, 832, 13, 83_176_704, 211_078_400),
    "106M": (11, 896, 14, 106_101_632, 243_841_920),
    "314M": (16, 1280, 20, 314_841_600, 511_613_440),
}
# Table II: interpolated η × 10³, printed to two decimals.
TABLE_II = {
    "5M": 3.00,
    "12M": 2.30,
    "27M": 1.88,
    "39M": 1.73,
    "53M": 1.61,
    "83M": 1.41,
    "106M": 1.33,
    "314M": 1.00,
}


@pytest.mark.parametrize("size", PAPER_SIZES)
def test_table_i_counts(size):
    layers, d, heads, eff, total = TABLE_I[size]
    c = make_config(size, vocab_size=151_680, context=2048)
    assert (c.n_layer, c.d_model, c.n_head) == (layers, d, heads)
    assert c.n_params == eff
    assert c.n_params_total == total


def test_counts_match_the_built_module():
    c = make_config("5M", vocab_size=151_680, context=2048)
    with torch.device("meta"):
        m = GPT(c)
    total = sum(p.numel() for p in m.parameters())  # tied head counted once
    emb = m.transformer.wte.weight.numel() + m.transformer.wpe.weight.numel()
    assert total == 54_125_440 and total - emb == 4_932_480


@pytest.mark.parametrize("size", PAPER_SIZES)
def test_table_ii_learning_rates(size):
    d = TABLE_I[size][1]
    assert round(paper_lr(d) * 1e3, 2) == TABLE_II[size]


def test_qwen3_vocab_is_padded_like_the_paper():
    assert padded_vocab(151_669) == 151_680
    assert padded_vocab(257) == 320


def test_heads_default_to_head_dim_64_and_bad_shapes_are_refused():
    from plc.errors import PlcError

    assert make_config(layers=2, d_model=192, vocab_size=320, context=32).n_head == 3
    with pytest.raises(PlcError, match="multiple of 64"):
        make_config(layers=2, d_model=100, vocab_size=320, context=32)
    assert make_config(layers=2, d_model=100, heads=4, vocab_size=320, context=32).n_head == 4
    with pytest.raises(PlcError, match="positive"):
        make_config(layers=0, d_model=128, vocab_size=320, context=32)
    with pytest.raises(PlcError, match="divisible"):
        make_config(layers=1, d_model=100, heads=3, vocab_size=320, context=32)
    with pytest.raises(PlcError, match="unknown size"):
        make_config("7M", vocab_size=320, context=32)
    # A custom shape's name (what size_name calls it) names that shape back, so plans can use it.
    named = make_config("L2-d64", vocab_size=320, context=32)
    assert (named.n_layer, named.d_model, named.n_head) == (2, 64, 1)
    assert size_name(named) == "L2-d64"
    with pytest.raises(PlcError, match="multiple of 64"):
        make_config("L2-d96", vocab_size=320, context=32)


def _tiny(seed=0, vocab=320, context=32):
    torch.manual_seed(seed)
    return GPT(make_config(layers=2, d_model=128, vocab_size=vocab, context=context))


def test_chunked_loss_and_gradients_equal_plain_cross_entropy():
    m = _tiny()
    x = torch.randint(0, 320, (3, 32))
    y = torch.randint(0, 320, (3, 32))
    from plc.model import lm_loss

    h = m.hidden(x).flatten(0, 1)
    # A chunk smaller than the rows exercises the chunk loop.
    loss = lm_loss(h, m.transformer.wte.weight, y.flatten(), chunk=40)
    loss.backward()
    fused = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    ref = F.cross_entropy(m(x).flatten(0, 1), y.flatten())
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6)
    for n, p in m.named_parameters():
        torch.testing.assert_close(fused[n], p.grad, atol=1e-6, rtol=1e-5, msg=n)
    with torch.no_grad():
        assert m(x, y).item() == pytest.approx(ref.item(), abs=1e-6)


def test_explicit_attention_hook_matches_sdpa_and_is_causal():
    m = _tiny().eval()
    x = torch.randint(0, 320, (2, 32))
    with torch.no_grad():
        ref = m(x)
        seen = []
        m.set_probs_hook(lambda layer, p: seen.append((layer, p)))
        out = m(x)
        m.set_probs_hook(None)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert [layer for layer, _ in seen] == [0, 1]
    p = seen[0][1]
    assert p.shape == (2, 2, 32, 32)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 2, 32))
    assert torch.all(p.triu(diagonal=1) == 0)


def test_output_head_is_the_tied_input_embedding():
    m = _tiny()
    wte = m.transformer.wte.weight
    x = torch.randint(0, 100, (2, 32))  # tokens 100..319 never appear in the input
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.hidden(x) @ wte.T, atol=0, rtol=0)
    F.cross_entropy(m(x).flatten(0, 1), torch.randint(0, 320, (64,))).backward()
    # Rows of absent tokens get a gradient only through the output head: they are one matrix.
    assert wte.grad[100:].abs().sum(dim=1).min() > 0


def _random_biases(m: torch.nn.Module) -> None:
    """Non-zero biases (init sets them to zero), so a bias path shows in the outputs."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.5)


def test_blocks_are_pre_norm_residual():
    m = _tiny()
    _random_biases(m)
    blk = m.transformer.h[0]
    x = torch.randn(3, 32, 128)
    with torch.no_grad():
        assert not torch.allclose((blk(x) - x)[0, 0], (blk(x) - x)[1, 5])  # an ordinary block
        for ln in (blk.ln_1, blk.ln_2):
            ln.weight.zero_()
            ln.bias.zero_()
        delta = blk(x) - x
        # LayerNorm before attention and MLP, inside the residual branch: with zero gains both
        # branches see zeros, so the block adds one vector everywhere: the attention's output
        # for equal values (its v bias, projected) plus the MLP's output at zero.
        v_bias = blk.attn.c_attn.bias[2 * 128 :]
        expected = blk.attn.c_proj(v_bias) + blk.mlp(torch.zeros(128))
        torch.testing.assert_close(delta, expected.expand_as(delta), atol=1e-5, rtol=1e-5)
        assert expected.abs().max() > 0.1


def test_hidden_states_go_through_a_final_layernorm():
    m = _tiny()
    _random_biases(m)
    with torch.no_grad():
        m.transformer.ln_f.bias.zero_()  # the bias is random here; gain 1 and bias 0 for this check
        h = m.hidden(torch.randint(0, 320, (2, 32)))
    torch.testing.assert_close(h.mean(-1), torch.zeros(2, 32), atol=1e-5, rtol=0)
    torch.testing.assert_close(h.var(-1, unbiased=False), torch.ones(2, 32), atol=1e-3, rtol=0)


def test_mlp_uses_exact_erf_gelu():
    m = _tiny()
    _random_biases(m)
    mlp = m.transformer.h[0].mlp
    h = torch.randn(4, 128)
    with torch.no_grad():
        pre = mlp.c_fc(h)
        exact = mlp.c_proj(pre * 0.5 * (1.0 + torch.erf(pre / math.sqrt(2.0))))
        tanh = mlp.c_proj(F.gelu(pre, approximate="tanh"))
        out = mlp(h)
    torch.testing.assert_close(out, exact, atol=1e-6, rtol=1e-6)
    assert (out - tanh).abs().max() > 1e-5  # the tanh approximation is told apart


def test_longer_than_context_is_refused():
    from plc.errors import PlcError

    with pytest.raises(PlcError, match="context"):
        _tiny(context=16)(torch.zeros(1, 17, dtype=torch.long))


def test_hf_export_logits_match(tmp_path):
    from plc.init import init_checkpoint

    init_checkpoint(tmp_path / "c0.pt", size="micro", vocab_size=320, context=64, seed=3)
    from plc.export import export_hf
    from plc.store import load_checkpoint

    export_hf(tmp_path / "c0.pt", tmp_path / "hf")
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    ours = load_checkpoint(tmp_path / "c0.pt").build_model().eval()
    x = torch.randint(0, 320, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x), atol=1e-5, rtol=0)


def test_activation_checkpointing_gives_the_same_gradients():
    """Recomputing each block in the backward pass changes the memory, not one bit of the result."""
    m = _tiny()
    x, y = torch.randint(0, 320, (3, 32)), torch.randint(0, 320, (3, 32))
    grads = []
    for checkpointing in (False, True):
        m.zero_grad()
        m.checkpointing = checkpointing
        loss = m(x, y)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    (loss_a, a), (loss_b, b) = grads
    assert torch.equal(loss_a, loss_b) and all(torch.equal(a[n], b[n]) for n in a)
    with torch.no_grad():  # nothing to recompute without gradients
        assert torch.equal(m(x, y), loss_a)


def _head_weight_grad(h, w, y, chunk, autocast):
    from plc.model import lm_loss

    w = w.detach().clone().requires_grad_(True)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with ctx:
        lm_loss(h.detach(), w, y, chunk=chunk).backward()
    return w.grad


def test_lm_head_weight_gradient_under_autocast_is_a_bf16_matmul():
    """Under autocast the head's weight gradient is computed as autocast computes every other
    weight's (bf16 inputs, bf16 result added into fp32); without it, as before, in fp32."""
    from plc.model import _chunk_log_probs

    torch.manual_seed(0)
    h, w = torch.randn(40, 64), torch.randn(320, 64) * 0.3
    y = torch.randint(0, 320, (40,))
    chunk = 16

    def reference(low):
        grad = torch.zeros(w.shape)
        for s, tc, logprobs in _chunk_log_probs(h, w, y, chunk):
            g = logprobs.exp()
            g[torch.arange(len(tc)), tc] -= 1.0
            hc = h[s : s + chunk]
            if low is None:
                grad.addmm_(g.t(), hc)
            else:
                grad += torch.mm(g.t().to(low), hc.to(low))
        return grad * (torch.ones(()) / h.size(0))  # as the backward pass scales it

    fp32 = _head_weight_grad(h, w, y, chunk, autocast=False)
    assert torch.equal(fp32, reference(None))
    bf16 = _head_weight_grad(h, w, y, chunk, autocast=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(torch.bfloat16)
    assert bf16.dtype == torch.float32 and torch.equal(bf16, expected)
    assert not torch.equal(bf16, fp32)
    # bf16 logits and gradients: within bf16's 2⁻⁸ of the fp32 gradient as a whole.
    assert (bf16 - fp32).norm() / fp32.norm() < 0.01
