"""One options object from the flags to the loop: TrainOptions, presets resolved once, no cycles."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import plc.train
from plc.cli import app
from plc.data.shard import shard
from plc.diagnose import diagnose
from plc.errors import PlcError
from plc.init import init_checkpoint
from plc.options import TrainOptions
from plc.presets import get_preset
from plc.probe import probe
from plc.task import train_task

pytestmark = pytest.mark.usefixtures("one_thread")

# A value other than the default for every field, as the flag takes it and as the loop sees it.
NON_DEFAULT = {
    "preset": ("cpu", "cpu"),  # the checkpoint's is tiny
    "tokens": ("512", None),  # resolved into steps
    "steps": ("3", 3),
    "batch_tokens": ("128", 128),
    "micro_batch": ("2", 2),
    "seq_len": ("16", 16),
    "lr": ("0.002", 0.002),
    "warmup": ("0.25", 0.25),
    "grad_clip": ("1.5", 1.5),
    "weight_decay": ("0.3", 0.3),
    "beta1": ("0.8", 0.8),
    "beta2": ("0.9", 0.9),
    "adam_eps": ("1e-06", 1e-6),
    "seed": ("7", 7),
    "save_every": ("2", 2),
    "save_every_minutes": ("0.5", 0.5),
    "device": ("cpu", "cpu"),
    "compile": (None, True),  # a switch
    "strategy": ("fsdp", "fsdp"),
    "activation_checkpointing": (None, True),  # a switch
    "tensorboard": ("tb", "tb"),
    "clip_weights": ("0.5", 0.5),
    "l2_init": ("0.01", 0.01),
    "shrink_perturb": ("0.9,0.001", (0.9, 0.001)),  # parsed once, by the options
    "shrink_perturb_at": ("step", "step"),
    "cbp": ("0.001", 0.001),
    "cbp_maturity": ("5", 5),
    "cbp_decay": ("0.9", 0.9),
    "redo": ("0.1", 0.1),
    "redo_every": ("4", 4),
    "schedule": ("cosine", "cosine"),
    "lr_floor": ("0.2", 0.2),  # with --schedule wsd
    "lr_decay": ("0.5", 0.5),  # with --schedule wsd
    "replay": ("0.25", 0.25),  # train-task's only: a probe trains on its language alone
    "replay_last": ("2", 2),
    "transition": ("2", 2),  # train-task's only
    "swr": ("0.001", 0.001),
    "swr_every": ("16", 16),
    "embed_reset": ("100", 100),
    "spectral": ("0.001", 0.001),
}
# Fields another flag must accompany (as ReDo's cadence goes with ReDo).
WITH = {
    "redo_every": ["--redo", "0.1"],
    "lr_floor": ["--schedule", "wsd"],
    "lr_decay": ["--schedule", "wsd"],
    "replay_last": ["--replay", "0.1"],
}
TRAIN_TASK_ONLY = ("replay", "replay_last", "transition")


class Captured(Exception):
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    for lang in ("en", "vi", "ru"):
        shard(lang, d / f"{lang}.zarr", source="embedded", tokenizer="byte")
    return d


def test_every_field_is_one_flag_of_every_training_command_and_reaches_the_loop(
    tmp_path, data, monkeypatch
):
    assert set(NON_DEFAULT) == {f.name for f in dataclasses.fields(TrainOptions)}
    init_checkpoint(tmp_path / "c0.pt", size="nano", preset="tiny", context=64, seed=1)
    seen = []

    def fake_loop(model, sampler, options, **kw):
        seen.append(options)
        raise Captured

    monkeypatch.setattr(plc.train, "train_loop", fake_loop)
    monkeypatch.chdir(tmp_path)  # --tensorboard tb opens its folder here
    commands = {
        "train-task": ["train-task", "--lang", "en", "--ckpt", str(tmp_path / "c0.pt")],
        "probe": ["probe", str(tmp_path / "c0.pt")],
    }
    for name, base in commands.items():
        click_cmd = typer.main.get_command(app).commands[name]
        flags = [o for p in click_cmd.params for o in p.opts]
        for field in dataclasses.fields(TrainOptions):
            flag = field.metadata["flag"]
            assert flags.count(flag) == 1, (name, flag)
            given, expected = NON_DEFAULT[field.name]
            args = [flag] if given is None else [flag, given]
            args += WITH.get(field.name, [])
            if field.name != "steps":  # tokens and steps are exclusive; the rest combine
                args += ["--steps", "3"] if field.name != "tokens" else []
            argv = [*base, "--data", str(data), "--metrics", str(tmp_path / "m"), *args]
            result = CliRunner().invoke(app, argv)
            if name == "probe" and field.name in TRAIN_TASK_ONLY:
                assert "is train-task's" in str(result.exception), (flag, result.output)
                continue
            assert isinstance(result.exception, Captured), (name, flag, result.output)
            options = seen[-1]
            assert options.resolved
            if field.name == "tokens":
                assert options.steps == 512 // options.batch_tokens
            else:
                assert getattr(options, field.name) == expected, (name, field.name)


def test_each_field_is_validated_on_the_object():
    cases = [
        (dict(steps=0), "--steps must be positive"),
        (dict(tokens=-5), "--tokens must be positive"),
        (dict(tokens=5, steps=5), "not both"),
        (dict(micro_batch=0), "--micro-batch must be positive"),
        (dict(warmup=1.0), r"--warmup is a fraction of the steps in \[0, 1\)"),
        (dict(grad_clip=0.0), "--grad-clip must be positive"),
        (dict(weight_decay=-0.1), "--weight-decay must be ≥ 0"),
        (dict(beta2=1.0), r"--beta2 must be in \[0, 1\)"),
        (dict(adam_eps=0.0), "--adam-eps must be positive"),
        (dict(lr="fast"), "--lr must be 'auto' or a number"),
        (dict(lr=-1.0), "--lr must be positive"),
        (dict(shrink_perturb="2,0.1"), r"--shrink-perturb λ must be in \(0, 1\]"),
        (dict(cbp=-1.0), r"--cbp ρ must be in \(0, 1\]"),
        (dict(redo_every=5), "--redo-every goes with --redo"),
        (dict(clip_weights=0.0), "--clip-weights κ must be a positive number"),
    ]
    for kwargs, message in cases:
        with pytest.raises(PlcError, match=message):
            TrainOptions(**kwargs)
    with pytest.raises(PlcError, match="not a multiple of --seq-len"):
        TrainOptions(batch_tokens=100).resolve(preset="tiny", d_model=64)
    with pytest.raises(PlcError, match="exceeds the checkpoint's context 32"):
        TrainOptions(seq_len=64, batch_tokens=256).resolve(preset="tiny", d_model=64, context=32)
    with pytest.raises(PlcError, match="unknown preset"):
        TrainOptions(preset="huge").resolve(d_model=64)


def test_a_preset_micro_batch_adapts_to_the_batch_an_explicit_one_does_not():
    paper = dict(preset="paper", d_model=320, context=2048)
    # The paper's 16 sequences per forward: 256 per batch, so 16 divides.
    assert TrainOptions().resolve(**paper).micro_batch == 16
    # --batch-tokens 2048 --seq-len 256: 8 sequences a batch; the largest divisor ≤ 16 is 8.
    small = TrainOptions(batch_tokens=2048, seq_len=256)
    assert small.resolve(**paper).micro_batch == 8
    assert small.resolve(**paper, world_size=2).micro_batch == 4
    assert TrainOptions(batch_tokens=24 * 256, seq_len=256).resolve(**paper).micro_batch == 12
    with pytest.raises(PlcError, match="--micro-batch 16 does not divide the 8 sequences"):
        TrainOptions(batch_tokens=2048, seq_len=256, micro_batch=16).resolve(**paper)
    with pytest.raises(PlcError, match="does not split over 3 ranks"):
        small.resolve(**paper, world_size=3)


def test_resolution_fills_every_number_from_the_preset():
    opts = TrainOptions(preset="paper").resolve(d_model=320)
    assert (opts.steps, opts.batch_size, opts.warmup_steps) == (9537, 256, 477)
    assert opts.lr == pytest.approx(3e-3) and opts.weight_decay == 0.1
    assert opts.betas == (0.9, 0.95) and opts.total_tokens == 9537 * 524_288
    assert TrainOptions(tokens=1000).resolve(preset="tiny", d_model=64).steps == 4  # rounded up
    # A checkpoint's preset is the default; the options' own preset wins over it.
    assert TrainOptions().resolve(preset="cpu", d_model=64).seq_len == 64
    assert TrainOptions(preset="tiny").resolve(preset="cpu", d_model=64).seq_len == 32


def test_probe_cadence_keeps_its_fraction_of_the_steps():
    paper = get_preset("paper")
    assert paper.probe_eval_every_for(paper.probe_steps) == 95
    assert paper.probe_eval_every_for(1000) == 10 and paper.probe_eval_every_for(20) == 1
    assert get_preset("cpu").probe_eval_every_for(32) == 4


def test_paper_preset_train_task_with_a_small_batch(tmp_path, data):
    """`plc train-task … --batch-tokens 2048 --seq-len 256` on the paper preset's other defaults."""
    init_checkpoint(tmp_path / "c0.pt", size="nano", tokenizer="byte", context=256)
    res = train_task(
        tmp_path / "c0.pt",
        "en",
        data=data,
        metrics=None,
        batch_tokens=2048,
        seq_len=256,
        steps=1,
        device="cpu",
    )
    assert (res.steps, res.batch_tokens, res.options["micro_batch"]) == (1, 2048, 8)
    assert res.options["preset"] == "paper"


def test_a_run_names_its_preset_once(tmp_path, data):
    init_checkpoint(tmp_path / "c0.pt", size="nano", preset="tiny")  # context 32, byte tokenizer
    res = probe(tmp_path / "c0.pt", data=data, metrics=tmp_path / "m", device="cpu")
    assert (res.seq_len, res.steps, res.eval_seqs, res.eval_every) == (32, 8, 4, 2)
    nxt = train_task(tmp_path / "c0.pt", "en", data=data, metrics=None, device="cpu")
    assert (nxt.seq_len, nxt.steps) == (32, 8)


def test_diagnose_resolves_its_preset_from_python(tmp_path, data):
    init_checkpoint(tmp_path / "c0.pt", size="micro", tokenizer="byte", context=64)
    res = diagnose(tmp_path / "c0.pt", data=data, metrics=tmp_path / "m", preset="cpu")
    cpu = get_preset("cpu")
    assert (res.dormant_seqs, res.entropy_seqs, res.query_from) == (30, 28, 8)
    assert (res.dormant_seqs, res.entropy_seqs) == (cpu.dormant_seqs, cpu.entropy_seqs)
    with pytest.raises(PlcError, match="pass --dormant-seqs"):  # paper's 256 windows: too many
        diagnose(tmp_path / "c0.pt", data=data, metrics=tmp_path / "p", force=True)


def test_no_import_cycle_among_plc_modules():
    """Every import, at module level or inside a function, counts: the design has none."""
    root = Path(__file__).resolve().parents[1] / "plc"
    modules = {
        ".".join(("plc", *f.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): f
        for f in root.rglob("*.py")
    }
    edges = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            edges[name] |= {t for t in targets if t in modules and t != name}

    def on_a_cycle(start: str) -> bool:
        stack, seen = [start], set()
        while stack:
            for nxt in edges[stack.pop()]:
                if nxt == start:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    cyclic = sorted(m for m in modules if on_a_cycle(m))
    assert not cyclic, cyclic
