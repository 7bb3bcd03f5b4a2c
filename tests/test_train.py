"""The training loop and `plc train-task`: the protocol of §IV-B per call, budgets, resume, DDP, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import assert_bad_input, run_plc, write_nonfinite_checkpoint

import plc.train
from plc.data.sampling import BatchSampler
from plc.data.tokenizers import ByteTokenizer
from plc.data.tokenstore import open_lang, write_store
from plc.errors import PlcError
from plc.init import init_checkpoint
from plc.model import GPT, GPTConfig
from plc.options import TrainOptions
from plc.presets import PRESETS, get_preset
from plc.schedule import lr_at
from plc.store import load_checkpoint, save_checkpoint
from plc.task import next_checkpoint_path, state_path_for, train_task
from plc.train import TrainingDiverged, train_loop

CORPUS = Path(__file__).resolve().parents[1] / "plc" / "data" / "corpus"
BYTE = ByteTokenizer().identity()


pytestmark = pytest.mark.usefixtures("one_thread")


def _store(data: Path, lang: str, tokens: np.ndarray, tokenizer=BYTE) -> None:
    n = int(len(tokens) * 0.9)
    write_store(data / f"{lang}.zarr", tokens[:n], tokens[n:], lang=lang, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Byte-level stores of three languages of the embedded corpus."""
    d = tmp_path_factory.mktemp("data")
    for lang in ("en", "zh", "fr"):
        raw = (CORPUS / f"{lang}.txt").read_bytes()
        _store(d, lang, np.frombuffer(raw, dtype=np.uint8).astype(np.uint32))
    return d


@pytest.fixture
def c0(tmp_path) -> Path:
    path = tmp_path / "c0.pt"
    init_checkpoint(path, size="nano", tokenizer="byte", context=32, seed=1)
    return path


TINY = dict(preset="tiny", metrics=None, device="cpu")


def test_presets_keep_the_protocol_shape():
    paper = get_preset("paper")
    assert (paper.steps, paper.batch_size, paper.seq_len) == (9537, 256, 2048)
    assert paper.warmup_steps == 477 and paper.probe_eval_every == 95
    assert (paper.probe_eval_seqs, paper.dormant_seqs, paper.entropy_seqs) == (1280, 256, 512)
    for p in PRESETS.values():
        assert p.warmup == 0.05 and p.batch_tokens % p.seq_len == 0 and p.seq_len <= p.context
    with pytest.raises(PlcError, match="unknown preset"):
        get_preset("huge")


def test_lr_warms_up_linearly_then_stays_constant():
    assert [lr_at(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_at(0, 3e-3, 0) == 3e-3


def test_output_name_is_the_input_number_plus_one(tmp_path):
    assert next_checkpoint_path(tmp_path / "c47.pt") == tmp_path / "c48.pt"
    assert next_checkpoint_path("runs/5M/ckpt-0099.pt") == Path("runs/5M/ckpt-0100.pt")
    with pytest.raises(PlcError, match="--out"):
        next_checkpoint_path("model.pt")


def test_a_chain_of_tasks_records_history_and_metrics(tmp_path, data, c0):
    for lang in ("en", "zh", "fr"):
        ckpt = tmp_path / f"c{['en', 'zh', 'fr'].index(lang)}.pt"
        res = train_task(ckpt, lang, data=data, preset="tiny", metrics=tmp_path / "m")
    c3 = load_checkpoint(tmp_path / "c3.pt")
    assert res.out == str(tmp_path / "c3.pt") and c3.task_index == 3
    assert [h["lang"] for h in c3.meta["history"]] == ["en", "zh", "fr"]
    assert c3.meta["tokens_seen"] == 3 * 2048
    h = c3.meta["history"][-1]
    assert (h["tokens"], h["steps"], h["batch_tokens"], h["seq_len"], h["seed"]) == (
        2048,
        8,
        256,
        32,
        1,
    )
    assert h["lr"] == pytest.approx(3e-3 * (320 / 64) ** 0.79248, rel=1e-4)
    df = pl.read_parquet(tmp_path / "m" / "train-nano-s1-t3-fr.parquet")
    assert df["step"].to_list() == list(range(8))
    assert df["tokens"].to_list() == [256 * (s + 1) for s in range(8)]
    assert set(df["kind"]) == {"train"} and set(df["lang"]) == {"fr"}
    assert set(df["cycle"]) == {1} and set(df["task_index"]) == {3}
    assert set(df["n_params"]) == {50_112} and set(df["size"]) == {"nano"}
    assert (df["grad_norm"] > 0).all() and (df["tokens_per_s"] > 0).all()
    # The corpus is learnable: loss falls from about ln(320) within a task.
    first = pl.read_parquet(tmp_path / "m" / "train-nano-s1-t1-en.parquet")["loss"]
    assert first[0] > 5.0 and first[-1] < first[0] - 1.0


def test_warm_up_restarts_every_task(tmp_path, data, c0):
    rates = []
    for i, lang in enumerate(("en", "zh")):
        train_task(
            tmp_path / f"c{i}.pt",
            lang,
            data=data,
            preset="tiny",
            warmup=0.25,
            lr=0.01,
            metrics=tmp_path / "m",
        )
        rates.append(pl.read_parquet(next((tmp_path / "m").glob(f"*t{i + 1}-{lang}*")))["lr"])
    for lr in rates:  # 8 steps, warm-up 2 steps: lr/2, lr, then constant
        assert lr.to_list() == pytest.approx([0.005, 0.01] + [0.01] * 6)


def test_the_optimizer_is_fresh_at_every_task(tmp_path, data, c0):
    """A fresh AdamW's first update is lr·g/|g| = ±lr per element (plus weight decay).

    After a previous task, carried moments would make the first update of the next task
    anything but ±lr; a fresh optimizer gives exactly that.
    """
    train_task(c0, "en", data=data, **TINY)
    lr = 1e-3
    train_task(tmp_path / "c1.pt", "zh", data=data, steps=1, warmup=0.0, lr=lr, **TINY)
    before = load_checkpoint(tmp_path / "c1.pt").model
    after = load_checkpoint(tmp_path / "c2.pt").model
    updates = []
    for name, w in before.items():
        decay = 0.1 if w.dim() >= 2 else 0.0
        updates.append((after[name] - w * (1 - lr * decay)).flatten())
    update = torch.cat(updates).abs()
    moved = update > 0.1 * lr  # not moved: zero gradients (unused positions, …)
    assert moved.float().mean() > 0.8
    # ±lr except where |g| is within a few orders of eps = 1e-8 (e.g. the key biases, g ≈ 0).
    assert ((update[moved] / lr - 1).abs() < 1e-2).float().mean() > 0.97


def test_each_task_instance_is_a_fresh_sample_and_reproducible(tmp_path, data, c0):
    kw = dict(data=data, steps=1, **TINY)
    a = train_task(c0, "en", out=tmp_path / "a.pt", **kw)
    b = train_task(c0, "en", out=tmp_path / "b.pt", **kw)
    assert a.final_loss == b.final_loss  # same input, same task index: the same batch
    ckpt = load_checkpoint(c0)
    ckpt.meta["task_index"] = 8  # the same weights, at the next appearance of the language
    save_checkpoint(tmp_path / "c8.pt", ckpt)
    c = train_task(tmp_path / "c8.pt", "en", **kw)
    assert c.task_index == 9 and c.final_loss != a.final_loss  # another sample of en
    s1, s9 = (BatchSampler([open_lang(data, "en")], 32, 8, 1, t) for t in (1, 9))
    assert not np.array_equal(s1.batch(0), s9.batch(0))


def test_the_stationary_mixture_has_the_asked_proportions(tmp_path):
    d = tmp_path / "data"
    rng = np.random.default_rng(0)
    ranges = {"en": (0, 100), "zh": (100, 200), "fr": (200, 256)}
    for lang, (lo, hi) in ranges.items():
        _store(d, lang, rng.integers(lo, hi, size=20_000).astype(np.uint32))
    init_checkpoint(tmp_path / "c0.pt", size="nano", tokenizer="byte", context=32)
    res = train_task(
        tmp_path / "c0.pt", mix="en,zh,fr", mix_weights="1,2,1", data=d, steps=2, **TINY
    )
    task = load_checkpoint(res.out).meta["history"][-1]
    assert (task["lang"], task["mix"], task["mix_weights"]) == (
        "mix",
        ["en", "zh", "fr"],
        [0.25, 0.5, 0.25],
    )
    sampler = BatchSampler([open_lang(d, x) for x in ranges], 32, 64, 0, 1, [1, 2, 1])
    first = np.concatenate([sampler.batch(s)[:, 0] for s in range(100)])
    share = [np.mean((first >= lo) & (first < hi)) for lo, hi in ranges.values()]
    assert share == pytest.approx([0.25, 0.5, 0.25], abs=0.02)
    equal = train_task(
        tmp_path / "c0.pt", mix=["en", "zh", "fr"], data=d, steps=1, out=tmp_path / "e.pt", **TINY
    )
    assert load_checkpoint(equal.out).meta["history"][-1]["mix_weights"] == pytest.approx(
        [1 / 3] * 3
    )


def test_micro_batches_accumulate_to_the_same_step(tmp_path, data, c0):
    kw = dict(data=data, steps=3, **TINY)
    whole = train_task(c0, "en", out=tmp_path / "w.pt", **kw)
    parts = train_task(c0, "en", out=tmp_path / "p.pt", micro_batch=2, **kw)
    assert parts.final_loss == pytest.approx(whole.final_loss, abs=1e-5)
    with pytest.raises(PlcError, match="micro-batch 3"):
        train_task(c0, "en", out=tmp_path / "x.pt", micro_batch=3, **kw)


def _corrupting(model, at_step):
    def on_step(row, steps):
        if row["step"] == at_step:
            with torch.no_grad():
                model.transformer.ln_f.weight.fill_(float("nan"))

    return on_step


def test_nan_stops_before_the_bad_update_and_keeps_resumable_state(tmp_path, data):
    store = open_lang(data, "en")
    model = GPT(GPTConfig(1, 64, 1, 320, 32))
    sampler = BatchSampler([store], 32, 4, 0, 1)
    evals = []
    state = tmp_path / "s.resume"
    opts = TrainOptions(steps=10, lr=1e-3, batch_tokens=128, seq_len=32, save_every=2).resolve()
    with pytest.raises(TrainingDiverged, match="diverged at step 5"):
        train_loop(
            model,
            sampler,
            opts,
            state_path=state,
            signature={"a": 1},
            on_step=_corrupting(model, 4),
            eval_fn=lambda s: evals.append(s) or 1.0,
            eval_every=3,
        )
    saved = torch.load(state, weights_only=True)
    assert saved["step"] == 4 and [r["step"] for r in saved["rows"]] == [0, 1, 2, 3]
    assert [e["step"] for e in saved["evals"]] == [0, 3]
    # Resuming continues at step 4 with the saved (finite) weights and evaluations.
    fresh = GPT(GPTConfig(1, 64, 1, 320, 32))
    res = train_loop(
        fresh,
        sampler,
        opts,
        state_path=state,
        signature={"a": 1},
        eval_fn=lambda s: float(s),
        eval_every=3,
    )
    assert res.resumed_from == 4 and len(res.rows) == 10
    assert [e["step"] for e in res.evals] == [0, 3, 6, 9, 10]
    with pytest.raises(PlcError, match="different command"):
        train_loop(fresh, sampler, opts, state_path=state, signature={"a": 2})


def test_a_checkpoint_with_nan_weights_is_refused_as_input(tmp_path, data, c0):
    write_nonfinite_checkpoint(c0, tmp_path / "c5.pt")
    proc = run_plc(
        "train-task",
        "--lang",
        "en",
        "--ckpt",
        tmp_path / "c5.pt",
        "--data",
        data,
        "--preset",
        "tiny",
        "--metrics",
        tmp_path / "m",
    )
    assert_bad_input(proc, "c5.pt has non-finite weights", "transformer.ln_f.bias")
    assert not (tmp_path / "c6.pt").exists() and not list((tmp_path).glob("m/*"))


def test_bad_inputs_are_refused_before_training(tmp_path, data, c0):
    kw = dict(data=data, **TINY)
    cases = [
        (dict(ckpt=tmp_path / "none.pt", lang="en"), "no checkpoint"),
        (dict(ckpt="5M", lang="en"), "plc init --size 5M"),
        (dict(ckpt=c0, lang="vi"), "'vi' is not in"),
        (
            dict(ckpt=c0, lang="en", seq_len=64, batch_tokens=256),
            "exceeds the checkpoint's context 32",
        ),
        (dict(ckpt=c0, lang="en", steps=0), "--steps must be positive"),
        (dict(ckpt=c0, lang="en", tokens=-5), "--tokens must be positive"),
        (dict(ckpt=c0, lang="en", tokens=5, steps=5), "not both"),
        (dict(ckpt=c0, lang="en", batch_tokens=100), "not a multiple of --seq-len"),
        (dict(ckpt=c0, lang="en", lr="fast"), "--lr must be"),
        (dict(ckpt=c0, lang="en", lr="-1"), "--lr must be positive"),
        (dict(ckpt=c0), "--lang"),
        (dict(ckpt=c0, lang="en", mix="en,zh"), "--lang"),
        (dict(ckpt=c0, mix="en,zh", mix_weights="1"), "2 non-negative numbers"),
        (dict(ckpt=c0, mix="en,en"), "distinct"),
        (dict(ckpt=c0, lang="en", out=c0), "is the input"),
    ]
    for args, fragment in cases:
        with pytest.raises(PlcError, match=fragment):
            train_task(**{**kw, **args})
    other = tmp_path / "other"
    _store(
        other,
        "en",
        np.arange(5000, dtype=np.uint32) % 250,
        tokenizer={"name": "bpe", "vocab_size": 300, "eos_id": 0, "fingerprint": "f00"},
    )
    with pytest.raises(PlcError, match="tokenized with 'bpe'"):
        train_task(c0, "en", **{**kw, "data": other})
    with pytest.raises(PlcError, match="no token store|is not in"):
        train_task(c0, "en", **{**kw, "data": tmp_path / "missing"})
    assert not (tmp_path / "c1.pt").exists()


def test_cli_short_form_and_refusals(tmp_path, data, c0):
    ok = run_plc(
        "train-task", "--lang", "en", "--ckpt", "c0.pt", "--preset", "tiny", "--json", cwd=tmp_path
    )
    assert ok.returncode == 2 and "not in data" in ok.stderr  # data/ is the default folder
    (tmp_path / "data").symlink_to(data)
    ok = run_plc(
        "train-task", "--lang", "en", "--ckpt", "c0.pt", "--preset", "tiny", "--json", cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stderr
    res = json.loads(ok.stdout)
    assert res["out"] == "c1.pt" and res["task_index"] == 1 and res["steps"] == 8
    assert (tmp_path / "c1.pt").exists() and (
        tmp_path / "metrics" / "train-nano-s1-t1-en.parquet"
    ).exists()
    assert_bad_input(
        run_plc(
            "train-task",
            "--lang",
            "en",
            "--ckpt",
            tmp_path / "c0.pt",
            "--data",
            data,
            "--preset",
            "tiny",
        ),
        "c1.pt exists",
        "--force",
    )
    assert_bad_input(
        run_plc(
            "train-task",
            "--lang",
            "en",
            "--ckpt",
            tmp_path / "c0.pt",
            "--data",
            data,
            "--steps",
            "0",
            "--out",
            tmp_path / "x.pt",
        ),
        "--steps must be positive",
    )


def _train_cmd(tmp: Path, data: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "plc",
        "train-task",
        "--lang",
        "en",
        "--ckpt",
        str(tmp / "c0.pt"),
        "--data",
        str(data),
        "--preset",
        "tiny",
        "--metrics",
        str(tmp / "m"),
        *extra,
    ]


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path, data):
    args = ("--steps", "300", "--batch-tokens", "1024", "--save-every", "10")
    env = {**os.environ, "PLC_THREADS": "1"}
    runs = {}
    for name in ("straight", "killed"):
        d = tmp_path / name
        init_checkpoint(d / "c0.pt", size="nano", tokenizer="byte", context=32, seed=2)
        runs[name] = d
    subprocess.run(
        _train_cmd(runs["straight"], data, *args), env=env, check=True, capture_output=True
    )
    d = runs["killed"]
    state = state_path_for(d / "c1.pt")
    proc = subprocess.Popen(
        _train_cmd(d, data, *args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and state.exists() and not (d / "c1.pt").exists()
    # Another command line writing the same output refuses the state and leaves it alone.
    changed = _train_cmd(d, data, "--steps", "301", "--batch-tokens", "1024")
    changed[changed.index("en")] = "zh"
    assert_bad_input(run_plc(*changed[3:]), "different command", "'en' ≠ 'zh'", "delete")
    rerun = run_plc(*_train_cmd(d, data, *args)[3:], "--json")
    assert rerun.returncode == 0, rerun.stderr
    res = json.loads(rerun.stdout)
    assert 0 < res["resumed_from"] < 300 and res["resumed_from"] % 10 == 0
    assert (d / "c1.pt").read_bytes() == (runs["straight"] / "c1.pt").read_bytes()
    assert not state.exists()
    rows = pl.read_parquet(d / "m" / "train-nano-s2-t1-en.parquet")
    straight = pl.read_parquet(runs["straight"] / "m" / "train-nano-s2-t1-en.parquet")
    assert rows["step"].to_list() == list(range(300))
    assert rows["loss"].to_list() == straight["loss"].to_list()


def test_ddp_gloo_two_processes_match_one(tmp_path, data):
    init_checkpoint(tmp_path / "c0.pt", size="nano", tokenizer="byte", context=32, seed=3)
    args = ("--steps", "4")
    env = {**os.environ, "PLC_THREADS": "1"}
    one = subprocess.run(
        _train_cmd(
            tmp_path,
            data,
            *args,
            "--out",
            str(tmp_path / "one.pt"),
            "--metrics",
            str(tmp_path / "m1"),
        ),
        env=env,
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "--module",
            *_train_cmd(
                tmp_path,
                data,
                *args,
                "--out",
                str(tmp_path / "two.pt"),
                "--metrics",
                str(tmp_path / "m2"),
                "--micro-batch",
                "2",
            )[2:],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = pl.read_parquet(next((tmp_path / "m1").glob("*.parquet")))["loss"].to_numpy()
    b = pl.read_parquet(next((tmp_path / "m2").glob("*.parquet")))["loss"].to_numpy()
    assert len(a) == len(b) == 4
    assert np.abs(a - b).max() < 1e-5
    wa, wb = (load_checkpoint(tmp_path / f"{n}.pt").model for n in ("one", "two"))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


def test_continued_tasks_equal_one_uninterrupted_run(tmp_path, data, c0):
    """--continue: two chained tasks of N steps give the checkpoint of one run of 2N steps."""
    kw = dict(mix="en,zh", data=data, continue_run=True, **TINY)
    # The run's one warm-up: 1 step either way (25 % of 4 steps, 12.5 % of 8).
    train_task(c0, out=tmp_path / "a1.pt", steps=4, warmup=0.25, lr=0.01, **kw)
    half = train_task(
        tmp_path / "a1.pt",
        out=tmp_path / "a2.pt",
        steps=4,
        warmup=0.5,  # ignored: the run warmed up once, at its start
        lr=0.01,
        **{**kw, "metrics": tmp_path / "m"},
    )
    assert pl.read_parquet(half.metrics)["lr"].to_list() == [0.01] * 4
    train_task(c0, out=tmp_path / "b1.pt", steps=8, warmup=0.125, lr=0.01, **kw)
    a2, b1 = load_checkpoint(tmp_path / "a2.pt"), load_checkpoint(tmp_path / "b1.pt")
    assert all(torch.equal(a2.model[k], b1.model[k]) for k in b1.model)
    assert a2.optimizer["schedule_step"] == b1.optimizer["schedule_step"] == 8
    moments = [(s["exp_avg"], s["exp_avg_sq"]) for s in a2.optimizer["optimizer"]["state"].values()]
    others = [(s["exp_avg"], s["exp_avg_sq"]) for s in b1.optimizer["optimizer"]["state"].values()]
    pairs = zip(moments, others, strict=True)
    assert all(torch.equal(x, y) for m, n in pairs for x, y in zip(m, n, strict=True))
    assert a2.meta["history"][-1]["continued"] and a2.meta["history"][-1]["schedule_step"] == 4
    # The protocol's reset stays the default: no optimizer state in its checkpoints, and a
    # continued task cannot start from one.
    reset = train_task(c0, mix="en,zh", data=data, out=tmp_path / "r1.pt", steps=2, **TINY)
    assert load_checkpoint(reset.out).optimizer is None
    with pytest.raises(PlcError, match="carries no optimizer state"):
        train_task(tmp_path / "r1.pt", out=tmp_path / "r2.pt", steps=2, **kw)


def test_validation_during_a_task(tmp_path, data, c0):
    """--val-every K: the task's own language every K steps and after the last, in the rows."""
    res = train_task(c0, "en", data=data, val_every=3, val_seqs=5, **{**TINY, "metrics": tmp_path})
    df = pl.read_parquet(res.metrics)
    measured = df.filter(pl.col("val_loss").is_not_null())
    assert measured["step"].to_list() == [2, 5, 7]  # after 3, 6 and the last of 8 steps
    from plc.evaluate import evaluate

    final = evaluate(res.out, data=data, lang="en", seqs=5, device="cpu")
    assert measured["val_loss"][-1] == pytest.approx(final.loss, rel=1e-6)
    for kwargs, message in ((dict(val_every=0), "--val-every must be positive"),
                            (dict(val_seqs=5), "--val-seqs goes with --val-every")):  # fmt: skip
        with pytest.raises(PlcError, match=message):
            train_task(c0, "en", data=data, out=tmp_path / "x.pt", **kwargs, **TINY)
    with pytest.raises(PlcError, match="validates one language"):
        train_task(c0, mix="en,zh", data=data, out=tmp_path / "x.pt", val_every=2, **TINY)


READ = plc.train._read


def _windowed(monkeypatch, seconds: float) -> list[int]:
    """The host reads after every step (0) or in windows doubling up to the cap (a long time):
    returns the list the number of steps of each read is appended to."""
    monkeypatch.setattr(plc.train, "HOST_SYNC_SECONDS", seconds)
    reads: list[int] = []

    def counted(pending, flags):
        reads.append(len(pending))
        return READ(pending, flags)

    monkeypatch.setattr(plc.train, "_read", counted)
    return reads


def _small_run(data: Path, steps: int, **kw):
    torch.manual_seed(0)
    model = GPT(GPTConfig(2, 64, 1, 320, 32))
    opts = TrainOptions(steps=steps, lr=3e-3, batch_tokens=128, seq_len=32, **kw).resolve()
    return model, BatchSampler([open_lang(data, "en")], 32, 4, 0, 1), opts


def test_reading_losses_in_windows_changes_nothing_the_loop_gives(data, monkeypatch):
    results = {}
    for seconds in (0.0, 1e9):
        reads = _windowed(monkeypatch, seconds)
        model, sampler, opts = _small_run(data, 40, grad_clip=1.0)
        seen = []
        res = train_loop(
            model, sampler, opts, on_step=lambda r, n, seen=seen: seen.append(r["step"])
        )
        results[seconds] = (reads, res.rows, model.state_dict(), seen)
    (every, rows_a, weights_a, seen_a), (windows, rows_b, weights_b, seen_b) = results.values()
    assert every == [1] * 40 and windows == [1, 2, 4, 8, 16, 9]  # the last step is a read
    assert seen_a == seen_b == list(range(40))
    drop = "tokens_per_s"
    assert [{k: v for k, v in r.items() if k != drop} for r in rows_a] == [
        {k: v for k, v in r.items() if k != drop} for r in rows_b
    ]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_a_non_finite_step_inside_a_window_is_named_and_its_update_skipped(
    tmp_path, data, monkeypatch
):
    reads = _windowed(monkeypatch, 1e9)
    model, sampler, opts = _small_run(data, 12, save_every=4)
    forwards = []

    def poison(module, args, out):  # the loss of step 9 (its one forward) is NaN
        forwards.append(1)
        return out * float("nan") if len(forwards) == 10 else out

    model.transformer.ln_f.register_forward_hook(poison)
    evals = []
    with pytest.raises(TrainingDiverged, match="diverged at step 9: loss nan") as caught:
        train_loop(
            model,
            sampler,
            opts,
            state_path=tmp_path / "s.resume",
            signature={},
            eval_fn=lambda s: evals.append(s) or 1.0,
            eval_every=5,
        )
    # Read after steps 0, 2, 3 (save), 7 (save), then 11: the NaN of step 9 named at that read.
    assert reads == [1, 2, 1, 4, 4] and caught.value.step == 9
    assert [r["step"] for r in caught.value.rows] == list(range(10))
    assert [e["step"] for e in caught.value.evals] == [0, 5]  # not the one after step 9
    saved = torch.load(tmp_path / "s.resume", weights_only=True)
    assert saved["step"] == 8 and len(saved["rows"]) == 8
    # The last step NaN: the model is the one before it, the bad update skipped on the device.
    last, sampler, opts = _small_run(data, 10)
    forwards.clear()
    last.transformer.ln_f.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match="diverged at step 9"):
        train_loop(last, sampler, opts)
    nine, sampler, opts = _small_run(data, 9)
    res = train_loop(nine, sampler, replace(opts, steps=9))
    assert res.steps == 9
    assert all(torch.equal(v, last.state_dict()[k]) for k, v in nine.state_dict().items())
