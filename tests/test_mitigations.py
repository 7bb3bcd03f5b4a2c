"""plc.mitigations: each remedy does exactly what its definition says, on tiny models."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from conftest import assert_bad_input, run_plc

from plc.data.tokenizers import ByteTokenizer
from plc.data.tokenstore import write_store
from plc.diagnose import diagnose
from plc.errors import PlcError
from plc.init import build_model, init_checkpoint
from plc.mitigations import CLIP_STDS, InitialState, Mitigations, initial_state, intervene
from plc.model import GPT, make_config
from plc.options import MitigationOptions, TrainOptions, parse_shrink_perturb
from plc.presets import get_preset
from plc.store import load_checkpoint, method_label, save_checkpoint
from plc.train import make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")

CTX = 16


def _model(size="nano", seed=0, **options):
    return build_model(make_config(size, vocab_size=320, context=CTX, **options), seed)


def _batch(step, rows=4):
    g = torch.Generator().manual_seed(100 + step)
    t = torch.randint(0, 256, (rows, CTX + 1), generator=g)
    return t[:, :-1], t[:, 1:]


def _opt(model, lr, weight_decay=0.1):
    """The loop's AdamW at learning rate `lr` (0 allowed here: only the mitigation moves θ)."""
    opt = make_optimizer(model, TrainOptions(lr=1.0, weight_decay=weight_decay))
    for group in opt.param_groups:
        group["lr"] = lr
    return opt


def _train(model, mit, steps, lr=1e-2, weight_decay=0.0, first=0, opt=None, before_step=None):
    """The loop's calls: forward/backward, optimizer.step, mit.after_step, zero_grad."""
    opt = opt or _opt(model, lr, weight_decay)
    if mit is not None and mit.model is None:
        mit.attach(model, opt)
    model.train()
    for step in range(first, first + steps):
        x, y = _batch(step)
        model(x, y).backward()
        if before_step is not None:
            before_step(step, opt)
        opt.step()
        if mit is not None:
            mit.after_step(step, x)
        opt.zero_grad(set_to_none=True)
    return opt


def _linear_names(model):
    return {
        f"{m}.{p}"
        for m, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear)
        for p in ("weight", "bias")
    }


# ------------------------------------------------------------------------------------ options


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"clip_weights": 0.0}, "--clip-weights"),
        ({"clip_weights": -1.0}, "--clip-weights"),
        ({"l2_init": -1e-2}, "--l2-init"),
        ({"shrink_perturb": (0.0, 0.1)}, "(0, 1]"),
        ({"shrink_perturb": (1.5, 0.1)}, "(0, 1]"),
        ({"shrink_perturb": (0.9, -0.1)}, "σ"),
        ({"shrink_perturb": (0.9, 0.1), "shrink_perturb_at": "epoch"}, "task or step"),
        ({"cbp": -1e-4}, "--cbp"),
        ({"cbp": 1e-4, "cbp_decay": 1.0}, "--cbp-decay"),
        ({"cbp": 1e-4, "cbp_maturity": -1}, "--cbp-maturity"),
        ({"redo": -0.1}, "--redo"),
        ({"redo_every": 10}, "goes with --redo"),
        ({"redo": 0.025, "redo_every": 0}, "--redo-every"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, fragment):
    with pytest.raises(PlcError, match=None) as e:
        MitigationOptions(**kwargs)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_options_label_record_and_parsing():
    assert not MitigationOptions().active and MitigationOptions().label == "none"
    o = MitigationOptions(clip_weights=1.0, shrink_perturb=(0.8, 0.01), redo=0.025, redo_every=50)
    assert o.active
    assert o.label == "clip1+sp0.8,0.01@task+redo0.025@50"
    assert o.record() == {
        "label": o.label,
        "clip_weights": 1.0,
        "shrink_perturb": [0.8, 0.01],
        "shrink_perturb_at": "task",
        "redo": 0.025,
        "redo_every": 50,
    }
    assert parse_shrink_perturb("0.8,1e-2") == (0.8, 0.01)
    assert MitigationOptions(shrink_perturb="0.8,1e-2").shrink_perturb == (0.8, 0.01)
    assert MitigationOptions.of(o) == o  # from any object with the same field names
    with pytest.raises(PlcError, match="λ,σ"):
        parse_shrink_perturb("0.8")


def test_plan_arms_are_the_options_fields():
    """`plc plan --mitigation NAME:ARGS` is parsed into TrainOptions fields (declared once)."""
    from plc.options import ARMS, arm_help, arm_label, option_argv, parse_mitigation
    from plc.plan.jobs import Job
    from plc.plan.options import parse_mitigation as plan_arm

    assert parse_mitigation("none") == {}
    assert parse_mitigation("l2init") == {"l2_init": 0.1}  # the paper's decay, aimed at θ₀
    assert parse_mitigation("clip") == {"clip_weights": 1.0}
    assert parse_mitigation("redo:0.1,5") == {"redo": 0.1, "redo_every": 5}
    sp_step = parse_mitigation("sp-step:0.8,0.01")
    assert TrainOptions(**sp_step).label == "sp0.8,0.01@step" == arm_label(sp_step)
    assert option_argv(sp_step) == [
        "--shrink-perturb-at", "step", "--shrink-perturb", "0.8,0.01"
    ]  # fmt: skip
    assert plan_arm("l2init") == ("l2init0.1", {"l2_init": 0.1})
    assert plan_arm("wd:0.01") == ("wd0.01", {"weight_decay": 0.01})
    assert plan_arm("sp:0.8,0.01")[0] == "sp0.8_0.01" and plan_arm("cbp:1e-4")[0] == "cbp0.0001"
    assert plan_arm("l2init:0") == ("", {"l2_init": 0.0})  # off: the baseline's runs
    # A job's command line sets the arm's fields with the training commands' own flags.
    job = Job("train-task", "c1.pt", train=plan_arm("sp-step:0.8,0.01")[1])
    assert job.argv[1:] == option_argv(sp_step)
    for name in ARMS:
        assert name in arm_help()
    with pytest.raises(PlcError, match="at most 2 values"):
        parse_mitigation("redo:0.1,5,6")
    with pytest.raises(PlcError, match="not a number"):
        parse_mitigation("cbp:fast")


# ------------------------------------------------------------------------------- clipping


def _clip_bounds(model):
    """Linear parameter name → its clip bound at κ = 1, by hand: 7 init stds of the layer's weight
    (0.02; the residual projections 0.02/√(2L))."""
    residual = 0.02 / math.sqrt(2 * model.config.n_layer)
    bounds = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            std = residual if name.endswith("c_proj") else 0.02
            for p in ("weight", "bias"):
                bounds[f"{name}.{p}"] = CLIP_STDS * std
    return bounds


def test_clipped_weights_never_exceed_their_bound_after_a_step():
    kappa = 0.5
    model = _model()
    mit = Mitigations(MitigationOptions(clip_weights=kappa))
    # lr 0.05 moves every weight far beyond its bound within a few steps.
    _train(model, mit, steps=3, lr=0.05)
    hit = 0
    params = dict(model.named_parameters())
    for name, bound in _clip_bounds(model).items():
        p = params[name]
        assert p.abs().max() <= kappa * bound, name
        hit += int((p.abs() == kappa * bound).sum())
    assert hit > 0  # the clamp was active
    # Not clipped: LayerNorm gains (init 1 > any bound here) and the tied embedding.
    assert model.transformer.ln_f.weight.abs().max() > kappa * CLIP_STDS * 0.02
    assert model.transformer.wte.weight.abs().max() > kappa * CLIP_STDS * 0.02


@pytest.mark.parametrize("size", ["5M", "314M"])
def test_kappa_one_clips_nothing_at_initialisation_at_the_smallest_and_largest_sizes(size):
    """The paper's smallest and largest shapes, built on the meta device (no memory): every
    clipped tensor's bound is 7 stds of its own init, so the expected number of fresh weights at
    or beyond it is below 1e-3 for the whole model — where the old bound 1/√fan_in already
    clipped 0.5 % (5M) and 16 % (314M) of the attention and MLP input weights."""
    with torch.device("meta"):
        model = GPT(make_config(size, vocab_size=50_000, context=1024))
    stds = model.init_stds()
    mit = Mitigations(MitigationOptions(clip_weights=1.0)).attach(model, None)
    clipped = {id(p): bound for p, bound in mit._clip}
    expected_clipped = 0.0
    fan_in_fraction = {}
    for name, bound in _clip_bounds(model).items():
        p = model.get_parameter(name)
        assert clipped[id(p)] == pytest.approx(bound), name
        if name.endswith("weight"):
            std = stds[name]
            expected_clipped += p.numel() * math.erfc(bound / std / math.sqrt(2))
            old = 1 / math.sqrt(p.shape[1])
            fan_in_fraction[name.split(".")[-2]] = math.erfc(old / std / math.sqrt(2))
    assert expected_clipped < 1e-3
    # What the issue measured for the old bound: the remedy grew with size.
    assert fan_in_fraction["c_fc"] == pytest.approx({"5M": 0.005, "314M": 0.16}[size], rel=0.05)


def test_kappa_one_leaves_a_fresh_5m_model_untouched():
    model = build_model(make_config("5M", vocab_size=320, context=CTX), 0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mit = Mitigations(MitigationOptions(clip_weights=1.0)).attach(model, None)
    with torch.no_grad():
        mit.clip()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with torch.no_grad():  # and it does clip once a weight grows past 7 stds
        model.transformer.h[0].attn.c_attn.weight[0, 0] = 1.0
        mit.clip()
    assert model.transformer.h[0].attn.c_attn.weight[0, 0].item() == pytest.approx(0.14)


# -------------------------------------------------------------------------------- L2-init


def test_l2_init_pulls_towards_theta0_and_is_still_at_theta0(tmp_path):
    init_checkpoint(tmp_path / "c0.pt", size="nano", vocab_size=320, context=CTX, seed=5)
    ckpt = load_checkpoint(tmp_path / "c0.pt")
    theta0 = initial_state(ckpt)
    assert theta0.source.startswith("rebuilt from seed 5, digest")
    assert all(torch.equal(theta0.state[k], v) for k, v in ckpt.model.items())

    lam, lr = 0.3, 0.1
    model = ckpt.build_model()
    opt = _opt(model, lr)
    mit = Mitigations(MitigationOptions(l2_init=lam)).attach(model, opt, init=theta0)
    with torch.no_grad():
        mit.l2_init_step()  # at θ₀: no change at all
    assert all(torch.equal(p, theta0.state[n]) for n, p in model.named_parameters())

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        mit.l2_init_step()
    for n, p in model.named_parameters():
        # The update is −lr·λ·(θ − θ₀): along θ₀ − θ, the gradient of (λ/2)‖θ − θ₀‖² reversed.
        expected = -lr * lam * (before[n] - theta0.state[n])
        torch.testing.assert_close(p - before[n], expected, rtol=1e-5, atol=1e-7)
    assert mit.record()["theta0"] == theta0.source


def test_l2_init_replaces_the_decay_towards_zero_its_fixed_point_is_theta0():
    # The arm's weight decay: 0 unless asked for (it replaces the preset's 0.1, not adds to it).
    assert TrainOptions(l2_init=0.1).resolve(preset="cpu", d_model=64).weight_decay == 0.0
    asked = TrainOptions(l2_init=0.1, weight_decay=0.1).resolve(preset="cpu", d_model=64)
    assert asked.weight_decay == 0.1
    off = TrainOptions(l2_init=0.0)  # as --weight-decay 0: sweeps write `for l in 0 1e-3 1e-2`
    assert off.l2_init is None and not off.mitigations.active
    assert off.resolve(preset="cpu", d_model=64).weight_decay == 0.1
    assert method_label("l2init0.1", 0.0, "cpu") == "l2init0.1"  # not wd0+l2init0.1
    assert method_label("l2init0.1", 0.1, "cpu") == "wd0.1+l2init0.1"

    lam, lr = 0.1, 0.1
    opts = TrainOptions(l2_init=lam).resolve(preset="cpu", d_model=64)
    model = _model()
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, replace(opts, lr=lr))
    mit = Mitigations(opts.mitigations).attach(model, opt, init=InitialState(dict(theta0), "test"))

    def steps(k):  # the loop's calls with a zero gradient: only the regularisers move θ
        for step in range(k):
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
            opt.step()
            mit.after_step(step)

    steps(20)  # at θ₀ the update is zero: θ₀ is the fixed point, not 0.9·θ₀ (or 0.09·θ₀)
    assert all(torch.equal(p, theta0[n]) for n, p in model.named_parameters())
    g = torch.Generator().manual_seed(0)
    delta = {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(delta[n])
    steps(10)  # every step takes lr·λ of the way back to θ₀
    for n, p in model.named_parameters():
        expected = theta0[n] + (1 - lr * lam) ** 10 * delta[n]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-4, atol=1e-6)


def test_theta0_sources_and_refusals(tmp_path):
    init_checkpoint(tmp_path / "c0.pt", size="nano", vocab_size=320, context=CTX, seed=5)
    ckpt = load_checkpoint(tmp_path / "c0.pt")
    from_file = initial_state(ckpt, tmp_path / "c0.pt")
    assert from_file.source == str(tmp_path / "c0.pt")

    wrong_seed = copy.deepcopy(ckpt)
    wrong_seed.meta["seed"] = 6  # the digest no longer matches what seed 6 builds
    with pytest.raises(PlcError, match="differs from the weights"):
        initial_state(wrong_seed)
    no_seed = copy.deepcopy(ckpt)
    del no_seed.meta["seed"]
    with pytest.raises(PlcError, match="pass the run's c0.pt"):
        initial_state(no_seed)
    init_checkpoint(tmp_path / "other.pt", size="nano", vocab_size=320, context=CTX, seed=7)
    with pytest.raises(PlcError, match="not the initial checkpoint of run"):
        initial_state(ckpt, tmp_path / "other.pt")
    with pytest.raises(PlcError, match="needs the run's initial weights"):
        Mitigations(MitigationOptions(l2_init=0.01)).attach(ckpt.build_model(), None)


# ---------------------------------------------------------------------- shrink-and-perturb


def _shrink_perturb(model, shrink, sigma, step=0, seed=0):
    mit = Mitigations(MitigationOptions(shrink_perturb=(shrink, sigma)), seed=seed)
    with torch.no_grad():
        mit.attach(model, None).shrink_perturb(step)
    return model


def test_shrink_perturb_identity_and_every_weight_perturbed():
    model = _model(sink_tokens=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _shrink_perturb(model, 1.0, 0.0)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())

    _shrink_perturb(model, 1.0, 0.1)
    stds = model.init_stds()
    for n, p in model.named_parameters():
        if stds[n] is not None:  # every weight matrix, table and sink vector, in every entry
            assert bool((p != before[n]).all()), n
        else:  # biases (ε = 0: their init) and LayerNorm parameters
            assert torch.equal(p, before[n]), n

    _shrink_perturb(model, 0.5, 0.0)
    after_perturb = {n: p.detach().clone() for n, p in model.named_parameters()}
    _shrink_perturb(model, 0.5, 0.0)
    for n, p in model.named_parameters():
        if ".ln_" in n or n.startswith("transformer.ln_f"):
            assert torch.equal(p, after_perturb[n]), n
        else:
            assert torch.equal(p, 0.5 * after_perturb[n]), n


def test_shrink_perturb_noise_is_drawn_like_the_initialisation():
    model = _model("micro")
    _shrink_perturb(model, 1e-9, 1.0)  # θ ≈ ε: a fresh initialisation
    for n, std in model.init_stds().items():
        p = dict(model.named_parameters())[n]
        if std is not None:
            assert float(p.detach().std()) == pytest.approx(std, rel=0.1), n
    # Seeded by (seed, task, step): the same call repeats, another step draws anew.
    a, b, c = (_shrink_perturb(_model(), 1.0, 0.1, step=s) for s in (3, 3, 4))
    w = "transformer.h.0.mlp.c_fc.weight"
    assert torch.equal(a.get_parameter(w), b.get_parameter(w))
    assert not torch.equal(a.get_parameter(w), c.get_parameter(w))


# ---------------------------------------------------------------------------- continual backprop


def _expected_cbp_counts(rho, maturity, units, steps):
    """The replacement rule with fractions carried over, by hand: units replaced per step."""
    ages, acc, counts = np.zeros(units), 0.0, []
    for _ in range(steps):
        ages += 1
        eligible = np.flatnonzero(ages > maturity)
        acc += rho * len(eligible)
        n = int(acc)
        acc -= n
        ages[eligible[:n]] = 0  # which ones does not change the count
        counts.append(n)
    return counts


def test_cbp_replaces_the_expected_units_and_resets_exactly_their_moments():
    rho, m = 0.01, 2
    model = _model()  # 1 layer, 256 MLP units
    mlp = model.transformer.h[0].mlp
    dead = [7, 200]  # zero outgoing weights: zero utility, the first two to be replaced
    with torch.no_grad():
        mlp.c_proj.weight[:, dead] = 0
    mit = Mitigations(MitigationOptions(cbp=rho, cbp_maturity=m, cbp_decay=0.9))
    counts, snap = [], {}

    def before_step(step, opt):
        if step == m:  # the first step with eligible units: moments all non-zero before it
            for st in opt.state.values():
                st["exp_avg"].fill_(1.0)
                st["exp_avg_sq"].fill_(1.0)
            snap["fc"] = mlp.c_fc.weight.detach().clone()

    # lr 0: only CBP changes weights, so the zeroed columns stay zero until replaced.
    opt = _opt(model, 0.0, 0.0)
    mit.attach(model, opt)
    for step in range(10):
        done = mit.counters["cbp_replaced"]
        _train(model, mit, 1, first=step, opt=opt, before_step=before_step)
        counts.append(mit.counters["cbp_replaced"] - done)
        if step == m:
            assert counts[-1] == 2
            changed = (mlp.c_fc.weight != snap["fc"]).any(dim=1).nonzero().flatten().tolist()
            assert changed == dead
            assert float(mlp.c_fc.bias[dead].abs().max()) == 0.0
            assert float(mlp.c_proj.weight[:, dead].abs().max()) == 0.0
            keep = [u for u in range(256) if u not in dead]
            for p, rows, cols in (
                (mlp.c_fc.weight, dead, None),
                (mlp.c_fc.bias, dead, None),
                (mlp.c_proj.weight, None, dead),
            ):
                for key in ("exp_avg", "exp_avg_sq"):
                    s = opt.state[p][key]
                    reset, kept = (s[rows], s[keep]) if rows else (s[:, cols], s[:, keep])
                    assert float(reset.abs().max()) == 0.0, (key, p.shape)
                    assert bool((kept != 0).all()), (key, p.shape)
            # The replaced units start again: age 0, not eligible for m steps.
            assert mit.cbp_ages[0, dead].tolist() == [0.0, 0.0]
    assert counts == _expected_cbp_counts(rho, m, 256, 10)
    assert sum(counts) == mit.counters["cbp_replaced"] == mit.record()["cbp_replaced"]


def test_cbp_picks_least_utility_and_leaves_the_next_bias_alone():
    # η = 0: utility is this step's, no bias correction; ρ·256 = 1 per step. lr 0: only CBP acts.
    model = _model()
    mlp = model.transformer.h[0].mlp
    acts = []
    mlp.act.register_forward_hook(lambda mod, i, o: acts.append(o.detach().flatten(0, 1)))
    mit = Mitigations(MitigationOptions(cbp=1 / 256, cbp_maturity=0, cbp_decay=0.0))
    opt = _opt(model, 0.0, 0.0)
    mit.attach(model, opt)
    w_out, bias = mlp.c_proj.weight.detach().clone(), mlp.c_proj.bias.detach().clone()
    _train(model, mit, 1, opt=opt)
    h = acts[-1]
    utility = h.abs().mean(0) * w_out.abs().mean(0)
    unit = int(utility.argmin())
    assert mit.counters["cbp_replaced"] == 1
    assert float(mlp.c_proj.weight[:, unit].abs().max()) == 0.0
    # gnt.py's correction adds 0 (it zeroes the mean activation first); cbp_linear.py has none.
    # The removed unit did contribute to the output, so a correction would have moved the bias.
    assert float((w_out[:, unit] * h[:, unit].mean()).abs().max()) > 0
    assert torch.equal(mlp.c_proj.bias, bias)
    _train(model, mit, 5, first=1, opt=opt)
    assert mit.counters["cbp_replaced"] == 6 and torch.equal(mlp.c_proj.bias, bias)


def test_cbp_state_carries_over_a_resume_bit_for_bit():
    options = MitigationOptions(cbp=0.02, cbp_maturity=1, cbp_decay=0.9)
    whole = _model()
    _train(whole, Mitigations(options), 6)

    part = _model()
    mit = Mitigations(options)
    opt = _train(part, mit, 3)
    state, opt_state = mit.state_dict(), copy.deepcopy(opt.state_dict())
    resumed = Mitigations(options)
    opt2 = _opt(part, 1e-2, 0.0)
    opt2.load_state_dict(opt_state)
    resumed.attach(part, opt2).load_state_dict(state)
    _train(part, resumed, 3, first=3, opt=opt2)
    assert resumed.counters["cbp_replaced"] > 0
    assert all(
        torch.equal(a, b) for a, b in zip(whole.parameters(), part.parameters(), strict=True)
    )


# ----------------------------------------------------------------------------------- ReDo


def _kill(model, dead):
    with torch.no_grad():
        for layer, units in dead.items():
            fc = model.transformer.h[layer].mlp.c_fc
            fc.weight[units] = 0.0
            fc.bias[units] = -10.0  # GeLU(−10) ≈ −8e−23 on every token


def test_redo_in_the_loop_resets_dormant_units_and_their_moments():
    dead = {0: [3, 17, 100]}
    model = _model()
    _kill(model, dead)
    mit = Mitigations(MitigationOptions(redo=0.025, redo_every=2))
    opt = _opt(model, 1e-3)
    mit.attach(model, opt)
    _train(model, mit, 1, opt=opt)
    assert mit.counters["redo_reset"] == 0  # step 1 of every 2: no ReDo yet
    for st in opt.state.values():
        st["exp_avg"].fill_(1.0)
        st["exp_avg_sq"].fill_(1.0)
    x, _ = _batch(1)
    with torch.no_grad():
        reset = mit.redo([x], step=2)
    assert reset == [dead[0]]
    mlp = model.transformer.h[0].mlp
    assert float(mlp.c_fc.weight[dead[0]].std()) == pytest.approx(0.02, rel=0.2)
    assert float(mlp.c_fc.bias[dead[0]].abs().max()) == 0.0
    assert float(mlp.c_proj.weight[:, dead[0]].abs().max()) == 0.0
    rows = opt.state[mlp.c_fc.weight]["exp_avg"].abs().sum(1)
    assert (rows == 0).nonzero().flatten().tolist() == dead[0]
    cols = opt.state[mlp.c_proj.weight]["exp_avg_sq"].abs().sum(0)
    assert (cols == 0).nonzero().flatten().tolist() == dead[0]
    _train(model, mit, 1, first=1, opt=opt)  # step 2 of every 2: ReDo finds none dormant now
    assert mit.counters["redo_reset"] == 3


def _store(root, langs=("vi",)):
    rng = np.random.default_rng(1)
    for lang in langs:
        write_store(
            root / f"{lang}.zarr",
            rng.integers(0, 256, 3000),
            rng.integers(0, 256, 3000),
            lang=lang,
            tokenizer=ByteTokenizer().identity(),
        )
    return root


def _dead_checkpoint(path, dead):
    init_checkpoint(path, size="micro", tokenizer="byte", context=32, seed=3)
    ckpt = load_checkpoint(path)
    model = ckpt.build_model()
    _kill(model, dead)
    ckpt.model = model.state_dict()
    save_checkpoint(path, ckpt, force=True)
    return path


def test_intervene_redo_resets_exactly_the_units_diagnose_reports_dormant(tmp_path):
    tau = 0.025
    dead = {0: [3, 17, 100], 1: [5]}
    c = _dead_checkpoint(tmp_path / "c0.pt", dead)
    data = _store(tmp_path / "data")
    res = diagnose(
        c, data=data, metrics=tmp_path / "m", params=False, entropy=False, ranks=False,
        dormant_seqs=7, eps=tau, batch_size=3, device="cpu",
    )  # fmt: skip
    scores = zarr.open_group(res.units_path, mode="r")["dormant_score"][:]
    reported = [np.flatnonzero(s <= tau).tolist() for s in scores]
    assert reported == [dead[0], dead[1]]

    out = intervene(
        "redo", c, out=tmp_path / "c0x.pt", data=data, lang="vi", seqs=7, batch_size=3,
        tau=tau, device="cpu",
    )  # fmt: skip
    assert out.reset_units == reported
    before, after = load_checkpoint(c), load_checkpoint(out.out)
    for name, v in before.model.items():
        w = after.model[name]
        if name.endswith(("mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight")):
            layer = int(name.split(".")[2])
            idx = reported[layer]
            touched = w[:, idx] if "c_proj" in name else w[idx]
            if name.endswith("c_fc.weight"):
                assert bool((touched != 0).all())  # fresh incoming weights
            else:
                assert float(touched.abs().max()) == 0.0
            keep = [u for u in range(v.shape[-1 if "c_proj" in name else 0]) if u not in idx]
            kept = (w[:, keep], v[:, keep]) if "c_proj" in name else (w[keep], v[keep])
            assert torch.equal(*kept), name
        else:
            assert torch.equal(w, v), name
    entry = after.meta["history"][-1]
    assert entry["intervention"] == "redo" and entry["units_reset"] == [3, 1]
    assert after.task_index == before.task_index and after.last_lang == before.last_lang


def test_cli_intervene_shrink_perturb_history_and_inspect(tmp_path):
    c0 = tmp_path / "c0.pt"
    init_checkpoint(c0, size="nano", vocab_size=320, context=CTX, seed=1)
    proc = run_plc(
        "intervene", "shrink-perturb", c0, "--out", tmp_path / "c0x.pt",
        "--shrink-perturb", "0.5,0.01", "--run-id", "fork", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["run_id"] == "fork" and res["reset_units"] is None
    a, b = load_checkpoint(c0), load_checkpoint(tmp_path / "c0x.pt")
    ln = "transformer.ln_f.weight"
    assert torch.equal(a.model[ln], b.model[ln])
    w = "transformer.h.0.attn.c_attn.weight"
    assert float((b.model[w] - 0.5 * a.model[w]).std()) == pytest.approx(0.01 * 0.02, rel=0.1)
    assert b.meta["history"] == [
        {
            "intervention": "shrink-perturb",
            "lang": "",
            "tokens": 0,
            "steps": 0,
            "shrink_perturb": [0.5, 0.01],
            "shrink_perturb_at": "task",
            "seed": 1,
        }
    ]
    shown = run_plc("inspect", tmp_path / "c0x.pt")
    assert shown.returncode == 0 and "intervene shrink-perturb" in shown.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["cut", "C", "--out", "X"], "unknown method 'cut'"),
        (["shrink-perturb", "C", "--out", "X"], "needs --shrink-perturb"),
        (["shrink-perturb", "C", "--out", "X", "--shrink-perturb", "2,0.1"], "(0, 1]"),
        (["shrink-perturb", "C", "--out", "X", "--shrink-perturb", "a"], "λ,σ"),
        (["redo", "C", "--out", "X"], "redo needs --data and --lang"),
        (["redo", "C", "--out", "X", "--lang", "vi", "--tau", "-1"], "--tau must be"),
        (["redo", "C", "--out", "X", "--lang", "xx", "--data", "D"], "'xx' is not in"),
        (["redo", "C", "--out", "C"], "is the input checkpoint"),
    ],
)
def test_cli_intervene_bad_input(tmp_path, args, fragment):
    c0 = tmp_path / "c0.pt"
    init_checkpoint(c0, size="nano", tokenizer="byte", context=CTX, seed=1)
    data = _store(tmp_path / "data")
    subst = {"C": str(c0), "X": str(tmp_path / "x.pt"), "D": str(data)}
    proc = run_plc("intervene", *[subst.get(a, a) for a in args])
    assert_bad_input(proc, fragment)
    assert not (tmp_path / "x.pt").exists()


DDP_WORKER = """
import os, sys, torch
import torch.distributed as dist
from plc.init import build_model
from plc.mitigations import Mitigations
from plc.options import MitigationOptions
from plc.model import make_config
from plc.options import TrainOptions
from plc.train import make_optimizer

torch.set_num_threads(1)
ddp = "RANK" in os.environ
if ddp:
    dist.init_process_group("gloo")
rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
model = build_model(make_config("nano", vocab_size=320, context=16), 0)
opt = make_optimizer(model, TrainOptions(lr=1e-2, weight_decay=0.0))
net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
options = MitigationOptions(
    cbp=0.02, cbp_maturity=1, cbp_decay=0.9, redo=0.6, redo_every=2,
    shrink_perturb=(0.999, 0.01), shrink_perturb_at="step",
)
mit = Mitigations(options, seed=1, task_index=1).attach(model, opt)
for step in range(6):
    g = torch.Generator().manual_seed(step)
    t = torch.randint(0, 256, (4, 17), generator=g)[rank::world]
    x, y = t[:, :-1], t[:, 1:]
    if step == 0:
        mit.at_task_start(x)
    net(x, y).backward()
    opt.step()
    mit.after_step(step, x)
    opt.zero_grad(set_to_none=True)
torch.save({"model": model.state_dict(), "counters": mit.counters}, f"{sys.argv[1]}.{rank}")
"""


def test_ddp_ranks_reset_the_same_units_as_one_process(tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, script, tmp_path / "one.pt"], env=env, capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         script, tmp_path / "two.pt"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a, b, b1 = (
        torch.load(tmp_path / f"{n}.pt.{r}", weights_only=True)
        for n, r in (("one", 0), ("two", 0), ("two", 1))
    )
    # The ranks stay identical: same units reset, same fresh weights, same perturbations.
    assert b1["counters"] == b["counters"]
    assert all(torch.equal(v, b1["model"][k]) for k, v in b["model"].items())
    # And they reset what one process on the whole batch does. Weights agree to Adam's
    # amplification of summation-order noise in near-zero gradients (2.6e-4 on the key biases
    # without any method); a unit reset differently would differ by ~0.02.
    assert a["counters"] == b["counters"]
    assert a["counters"]["cbp_replaced"] > 0 and a["counters"]["redo_reset"] > 0
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=0, atol=2e-3)


def test_the_loop_applies_and_records_the_remedies(tmp_path):
    """train-task with remedies on: the output obeys them, the history and metric rows say so."""
    import polars as pl

    from plc.task import train_task

    data = _store(tmp_path / "data", langs=("en",))
    init_checkpoint(tmp_path / "c0.pt", size="nano", vocab_size=320, context=CTX, seed=4)
    res = train_task(
        tmp_path / "c0.pt", "en", data=data, metrics=tmp_path / "m", preset="tiny", device="cpu",
        seq_len=CTX, batch_tokens=4 * CTX, steps=6, clip_weights=0.5, cbp=0.05, cbp_maturity=2,
    )  # fmt: skip
    out = load_checkpoint(res.out)
    model = out.build_model()
    params = dict(model.named_parameters())
    for name, bound in _clip_bounds(model).items():
        assert params[name].abs().max() <= 0.5 * bound + 1e-7, name
    record = out.meta["history"][-1]["mitigations"]
    assert record["label"] == "clip0.5+cbp0.05" and record["clip_weights"] == 0.5
    assert out.method == "clip0.5+cbp0.05"
    assert out.meta["mitigation_state"]["cbp"]["ages"].max() == 6  # carried to the next task
    assert set(pl.read_parquet(res.metrics)["method"]) == {"clip0.5+cbp0.05"}
    plain = train_task(
        tmp_path / "c0.pt", "en", data=data, metrics=tmp_path / "p", preset="tiny", device="cpu",
        seq_len=CTX, batch_tokens=4 * CTX, steps=2, out=tmp_path / "plain.pt",
    )  # fmt: skip
    assert load_checkpoint(plain.out).method == "none"
    assert "mitigations" not in load_checkpoint(plain.out).meta["history"][-1]
    # Weight decay off the preset's is an arm of a study too (`--mitigation wd:0.1`), so
    # `--by method` keeps it apart from the baseline; the preset's own decay is the baseline.
    decayed = train_task(
        tmp_path / "c0.pt", "en", data=data, metrics=tmp_path / "w", preset="tiny", device="cpu",
        seq_len=CTX, batch_tokens=4 * CTX, steps=2, out=tmp_path / "wd.pt", weight_decay=0.3,
        clip_weights=1.0,
    )  # fmt: skip
    assert load_checkpoint(decayed.out).method == "wd0.3+clip1"
    assert set(pl.read_parquet(decayed.metrics)["method"]) == {"wd0.3+clip1"}
    tiny = get_preset("tiny").weight_decay
    assert method_label("none", tiny, "tiny") == "none" != method_label("none", 0.3, "tiny")


def test_variants_from_one_checkpoint_keep_their_own_metric_files(tmp_path, monkeypatch):
    """A baseline and a clipped variant trained from one c0.pt into the default metrics folder:
    the variant's file names its method, so neither overwrites the other, and status reads both."""
    import polars as pl

    from plc.study import find_study_files
    from plc.task import train_task

    monkeypatch.chdir(tmp_path)
    data = _store(tmp_path / "data", langs=("en",))
    init_checkpoint(tmp_path / "c0.pt", size="nano", vocab_size=320, context=CTX, seed=4)
    common = dict(data=data, preset="tiny", device="cpu", seq_len=CTX, batch_tokens=4 * CTX)
    base = train_task("c0.pt", "en", steps=2, **common)
    clip = train_task("c0.pt", "en", steps=2, out="clip.pt", clip_weights=0.2, **common)
    sp = train_task("c0.pt", "en", steps=2, out="sp.pt", shrink_perturb="0.8,0.01", **common)
    run = load_checkpoint("c0.pt").run_id
    assert Path(base.metrics) == Path("metrics") / f"train-{run}-t1-en.parquet"
    assert Path(clip.metrics) == Path("metrics") / f"train-{run}-clip0.2-t1-en.parquet"
    assert Path(sp.metrics) == Path("metrics") / f"train-{run}-sp0.8_0.01-t1-en.parquet"
    methods = {p: set(pl.read_parquet(p)["method"]) for p in (base.metrics, clip.metrics)}
    assert methods == {base.metrics: {"none"}, clip.metrics: {"clip0.2"}}
    runs = {m.run_id for m in find_study_files(tmp_path).metrics}
    assert runs == {run, f"{run}-clip0.2", f"{run}-sp0.8_0.01"}
    # The same variant again is refused, and the message does not just say "pass --force".
    with pytest.raises(PlcError, match="write elsewhere") as e:
        train_task("c0.pt", "en", steps=2, out="clip2.pt", clip_weights=0.2, **common)
    assert "only to replace this same run" in str(e.value)


# ------------------------------------------------------- SWR, embedding reset, spectral reg.


def _init_of(model):
    """Each parameter's initial (mean, std or None), by hand: LayerNorm gains 1, other constants
    0, normal draws with GPT.init_stds."""
    stds = model.init_stds()
    out = {}
    for name, _ in model.named_parameters():
        gain = name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
        out[name] = (1.0 if gain else 0.0, stds[name])
    return out


def test_swr_redraws_exactly_the_low_utility_weights_from_their_initialisation():
    zeta = 0.5
    model = _model(seed=3)
    mit = Mitigations(MitigationOptions(swr=zeta, swr_every=4), seed=1, run_step=2)
    opt = _opt(model, 0.0)  # lr 0: only SWR moves θ
    mit.attach(model, opt)
    x, y = _batch(0)
    model(x, y).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    picked = {}
    for n, p in model.named_parameters():
        utility = (p * p.grad).abs()
        picked[n] = utility <= zeta * utility.mean()
    opt.step()
    mit.after_step(0)  # the run's step 3: not a multiple of 4
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    mit.after_step(1)  # the run's step 4
    init = _init_of(model)
    drawn = []
    for n, p in model.named_parameters():
        kept = ~picked[n]
        assert torch.equal(p[kept], before[n][kept]), n  # the others untouched
        mean, std = init[n]
        if std is None:
            assert torch.all(p[picked[n]] == mean), n  # constants back to their init value
        else:
            assert not torch.equal(p[picked[n]], before[n][picked[n]]), n
            drawn.append((p[picked[n]] - mean) / std)
    z = torch.cat(drawn).detach()
    assert mit.counters["swr_reset"] == sum(int(m.sum()) for m in picked.values()) > 1000
    assert float(z.mean()) == pytest.approx(0.0, abs=0.05)
    assert float(z.std()) == pytest.approx(1.0, abs=0.05)  # N(0, σ_init²) in units of σ_init


def test_embedding_reset_every_n_run_steps_redraws_the_table_and_its_adamw_state():
    model = _model(seed=3)
    mit = Mitigations(MitigationOptions(embed_reset=3), seed=1, run_step=1)
    opt = _opt(model, 0.0)
    mit.attach(model, opt)
    wte = model.transformer.wte.weight
    reset_at = []
    for step in range(6):
        x, y = _batch(step)
        model(x, y).backward()
        opt.step()
        old = wte.detach().clone()
        mit.after_step(step, x)
        if not torch.equal(wte, old):
            reset_at.append(step)
            state = opt.state[wte]
            assert all(float(state[k].abs().max()) == 0 for k in ("exp_avg", "exp_avg_sq"))
            assert float(state["step"]) == 0  # AdamEF restarts the embedding's bias correction
            assert float(opt.state[model.transformer.wpe.weight]["exp_avg_sq"].max()) > 0
        opt.zero_grad(set_to_none=True)
    assert reset_at == [1, 4]  # the run's steps 3 and 6
    assert mit.counters["embed_resets"] == 2
    assert float(wte.std()) == pytest.approx(0.02, rel=0.05) and abs(float(wte.mean())) < 2e-3


def test_spectral_regularisation_adds_the_penalty_gradient_of_the_top_singular_value():
    lam = 0.3
    model = _model(seed=3)
    mit = Mitigations(MitigationOptions(spectral=lam), seed=1).attach(model, None)
    with torch.no_grad():
        for _ in range(500):  # converge the persistent vectors fully for an exact comparison
            mit._power_iteration()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    penalty = 0.0
    for m in linears:
        full = m.weight if m.bias is None else torch.cat([m.weight, m.bias[:, None]], dim=1)
        penalty = penalty + (torch.linalg.matrix_norm(full, ord=2) ** 2 - 1) ** 2
    expected = torch.autograd.grad(lam * penalty, [p for m in linears for p in m.parameters()])
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        sigmas = mit.spectral_grad()
    got = [p.grad for m in linears for p in m.parameters()]
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, rtol=1e-3, atol=1e-7)
    exact = [float(torch.linalg.matrix_norm(torch.cat([m.weight, m.bias[:, None]], 1), ord=2))
             for m in linears]  # fmt: skip
    assert sigmas == pytest.approx(exact, rel=1e-4)
    # The vectors are resumable state: a resumed task continues the same estimates.
    other = Mitigations(MitigationOptions(spectral=lam), seed=1).attach(_model(seed=3), None)
    other.load_state_dict(mit.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.spectral_v, mit.spectral_v, strict=True))


def test_new_remedies_are_arms_with_their_reference_defaults():
    from plc.options import parse_mitigation

    assert parse_mitigation("swr") == {"swr": 0.0005}  # collas_2025_swr_paper's ViT config
    assert TrainOptions(swr=0.0005).swr_every == 128
    assert parse_mitigation("embreset") == {"embed_reset": 1000}  # --clear_embed_every_K_updates
    assert parse_mitigation("spectral") == {"spectral": 0.0001}
    o = MitigationOptions(swr=1e-3, swr_every=64, embed_reset=500, spectral=1e-4)
    assert o.active and o.label == "swr0.001@64+embreset500+spectral0.0001"
    assert o.record()["swr_every"] == 64 and o.record()["embed_reset"] == 500
    for kwargs, fragment in [
        ({"swr": 0.0}, "--swr ζ"),
        ({"swr": 1e-3, "swr_every": 0}, "--swr-every"),
        ({"embed_reset": 0}, "--embed-reset"),
        ({"spectral": -1.0}, "--spectral λ"),
    ]:
        with pytest.raises(PlcError, match=None) as e:
            MitigationOptions(**kwargs)
        assert fragment in str(e.value)


def test_intervene_embed_reset_redraws_only_the_token_embedding(tmp_path):
    c = tmp_path / "c0.pt"
    init_checkpoint(c, size="nano", vocab_size=320, context=CTX, seed=4)
    res = intervene("embed-reset", c, out=tmp_path / "c0x.pt", device="cpu")
    before, after = load_checkpoint(c), load_checkpoint(res.out)
    for name, value in before.model.items():
        same = torch.equal(value, after.model[name])
        assert same == (name != "transformer.wte.weight"), name
    wte = after.model["transformer.wte.weight"]
    assert float(wte.std()) == pytest.approx(0.02, rel=0.05)
    assert after.meta["history"][-1] == {
        "intervention": "embed-reset", "lang": "", "tokens": 0, "steps": 0, "seed": 4
    }  # fmt: skip
    assert after.method == "intervene embed-reset" and res.task_index == 0
