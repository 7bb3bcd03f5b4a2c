"""Continual-pretraining recipes (issue 33): learning-rate schedules against their formulas,
replay's and gradual transitions' batch composition row by row, resume, plans and bad input."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import assert_bad_input, cli

import plc.train
from plc.data.sampling import BatchSampler, Composition
from plc.data.tokenizers import ByteTokenizer
from plc.data.tokenstore import open_lang, write_store
from plc.errors import PlcError
from plc.init import init_checkpoint
from plc.model import GPT, GPTConfig
from plc.options import TrainOptions, parse_mitigation
from plc.plan import build_plan, plan_json, render
from plc.probe import probe
from plc.schedule import learning_rate, lr_at
from plc.store import load_checkpoint
from plc.task import train_task
from plc.train import Interrupts, TrainingInterrupted, train_loop

pytestmark = pytest.mark.usefixtures("one_thread")

BYTE = ByteTokenizer().identity()
# Three languages whose tokens cannot be mistaken for each other: a row's tokens say its store.
RANGES = {"aa": (0, 80), "bb": (80, 160), "cc": (160, 240)}
TINY = dict(preset="tiny", device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for lang, (lo, hi) in RANGES.items():
        tokens = rng.integers(lo, hi, size=30_000).astype(np.uint32)
        write_store(d / f"{lang}.zarr", tokens[:27_000], tokens[27_000:], lang=lang, tokenizer=BYTE)
    return d


def _origin(rows: np.ndarray) -> np.ndarray:
    """The store each row was read from, by its token range (−1 if it mixes ranges)."""
    out = np.full(len(rows), -1)
    for i, (lo, hi) in enumerate(RANGES.values()):
        out[((rows >= lo) & (rows < hi)).all(axis=1)] = i
    return out


def _rates(steps: int, warmup: int, run_step: int = 0, **fields) -> list[float]:
    opts = TrainOptions(lr=1.0, steps=steps, **fields)
    rate = learning_rate(opts, warmup=warmup, run_step=run_step)
    return [rate(s) for s in range(steps)]


# ---------------------------------------------------------------------------------- schedules


def test_constant_is_the_papers_warm_up_then_the_peak():
    assert _rates(6, 4) == [lr_at(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    opts = TrainOptions(lr=2.0, steps=6)
    continued = learning_rate(opts, warmup=4, first=2)  # a continued run's step 2 is its third
    assert [continued(s) for s in range(3)] == [1.5, 2.0, 2.0]


def test_cosine_rewarms_to_the_peak_and_redecays_to_the_floor_within_the_task():
    r = _rates(21, 2, schedule="cosine")  # floor 0.1 (Ibrahim et al.)
    assert r[:3] == [0.5, 1.0, 1.0]  # warm-up, then the peak at the first step after it
    assert r[11] == pytest.approx(0.1 + 0.9 * 0.5)  # p = 1/2: halfway between peak and floor
    assert r[-1] == pytest.approx(0.1) and min(r[2:]) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(r[2:], r[3:], strict=False))  # decreasing after the warm-up
    # The next task starts over: the same curve (step 0 at lr/W again).
    assert _rates(21, 2, schedule="cosine", lr_floor=0.0)[-1] == pytest.approx(0.0)


def test_wsd_is_stable_then_decays_linearly_over_the_last_fraction():
    r = _rates(20, 2, schedule="wsd", lr_decay=0.25, lr_floor=0.2)
    assert r[:2] == [0.5, 1.0] and r[2:15] == [1.0] * 13  # D = 5 decay steps: 15 … 19
    assert r[15] == pytest.approx(0.2 + 0.8 * 4 / 5) and r[19] == pytest.approx(0.2)
    assert np.diff(r[15:]) == pytest.approx([-0.8 / 5] * 4)
    assert _rates(20, 2, schedule="wsd")[-3:] == pytest.approx([1.0, 0.5, 0.0])  # 10 % → 0
    # A decay over the whole task still warms up first: the lower of the two.
    whole = _rates(20, 2, schedule="wsd", lr_decay=1.0)
    assert whole[0] == 0.5 and whole[1] == pytest.approx(18 / 20) and whole[-1] == 0.0


def test_rsqrt_warms_up_once_per_run_and_cools_down_only_when_asked():
    first = _rates(10, 4, schedule="rsqrt")
    assert first[:4] == [0.25, 0.5, 0.75, 1.0]
    assert first[4] == pytest.approx(math.sqrt(4 / 5))
    assert first[9] == pytest.approx(math.sqrt(4 / 10))
    later = _rates(10, 4, run_step=100, schedule="rsqrt")  # no re-warm at a later task
    assert later[0] == pytest.approx(math.sqrt(4 / 101))
    assert later[9] == pytest.approx(math.sqrt(4 / 110))
    kept = _rates(10, 4, run_step=100, schedule="rsqrt", lr_decay=0.5)  # a kept checkpoint
    assert kept[:5] == pytest.approx(later[:5])  # 1/√t until the cool-down's 5 steps
    assert kept[5] == pytest.approx(math.sqrt(4 / 106) * 4 / 5) and kept[9] == 0.0


def test_a_schedules_defaults_are_in_its_label_and_its_flags_are_checked():
    assert TrainOptions(schedule="cosine").label == "cosine0.1"
    assert TrainOptions(**parse_mitigation("cosine")).label == "cosine0.1"  # the same arm
    assert TrainOptions(schedule="wsd").lr_decay == 0.1 and TrainOptions().lr_floor is None
    assert TrainOptions(schedule="rsqrt", lr_decay=0.2).label == "rsqrt0.2"
    assert TrainOptions(schedule="wsd", lr_floor=0.05).label == "wsd0.1,f0.05"
    cases = [
        (dict(schedule="linear"), "--schedule must be one of constant, cosine, wsd, rsqrt"),
        (dict(schedule="cosine", lr_floor=1.5), "1.5 is above the peak"),
        (dict(schedule="cosine", lr_floor=-0.1), "below 0"),
        (dict(lr_floor=0.1), "--lr-floor goes with --schedule"),
        (dict(schedule="wsd", lr_decay=0.0), r"in \(0, 1\], got 0"),
        (dict(schedule="wsd", lr_decay=1.5), r"in \(0, 1\], got 1.5"),
        (dict(schedule="cosine", lr_decay=0.2), "--lr-decay goes with --schedule wsd or rsqrt"),
    ]
    for kwargs, message in cases:
        with pytest.raises(PlcError, match=message):
            TrainOptions(**kwargs)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"schedule": "cosine"},
        {"schedule": "wsd", "lr_decay": 0.5},
        {"schedule": "rsqrt", "lr_decay": 0.25},
    ],
)
def test_each_schedule_resumes_bit_exactly(tmp_path, data, fields, monkeypatch):
    monkeypatch.setattr(plc.train, "HOST_SYNC_SECONDS", 0.0)  # the host reads after every step
    sampler = BatchSampler([open_lang(data, "aa")], 16, 4, 0, 1)
    opts = TrainOptions(steps=8, lr=3e-3, batch_tokens=64, seq_len=16, warmup=0.25, **fields)
    opts = opts.resolve(preset="tiny")

    def model() -> GPT:
        torch.manual_seed(0)
        return GPT(GPTConfig(1, 64, 1, 256, 16))

    whole = model()
    ref = train_loop(whole, sampler, opts, run_step=40)
    stop = Interrupts()

    def on_step(row, total):
        if row["step"] == 4:
            stop.received = signal.SIGTERM

    cut, state = model(), tmp_path / "s.resume"
    with pytest.raises(TrainingInterrupted):
        train_loop(
            cut, sampler, opts, state_path=state, interrupts=stop, on_step=on_step, run_step=40
        )
    resumed = train_loop(cut, sampler, opts, state_path=state, run_step=40)
    assert resumed.resumed_from == 6  # the signal is seen by the next step, which saves
    assert [r["lr"] for r in resumed.rows] == [r["lr"] for r in ref.rows]
    for (name, a), b in zip(whole.state_dict().items(), cut.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_rsqrt_tasks_continue_one_schedule_over_the_run(tmp_path, data):
    init_checkpoint(tmp_path / "c0.pt", size="nano", tokenizer="byte", context=32, seed=1)
    kw = dict(data=data, metrics=tmp_path / "m", schedule="rsqrt", **TINY)
    a = train_task(tmp_path / "c0.pt", "aa", **kw)
    b = train_task(a.out, "bb", **kw)
    rows = pl.read_parquet(b.metrics)
    w, before = a.warmup_steps, a.steps  # 1 warm-up step of 8
    assert rows["lr"][0] == pytest.approx(a.lr * math.sqrt(w / (before + 1)))  # no re-warm
    assert load_checkpoint(b.out).method == "rsqrt" == rows["method"][0]
    with pytest.raises(PlcError, match="--continue runs one schedule over the run"):
        train_task(tmp_path / "c0.pt", "aa", out=tmp_path / "x.pt", continue_run=True,
                   **{**kw, "schedule": "cosine"})  # fmt: skip


# ------------------------------------------------------------------------- batch composition


def test_replay_takes_its_exact_share_of_every_batch_uniformly_from_earlier_stores(data):
    stores = [open_lang(data, x) for x in RANGES]  # aa is the task's, bb and cc replayed
    sampler = BatchSampler(stores, 16, 40, 3, 5, composition=Composition(replay=0.25))
    counts = np.zeros(3)
    for step in range(50):
        rows, source = sampler.batch(step), sampler.sources(step)
        assert np.array_equal(_origin(rows), source)  # provenance, row by row
        assert (source > 0).sum() == 10  # round(0.25 · 40), every batch
        counts += np.bincount(source, minlength=3)
        # Each rank reads its rows of the same global batch.
        assert np.array_equal(sampler.batch(step, 1, 2), rows[1::2])
    assert counts[1] / counts[1:].sum() == pytest.approx(0.5, abs=0.05)  # uniform over bb, cc
    assert not np.array_equal(sampler.sources(0), sampler.sources(1))  # rows drawn per step


def test_a_transition_moves_the_batches_from_the_previous_language_over_k_steps(data):
    stores = [open_lang(data, "bb"), open_lang(data, "aa")]  # bb now, aa the previous task's
    mix = Composition(transition=8, first=100)  # a continued run's step 100 is the task's 0
    sampler = BatchSampler(stores, 16, 18, 0, 1, composition=mix)
    previous = []
    for s in range(12):
        rows, source = sampler.batch(100 + s), sampler.sources(100 + s)
        assert np.array_equal(_origin(rows), np.where(source == 1, 0, 1))
        previous.append(int((source == 1).sum()))
    expected = [round(18 * (1 - (s + 1) / 9)) for s in range(8)] + [0] * 4
    assert previous == expected and previous[0] == 16 and previous[7] == 2


def test_replay_in_a_run_records_its_languages_and_its_arm(tmp_path, data):
    init_checkpoint(tmp_path / "c0.pt", size="nano", tokenizer="byte", context=32, seed=1)
    kw = dict(data=data, metrics=tmp_path / "m", steps=2, replay=0.5, **TINY)
    one = train_task(tmp_path / "c0.pt", "aa", **kw)
    assert one.notes == ["--replay 0.5: no earlier task to replay; trained on aa alone"]
    assert load_checkpoint(one.out).meta["history"][-1]["replay_langs"] == []
    two = train_task(one.out, "bb", **kw)
    three = train_task(two.out, "cc", **kw)
    four = train_task(three.out, "aa", **kw, replay_last=1)  # the last earlier language only
    history = load_checkpoint(four.out).meta["history"]
    assert [h["replay_langs"] for h in history] == [[], ["aa"], ["aa", "bb"], ["cc"]]
    assert three.langs == ["cc", "aa", "bb"] and not three.notes
    assert load_checkpoint(three.out).method == "replay0.5"
    assert set(pl.read_parquet(three.metrics)["method"]) == {"replay0.5"}
    assert load_checkpoint(four.out).method == "replay0.5@1"


def test_no_replay_is_the_protocol_byte_for_byte(tmp_path, data):
    init_checkpoint(tmp_path / "c0.pt", size="nano", tokenizer="byte", context=32, seed=1)
    kw = dict(data=data, metrics=None, steps=3, **TINY)
    a = train_task(tmp_path / "c0.pt", "aa", out=tmp_path / "a1.pt", **kw)
    plain = train_task(a.out, "bb", out=tmp_path / "p.pt", **kw)
    zero = train_task(a.out, "bb", out=tmp_path / "z.pt", replay=0.0, transition=0, **kw)
    assert zero.options == plain.options and zero.final_loss == plain.final_loss
    for k, v in load_checkpoint(plain.out).model.items():
        assert torch.equal(v, load_checkpoint(zero.out).model[k]), k


def test_transition_in_a_run_and_its_refusals(tmp_path, data):
    init_checkpoint(tmp_path / "c0.pt", size="nano", tokenizer="byte", context=32, seed=1)
    kw = dict(data=data, metrics=tmp_path / "m", transition=4, **TINY)
    one = train_task(tmp_path / "c0.pt", "aa", **kw)
    assert one.notes == ["--transition 4: no earlier task; switched to aa at once"]
    two = train_task(one.out, "bb", **kw)
    assert two.langs == ["bb", "aa"] and load_checkpoint(two.out).method == "transition4"
    assert load_checkpoint(two.out).meta["history"][-1]["transition_from"] == "aa"
    with pytest.raises(PlcError, match="--transition 9 is longer than the task's 8 steps"):
        train_task(one.out, "bb", **{**kw, "transition": 9})
    with pytest.raises(PlcError, match="a mixture already holds every language"):
        train_task(one.out, mix="aa,bb", **{**kw, "out": tmp_path / "x.pt"})
    with pytest.raises(PlcError, match="--replay and --transition do not combine"):
        TrainOptions(replay=0.1, transition=4)
    with pytest.raises(PlcError, match="--replay is train-task's"):
        probe(one.out, lang="cc", data=data, metrics=tmp_path / "m", replay=0.1, **TINY)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--replay", "1"], "--replay r is a fraction of the batch in [0, 1), got 1"),
        (["--replay", "-0.1"], "--replay r is a fraction"),
        (["--replay-last", "2"], "--replay-last goes with --replay"),
        (["--transition", "9"], "--transition 9 is longer than the task's 8 steps"),
        (["--transition", "-1"], "--transition K must be 0 or more"),
        (["--schedule", "cosine", "--lr-floor", "2"], "2 is above the peak"),
        (["--schedule", "wsd", "--lr-decay", "0"], "--lr-decay is a fraction"),
    ],
)
def test_bad_recipe_flags_are_one_line_exit_2(tmp_path, data, monkeypatch, capsys, args, fragment):
    init_checkpoint(tmp_path / "c0.pt", size="nano", tokenizer="byte", context=32, seed=1)
    proc = cli(
        monkeypatch,
        capsys,
        *["train-task", "--lang", "aa", "--ckpt", tmp_path / "c0.pt", "--data", data],
        *["--preset", "tiny", "--metrics", tmp_path / "m", *args],
    )
    assert_bad_input(proc, fragment)
    assert not (tmp_path / "c1.pt").exists()


def test_the_first_task_says_it_has_nothing_to_replay(tmp_path, data, monkeypatch, capsys):
    init_checkpoint(tmp_path / "c0.pt", size="nano", tokenizer="byte", context=32, seed=1)
    proc = cli(
        monkeypatch,
        capsys,
        *["train-task", "--lang", "aa", "--ckpt", tmp_path / "c0.pt", "--data", data],
        *["--preset", "tiny", "--steps", "2", "--metrics", tmp_path / "m", "--replay", "0.1"],
    )
    assert proc.returncode == 0, proc.stderr
    assert "note: --replay 0.1: no earlier task to replay; trained on aa alone" in proc.stderr
    assert (tmp_path / "c1.pt").exists()


# --------------------------------------------------------------------------------------- plans


def _train_jobs(plan, run_id):
    return [j for j in plan.jobs if j.stage == "train" and j.run_id == run_id]


def test_plans_carry_replay_and_transitions_with_the_stores_they_read():
    plan = build_plan(
        "control",
        sizes=["nano"],
        tasks=4,
        shared=0.3,
        mitigations=["none", "replay:0.05", "cosine", "swr", "embreset"],
    )
    assert [r.run_id for r in plan.runs] == [
        "nano-s0", "nano-s0-replay0.05", "nano-s0-cosine0.1", "nano-s0-swr0.0005",
        "nano-s0-embreset1000",
    ]  # fmt: skip
    replay = _train_jobs(plan, "nano-s0-replay0.05")
    assert replay[3].argv[replay[3].argv.index("--replay") + 1] == "0.05"
    stores = [x.split("/")[-2] for x in replay[3].inputs[1:]]
    assert stores == ["g04.zarr", "g03.zarr", "g02.zarr", "g01.zarr"]  # its own, then earlier
    cosine = _train_jobs(plan, "nano-s0-cosine0.1")[0].argv
    assert cosine[cosine.index("--schedule") + 1] == "cosine" and "--lr-floor" in cosine
    assert len(_train_jobs(plan, "nano-s0")[3].inputs) == 2  # the baseline reads its own store
    gradual = build_plan("continual", sizes=["nano"], preset="tiny", cycles=1, transition=3)
    jobs = _train_jobs(gradual, "nano-s0-transition3")
    assert [j.train["transition"] for j in jobs] == [3] * 8
    assert [x.split("/")[-2] for x in jobs[2].inputs[1:]] == ["fr.zarr", "zh.zarr"]
    with pytest.raises(PlcError, match="not for the mixture"):
        build_plan("stationary", sizes=["nano"], preset="tiny", mitigations=["replay:0.1"])
    with pytest.raises(PlcError, match="does not combine"):
        build_plan("control", sizes=["nano"], tasks=2, transition=4, mitigations=["replay:0.1"])


@pytest.mark.parametrize("kind", ["continual", "control"])
def test_a_transition_of_zero_steps_is_todays_plan(kind):
    """--transition 0 is the protocol's abrupt switch: the same jobs, run ids, Makefile and
    plan.json as a plan without the flag."""
    kw = (
        dict(sizes=["nano"], preset="tiny", cycles=1)
        if kind == "continual"
        else dict(sizes=["nano"], tasks=3, shared=0.3)
    )
    today, zero = build_plan(kind, **kw), build_plan(kind, transition=0, **kw)
    assert plan_json(zero) == plan_json(today)
    assert render(zero) == render(today)
    assert all("--transition" not in j.argv for j in zero.jobs)
