"""Hugging Face causal LMs as the model under study (issue 32), for every family plc supports:
tiny random models built with transformers' config classes, saved as a user has them, loaded
offline. For each family: plc's loaded model gives AutoModelForCausalLM's logits; the init stds
are the family's own init; dormant units and attention entropy equal values computed with the
family's own modules and output_attentions; train-task moves the loss, probe and diagnose run,
export round-trips; every remedy acts on the family's own MLP units."""

from __future__ import annotations

import math
import types

import numpy as np
import polars as pl
import pytest
import torch
from conftest import assert_bad_input, cli, run_plc
from hf_models import FAMILIES, hf_config, hub_cache, offline_env, save_model, tokenizer_dir

from plc.data.shard import shard
from plc.data.tokenstore import open_lang
from plc.errors import PlcError
from plc.hf.families import FAMILIES as SUPPORTED
from plc.init import build_model, init_checkpoint
from plc.measures import Part, measure, seam
from plc.mitigations import Mitigations, initial_state
from plc.options import MitigationOptions
from plc.store import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The Hub is never reached: a model not on this machine is an error, not a download."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tokenizer, one model folder per family (GPT-NeoX stored in fp16, as Pythia is), and the
    vi, ru and en token stores sharded with the models' tokenizer."""
    root = tmp_path_factory.mktemp("hf")
    tok = tokenizer_dir(root / "tok")
    models = {
        f: save_model(f, root / f, tokenizer=tok, dtype="float16" if f == "gpt_neox" else None)
        for f in FAMILIES
    }
    for lang in ("vi", "ru", "en"):
        shard(lang, root / "data" / f"{lang}.zarr", tokenizer=f"hf:{tok}")
    return {"root": root, "tok": tok, "models": models, "data": root / "data"}


def _reference(folder, **kw):
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, **kw
    ).eval()


def test_every_family_is_covered():
    assert set(FAMILIES) == set(SUPPORTED)


@pytest.mark.parametrize("family", FAMILIES)
def test_loaded_model_gives_the_logits_of_auto_model(env, tmp_path, family):
    folder = env["models"][family]
    res = init_checkpoint(tmp_path / "c0.pt", source=f"hf:{folder}", seed=3)
    # The safe format: tensors and plain values only.
    payload = torch.load(tmp_path / "c0.pt", weights_only=True)
    assert payload["config"]["family"] == family
    ckpt = load_checkpoint(tmp_path / "c0.pt")
    hf = ckpt.meta["hf"]
    assert (
        hf["source"] == f"hf:{folder}" and hf["architecture"] == type(_reference(folder)).__name__
    )
    assert hf["dtype"] == ("float16" if family == "gpt_neox" else "float32")
    assert {v.dtype for v in ckpt.model.values()} == {
        torch.float16 if family == "gpt_neox" else torch.float32
    }
    assert ckpt.meta["tokenizer"]["vocab_size"] == 300 and ckpt.config.vocab_size == 320
    assert res.size == family and res.run_id == f"{family}-s3" and ckpt.task_index == 0
    ref = _reference(folder)
    assert res.n_params_total == sum(p.numel() for p in ref.parameters())
    tables = ref.get_input_embeddings().weight.numel()
    if ref.get_output_embeddings().weight is not ref.get_input_embeddings().weight:
        tables += ref.get_output_embeddings().weight.numel()
    if family == "gpt2":
        tables += ref.transformer.wpe.weight.numel()
    assert res.n_params == res.n_params_total - tables

    model = ckpt.build_model().eval()
    x = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        assert torch.equal(logits, ref(x).logits)
        # The loss is the cross-entropy of those logits (chunked or not).
        y = torch.roll(x, -1, 1)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        assert torch.allclose(model(x, y), loss, rtol=1e-6)
    with pytest.raises(PlcError, match="exceeds the model's context 64"):
        model(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize("family", FAMILIES)
def test_init_stds_and_kinds_are_the_familys_own_initialisation(family):
    """Every weight's std is that of transformers' own _init_weights of the family (empirical std
    of a fresh model within 12 %), every constant one is constant, and a fresh plc build from a
    seed is that init, reproducibly."""
    from plc.hf.adapter import HFModel, config_of

    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(hf_config(family, width=64))
    model = HFModel(hf, config_of(hf, family))
    stds, kinds = model.init_stds(), model.param_kinds()
    params = dict(model.named_parameters())
    assert set(stds) == set(kinds) == set(params)
    for name, p in params.items():
        if stds[name] is None:
            assert kinds[name] in ("bias", "norm")
            assert torch.all(p == p.flatten()[0]), name
        else:
            assert abs(float(p.detach().std()) / stds[name] - 1) < 0.12, (
                name,
                float(p.std()),
                stds[name],
            )
    residual = [n for n in stds if stds[n] is not None and stds[n] < 0.015]
    if family == "gpt2":  # GPT-2's scaled residual projections, 0.02 / √(2·2)
        assert residual and all(n.endswith("c_proj.weight") for n in residual)
        assert all(stds[n] == pytest.approx(0.01) for n in residual)
    else:
        assert not residual
    head = [n for n, p in params.items() if p is hf.get_output_embeddings().weight]
    assert kinds[head[0]] == "table"
    a, b = build_model(model.config, 5), build_model(model.config, 5)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def _own_units(ref, family, x):
    """MLP hidden units by the family's own modules: act(c_fc) / act(dense_h_to_4h) read off the
    activation's output, SwiGLU's act(gate) · up from the two projections' outputs."""
    spec = SUPPORTED[family]
    out, hooks = [], []
    for block in ref.get_submodule(spec.blocks):
        mlp = block.mlp
        if spec.gated:
            seen = {}
            hooks += [
                mlp.gate_proj.register_forward_hook(lambda m, i, o, s=seen: s.update(g=o)),
                mlp.up_proj.register_forward_hook(
                    lambda m, i, o, s=seen, a=mlp.act_fn: out.append(a(s["g"]) * o)
                ),
            ]
        else:
            hooks.append(mlp.act.register_forward_hook(lambda m, i, o: out.append(o)))
    with torch.no_grad():
        ref(x)
    for h in hooks:
        h.remove()
    return torch.stack([h.flatten(0, 1).double() for h in out])  # (layers, tokens, units)


@pytest.mark.parametrize("family", FAMILIES)
def test_dormant_units_and_entropy_equal_the_familys_own_hooks_and_attentions(
    env, tmp_path, family
):
    folder = env["models"][family]
    init_checkpoint(tmp_path / "c0.pt", source=f"hf:{folder}")
    model = load_checkpoint(tmp_path / "c0.pt").build_model().eval()
    windows = np.random.default_rng(0).integers(0, 300, (6, 49))
    got = measure(
        model,
        {"vi": windows},
        seq_len=48,
        units=Part("vi", 6),
        entropy=Part("vi", 6),
        query_from=5,
        batch_size=4,
    )
    x = torch.from_numpy(windows[:, :48])
    ref = _reference(folder, attn_implementation="eager")
    units = _own_units(ref, family, x)
    assert got.mean_abs.shape == (2, model.mlp_width) == units.shape[::2]
    assert torch.allclose(got.mean_abs, units.abs().mean(dim=1), rtol=1e-5, atol=1e-9)
    with torch.no_grad():
        attentions = ref(x, output_attentions=True).attentions
    want = torch.stack(
        [-torch.special.xlogy(p, p).sum(-1)[:, :, 4:].double().mean(dim=(0, 2)) for p in attentions]
    )
    assert got.entropy.shape == (2, 4)
    assert torch.allclose(got.entropy, want, rtol=1e-5)
    # The model is back on its fast attention, and the same logits, after watching.
    assert model.hf.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("family", FAMILIES)
def test_train_probe_diagnose_and_export_round_trip(env, tmp_path, family):
    """The protocol's commands on the family with the flags plc's GPT takes: a task of training
    moves the loss; a probe and a diagnose write their files; the trained model exports to its
    own format, which AutoModelForCausalLM loads with equal logits."""
    from plc.diagnose import diagnose
    from plc.evaluate import evaluate
    from plc.export import export_hf
    from plc.init import describe_checkpoint
    from plc.mitigations import intervene
    from plc.probe import probe
    from plc.task import train_task

    data, metrics = env["data"], tmp_path / "metrics"
    init_checkpoint(tmp_path / "c0.pt", source=f"hf:{env['models'][family]}", preset="tiny")
    res = train_task(
        tmp_path / "c0.pt", "en", data=data, metrics=metrics, lr=3e-3, steps=12, device="cpu"
    )
    rows = pl.read_parquet(res.metrics)
    first, last = rows["loss"][:3].mean(), rows["loss"][-3:].mean()
    assert last < first - 0.1, (first, last)
    trained = load_checkpoint(res.out)
    assert trained.task_index == 1 and isinstance(
        trained.config, type(load_checkpoint(tmp_path / "c0.pt").config)
    )
    assert {v.dtype for v in trained.model.values()} == {torch.float32}

    pr = probe(res.out, data=data, metrics=metrics, device="cpu")
    assert math.isfinite(pr.auc) and len(pr.curve) >= 3
    assert pr.metrics_path.endswith(f"probe-{family}-s0-t1-en-vi.parquet")
    scratch = probe(res.out, data=data, metrics=metrics, from_scratch=True, device="cpu")
    assert math.isfinite(scratch.auc) and scratch.auc != pr.auc

    dg = diagnose(res.out, data=data, metrics=metrics, preset="tiny", device="cpu")
    d = pl.read_parquet(dg.metrics_path)
    assert set(d["metric"]) >= {"param_abs_mean", "dormant_pct", "entropy", "effective_rank"}
    assert d.filter(pl.col("metric") == "entropy").height == 2 * 4  # layers × heads
    assert all(math.isfinite(v) for v in d["value"])

    ev = evaluate(res.out, data=data, lang="vi", seqs=4, seq_len=32, device="cpu")
    assert math.isfinite(ev.loss) and ev.tokens == 4 * 32
    iv = intervene("shrink-perturb", res.out, out=tmp_path / "c1x.pt", shrink_perturb="0.5,0")
    assert iv.units_per_layer == trained.config.mlp_width
    halved = load_checkpoint(tmp_path / "c1x.pt")
    name = next(n for n, k in trained.build_model().param_kinds().items() if k == "weight")
    assert torch.allclose(halved.model[name], trained.model[name] * 0.5)
    info = describe_checkpoint(res.out)
    assert info["architecture"] == trained.config.architecture and info["task_index"] == 1

    out = export_hf(res.out, tmp_path / "exported")
    loaded = _reference(out)
    assert type(loaded).__name__ == trained.config.architecture
    x = torch.randint(0, 300, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, trained.build_model().eval()(x))
    # Its dropout back at the source's, its tokenizer beside it.
    source = transformers.AutoConfig.from_pretrained(env["models"][family])
    for key in ("resid_pdrop", "attention_dropout", "hidden_dropout"):
        if hasattr(source, key):
            assert getattr(loaded.config, key) == getattr(source, key)
    assert (out / "tokenizer.json").is_file()


def _remedy(model, **options):
    return Mitigations(MitigationOptions(**options), seed=1).attach(model, None, micro_batch=4)


@pytest.mark.parametrize("family", FAMILIES)
def test_remedies_act_on_the_familys_own_units_and_weights(env, tmp_path, family):
    init_checkpoint(tmp_path / "c0.pt", source=f"hf:{env['models'][family]}")
    base = load_checkpoint(tmp_path / "c0.pt")
    model = base.build_model()
    view = seam(model)
    assert view is model  # the adapter is its own seam
    params = dict(model.named_parameters())
    kinds = view.param_kinds()

    # Clipping: every projection weight and bias within κ·7σ; tables and norms untouched.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(50)
    before = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        _remedy(model, clip_weights=1.0).clip()
    stds = view.init_stds()
    for name, p in params.items():
        if kinds[name] in ("weight", "bias"):
            key = name if kinds[name] == "weight" else name[: -len("bias")] + "weight"
            assert float(p.detach().abs().max()) <= 7 * stds[key] + 1e-7, name
        else:
            assert torch.equal(p, before[name]), name

    # ReDo: exactly the dormant units get fresh incoming weights (both SwiGLU projections) and
    # zero outgoing weights, along the family's own axes (GPT-2's Conv1D is transposed).
    model = base.build_model()
    params = dict(model.named_parameters())
    where = model.unit_params(0)
    out_name, out_axis = where.outgoing
    dead = torch.tensor([1, 5, 7])
    with torch.no_grad():
        for name, axis in where.incoming:  # units that never fire: zero input weights and bias
            params[name].index_fill_(axis, dead, 0.0)
    before = {n: p.detach().clone() for n, p in params.items()}
    x = torch.randint(0, 300, (4, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reset = _remedy(model, redo=0.01).redo([x], step=0)
    assert reset[0] == dead.tolist()
    for name, axis in where.incoming:
        p, b = params[name], before[name]
        keep = torch.ones(p.shape[axis], dtype=torch.bool)
        keep[dead] = False
        assert torch.equal(
            p.index_select(axis, keep.nonzero().flatten()),
            b.index_select(axis, keep.nonzero().flatten()),
        )
        fresh = p.index_select(axis, dead)
        if name.endswith("weight"):
            assert fresh.abs().sum() > 0 and abs(float(fresh.std()) / stds[name] - 1) < 0.5
        else:
            assert torch.all(fresh == 0)
    assert torch.all(params[out_name].index_select(out_axis, dead) == 0)

    # CBP: units replaced in the training loop's forwards, counted, their outgoing weights 0.
    model = base.build_model()
    mit = _remedy(model, cbp=0.5, cbp_maturity=0)
    model.train()
    with torch.enable_grad():
        model(x, torch.roll(x, -1, 1)).backward()
    with torch.no_grad():
        mit.cbp_step(1)
    assert mit.counters["cbp_replaced"] == 2 * (model.mlp_width // 2)
    assert mit.cbp_util.shape == (2, model.mlp_width)

    # Shrink & perturb λ = 1, σ = 0 changes nothing; L2-init's θ₀ is the pretrained start.
    model = base.build_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        _remedy(model, shrink_perturb=(1.0, 0.0)).shrink_perturb(step=0)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    theta0 = initial_state(base)
    assert all(torch.equal(theta0.state[k], v) for k, v in base.model.items())


def test_l2_init_theta0_of_a_later_task_is_the_pretrained_start(env, tmp_path):
    """θ₀ is found by its digest: in the start checkpoint, else in the source model; a run
    whose start is nowhere is refused in one line."""
    from plc.store import save_checkpoint

    init_checkpoint(tmp_path / "c0.pt", source=f"hf:{env['models']['llama']}")
    base = load_checkpoint(tmp_path / "c0.pt")
    later = load_checkpoint(tmp_path / "c0.pt")
    later.model = {k: v + 0.01 for k, v in later.model.items()}
    later.meta = {**later.meta, "task_index": 3}
    save_checkpoint(tmp_path / "c3.pt", later)
    c3 = load_checkpoint(tmp_path / "c3.pt")
    got = initial_state(c3)
    assert str(tmp_path / "c0.pt") in got.source
    assert all(torch.equal(got.state[k], v) for k, v in base.model.items())
    (tmp_path / "c0.pt").unlink()
    assert "hf:" in initial_state(c3).source  # the source folder, re-read
    c3.meta["hf"] = {**c3.meta["hf"], "folder": str(tmp_path / "gone"), "name": "gone/nowhere"}
    with pytest.raises(PlcError, match="θ₀ of run"):
        initial_state(c3)


# ------------------------------------------------------------------ where models come from


@pytest.fixture(scope="module")
def suite(env, tmp_path_factory):
    """A model suite as a user has it: revisions step0, step2, step4 of `org/tiny` in a Hugging
    Face cache (snapshots and refs, what from_pretrained leaves), and the same as folders."""
    root = tmp_path_factory.mktemp("suite")
    folders = {
        f"step{k}": save_model("gpt_neox", root / "tiny" / f"step{k}", seed=k, tokenizer=env["tok"])
        for k in (0, 2, 4)
    }
    return {"cache": hub_cache(root / "cache", "org/tiny", folders), "folder": root / "tiny"}


def test_revisions_from_the_hub_cache_offline_and_from_folders(suite, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(suite["cache"]))
    res = init_checkpoint(
        tmp_path / "a.pt", source="hf:org/tiny@step2", along_pretraining=True, tokens_per_step=1000
    )
    a = load_checkpoint(tmp_path / "a.pt")
    assert a.meta["hf"]["revision"] == "step2" and len(a.meta["hf"]["commit"]) == 40
    assert res.run_id == "tiny-step2-s0" and res.size == "tiny"
    # A point along pretraining: task index = its step, tokens = step × tokens per step.
    assert (a.task_index, a.meta["tokens_seen"], a.last_lang) == (2, 2000, "pretrain")
    assert a.row_context()["lang"] == "pretrain"
    b = load_checkpoint(
        init_checkpoint(tmp_path / "b.pt", source=f"hf:{suite['folder']}@step2").path
    )
    assert b.task_index == 0 and b.meta["tokens_seen"] == 0  # the protocol's start
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    c = load_checkpoint(init_checkpoint(tmp_path / "c.pt", source="hf:org/tiny@step4").path)
    assert not torch.equal(c.model["lm_head.weight"], a.model["lm_head.weight"])
    # The store sharded with hf:ID@REVISION's tokenizer is the model's: fingerprints agree.
    st = shard("vi", tmp_path / "vi.zarr", tokenizer="hf:org/tiny@step4")
    assert open_lang(tmp_path, "vi").tokenizer["fingerprint"] == c.meta["tokenizer"]["fingerprint"]
    assert st.val_tokens > 0


def test_cli_init_from_the_cache_in_a_users_offline_environment(suite, tmp_path):
    proc = run_plc(
        "init", "--from", "hf:org/tiny@step4", "--out", tmp_path / "c.pt", "--json",
        env=offline_env(suite["cache"]),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert '"source": "hf:org/tiny@step4"' in proc.stdout and "Loading" not in proc.stderr
    proc = run_plc(
        "init", "--from", "hf:org/tiny@step3", "--out", tmp_path / "d.pt",
        env=offline_env(suite["cache"]),
    )  # fmt: skip
    assert_bad_input(proc, "hf:org/tiny@step3 is not in the local Hugging Face cache", "step3")
    assert not (tmp_path / "d.pt").exists()


def _unsupported(path):
    import torch as _torch

    cfg = transformers.GPTJConfig(vocab_size=320, n_embd=32, n_layer=1, n_head=4, n_positions=64)
    _torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "case",
    ["arch", "revision", "folder", "tokenizer", "size", "sinks", "along", "tokens-per-step"],
)
def test_cli_init_from_bad_input(env, suite, tmp_path, monkeypatch, capsys, case):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(suite["cache"]))
    neox = env["models"]["gpt_neox"]
    big = tmp_path / "big-tok"
    if case == "tokenizer":  # a tokenizer of 400 tokens for a model of 320 embedding rows
        tokenizer_dir(big, size=400)
    args, fragments = {
        "arch": (["--from", f"hf:{_unsupported(tmp_path / 'gptj')}"], ["gptj", "no adapter"]),
        "revision": (["--from", "hf:org/tiny@step9"], ["not in the local Hugging Face cache"]),
        "folder": (["--from", f"hf:{suite['folder']}@step9"], ["no revision folder 'step9'"]),
        "tokenizer": (
            ["--from", f"hf:{neox}", "--tokenizer", f"hf:{big}"],
            ["400 tokens", "embeds only 320"],
        ),
        "size": (["--from", f"hf:{neox}", "--size", "nano"], ["--size", "plc's own GPT"]),
        "sinks": (["--from", f"hf:{neox}", "--sink-tokens", "2"], ["--sink-tokens"]),
        "along": (["--from", f"hf:{neox}", "--along-pretraining"], ["names no pretraining step"]),
        "tokens-per-step": (
            ["--from", "hf:org/tiny@step2", "--along-pretraining"],
            ["--tokens-per-step"],
        ),
    }[case]
    capsys.readouterr()  # what building the bad inputs printed
    proc = cli(monkeypatch, capsys, "init", *args, "--out", tmp_path / "c.pt")
    assert_bad_input(proc, *fragments)
    assert not (tmp_path / "c.pt").exists()


def test_a_store_of_another_tokenizer_is_refused(env, tmp_path, monkeypatch, capsys):
    init_checkpoint(tmp_path / "c0.pt", source=f"hf:{env['models']['llama']}", preset="tiny")
    shard("en", tmp_path / "data" / "en.zarr", tokenizer="byte")
    proc = cli(
        monkeypatch, capsys, "train-task", "--ckpt", tmp_path / "c0.pt", "--lang", "en",
        "--data", tmp_path / "data", "--out", tmp_path / "c1.pt",
    )  # fmt: skip
    assert_bad_input(proc, "tokenized with 'byte'", "vocabulary fingerprints differ")


def test_checkpointing_and_fsdp_are_refused_for_a_hugging_face_model():
    """Both act on plc's GPT blocks (GPT.checkpointing, a fully_shard unit per block): a Hugging
    Face model asking for them is one line, not a run that silently keeps every activation."""
    from plc.hf.adapter import HFModel, config_of
    from plc.options import TrainOptions
    from plc.runtime import setup
    from plc.train import train_loop

    family = FAMILIES[0]
    hf = transformers.AutoModelForCausalLM.from_config(hf_config(family))
    model = HFModel(hf, config_of(hf, family))
    opts = TrainOptions(
        steps=1, lr=1e-3, batch_tokens=64, seq_len=16, warmup=0.0, activation_checkpointing=True
    ).resolve(preset="tiny")
    sampler = types.SimpleNamespace(batch_size=4, seq_len=16)  # refused before the first batch
    with pytest.raises(PlcError, match="act on plc's GPT blocks"):
        train_loop(model, sampler, opts, runtime=setup("cpu"))
