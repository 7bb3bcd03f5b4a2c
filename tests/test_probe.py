"""plc probe: the AUC, the eval cadence, the untouched input, --from-scratch, --keep, resume, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import FOREIGN_TOKENIZER, assert_bad_input, run_plc

from plc.data.tokenizers import ByteTokenizer
from plc.data.tokenstore import write_store
from plc.errors import PlcError
from plc.evaluate import evaluate
from plc.init import init_checkpoint
from plc.probe import auc, probe
from plc.store import load_checkpoint, save_checkpoint

CORPUS = Path(__file__).resolve().parents[1] / "plc" / "data" / "corpus"
CTX = 32
FAST = dict(preset="tiny", device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    tokens = np.frombuffer((CORPUS / "vi.txt").read_bytes(), dtype=np.uint8).astype(np.uint32)
    n = int(len(tokens) * 0.9)
    write_store(
        d / "vi.zarr", tokens[:n], tokens[n:], lang="vi", tokenizer=ByteTokenizer().identity()
    )
    return d


@pytest.fixture
def trained(tmp_path) -> Path:
    """A checkpoint that looks three tasks in (perturbed weights, history ending in es)."""
    path = tmp_path / "c3.pt"
    init_checkpoint(path, size="nano", tokenizer="byte", context=CTX, seed=5)
    ckpt = load_checkpoint(path)
    gen = torch.Generator().manual_seed(0)
    ckpt.model = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in ckpt.model.items()}
    ckpt.meta.update(
        task_index=3,
        tokens_seen=3 * 2048,
        history=[
            {"lang": lang, "tokens": 2048, "steps": 8, "lr": 1e-3} for lang in ("en", "zh", "es")
        ],
    )
    save_checkpoint(path, ckpt, force=True)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_auc_of_known_curves():
    assert auc([0, 1, 2], [3.0, 1.0, 1.0]) == pytest.approx(1.5)  # (2 + 1) / 2 steps
    # A straight line: the area is exact, its mean height the midpoint.
    steps = [0, 2, 4, 6, 8, 9]  # a last step off the cadence, as when steps % eval_every ≠ 0
    assert auc(steps, [5 - 0.25 * s for s in steps]) == pytest.approx(5 - 0.25 * 4.5)
    assert auc([0, 10], [2.0, 2.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        auc([0], [1.0])


def test_probe_curve_cadence_auc_and_untouched_input(tmp_path, data, trained):
    before = _sha(trained)
    res = probe(
        trained,
        data=data,
        metrics=tmp_path / "m",
        steps=5,
        eval_every=2,
        keep=tmp_path / "kept.pt",
        **FAST,
    )
    assert _sha(trained) == before  # the input is only read

    assert [c["step"] for c in res.curve] == [0, 2, 4, 5]  # step 0, every k steps, the last step
    start = evaluate(trained, data=data, lang="vi", seqs=4, device="cpu")  # tiny preset: 4 windows
    assert res.curve[0]["val_loss"] == pytest.approx(start.loss, rel=1e-6)
    assert res.final_val_loss < res.curve[0]["val_loss"]  # it learned something
    losses = [c["val_loss"] for c in res.curve]
    assert res.auc == pytest.approx(auc([0, 2, 4, 5], losses))
    assert (res.warmup_steps, res.steps, res.task_index) == (1, 5, 3)

    df = pl.read_parquet(res.metrics_path)
    assert Path(res.metrics_path).name == "probe-nano-s5-t3-es-vi.parquet"
    assert df.columns == [
        "kind", "run_id", "size", "n_params", "task_index", "cycle", "lang",
        "probe_lang", "step", "val_loss", "auc", "tokens_seen", "from_scratch",
        "probe_seed", "method", "eval_seed", "window_starts", "entropy_rate",
    ]  # fmt: skip
    row = df.row(0, named=True)
    assert (row["kind"], row["run_id"], row["task_index"], row["cycle"], row["lang"]) == (
        "probe",
        "nano-s5",
        3,
        1,
        "es",
    )
    assert (row["probe_lang"], row["tokens_seen"], row["from_scratch"]) == ("vi", 3 * 2048, False)
    assert df["step"].to_list() == [0, 2, 4, 5] and df["val_loss"].to_list() == pytest.approx(
        losses
    )
    assert set(df["auc"]) == {res.auc}

    kept = load_checkpoint(tmp_path / "kept.pt")
    assert kept.task_index == 4 and kept.meta["history"][-1]["probe"] is True
    after = evaluate(tmp_path / "kept.pt", data=data, lang="vi", seqs=4, device="cpu")
    assert after.loss == pytest.approx(res.final_val_loss, rel=1e-6)


def test_from_scratch_probes_a_fresh_init_of_the_same_config_and_seed(tmp_path, data, trained):
    scratch = probe(trained, data=data, metrics=tmp_path / "m", steps=4, from_scratch=True, **FAST)
    # The same seed's fresh checkpoint, probed normally, is the same model on the same batches.
    init_checkpoint(tmp_path / "c0.pt", size="nano", tokenizer="byte", context=CTX, seed=5)
    fresh = probe(tmp_path / "c0.pt", data=data, metrics=tmp_path / "m", steps=4, **FAST)
    assert scratch.curve == fresh.curve and scratch.auc == fresh.auc
    assert Path(scratch.metrics_path).name == "probe-nano-s5-t0-init-vi-scratch.parquet"
    assert Path(fresh.metrics_path).name == "probe-nano-s5-t0-init-vi.parquet"
    df = pl.read_parquet(scratch.metrics_path)
    assert set(df["from_scratch"]) == {True} and set(df["task_index"]) == {0}
    assert set(df["lang"]) == {""} and set(df["tokens_seen"]) == {0}
    probed = probe(trained, data=data, metrics=tmp_path / "m", steps=4, **FAST)
    assert probed.curve[0]["val_loss"] != pytest.approx(scratch.curve[0]["val_loss"])


def test_an_interrupted_probe_resumes_to_the_same_curve(tmp_path, data, trained):
    whole = probe(trained, data=data, metrics=tmp_path / "a", steps=6, **FAST)

    class Stop(Exception):
        pass

    def interrupt(row, total):
        if row["step"] == 4:
            raise Stop

    with pytest.raises(Stop):
        probe(
            trained,
            data=data,
            metrics=tmp_path / "b",
            steps=6,
            save_every=2,
            on_step=interrupt,
            **FAST,
        )
    assert not (tmp_path / "b" / Path(whole.metrics_path).name).exists()
    resumed = probe(trained, data=data, metrics=tmp_path / "b", steps=6, save_every=2, **FAST)
    assert resumed.resumed_from == 4
    assert resumed.curve == whole.curve and resumed.auc == whole.auc
    assert not list((tmp_path / "b").glob("*.resume"))


@pytest.mark.slow
def test_cli_probe_json(tmp_path, data, trained):
    proc = run_plc(
        "probe",
        trained,
        "--data",
        data,
        "--metrics",
        tmp_path / "m",
        "--preset",
        "tiny",
        "--steps",
        "3",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # 3 of the tiny preset's 8 probe steps: its cadence (2 of 8) scales to every step.
    assert [c["step"] for c in out["curve"]] == [0, 1, 2, 3] and out["auc"] > 0


@pytest.mark.parametrize(
    "case", ["missing_lang", "few_val", "tokenizer", "eval_every", "seq_len", "keep"]
)
def test_cli_bad_input(tmp_path, data, trained, case):
    args, fragments = {
        "missing_lang": (["--lang", "xx"], ["'xx'", "(it has: vi)"]),
        "few_val": (["--eval-seqs", "500"], ["val tokens", "not 500; pass --eval-seqs"]),
        "tokenizer": (["--lang", "ru"], ["'other'", "'byte'"]),
        "eval_every": (["--eval-every", "0"], ["--eval-every"]),
        "seq_len": (["--seq-len", "64"], ["64", "context 32"]),
        "keep": (["--keep", trained], ["--keep", "input checkpoint"]),
    }[case]
    if case == "tokenizer":
        other = FOREIGN_TOKENIZER
        data = tmp_path / "data"
        write_store(data / "ru.zarr", np.zeros(500), np.zeros(500), lang="ru", tokenizer=other)
    before = _sha(trained)
    base = ["probe", trained, "--data", data, "--metrics", tmp_path / "m", "--preset", "tiny"]
    assert_bad_input(run_plc(*base, *args), *fragments)
    assert _sha(trained) == before and not (tmp_path / "m").exists()


def test_repeated_probes_share_the_windows_and_differ_in_their_batches(tmp_path, data, trained):
    res = probe(trained, data=data, metrics=tmp_path / "m", steps=4, repeats=3, **FAST)
    assert [r["probe_seed"] for r in res.repeats] == [5, 6, 7]  # the run's seed, then the next
    aucs = [r["auc"] for r in res.repeats]
    assert len(set(aucs)) == 3 and res.auc == pytest.approx(np.mean(aucs))
    assert res.auc_sd == pytest.approx(np.std(aucs, ddof=1))
    df = pl.read_parquet(res.metrics_path)
    assert df["probe_seed"].unique().sort().to_list() == [5, 6, 7]
    step0 = df.filter(pl.col("step") == 0)
    assert step0["val_loss"].n_unique() == 1  # the same model on the same windows
    assert step0["window_starts"].to_list() == [res.window_starts] * 3
    # One repeat fanned out as its own job reproduces the second repeat and names its file.
    one = probe(trained, data=data, metrics=tmp_path / "m", steps=4, probe_seed=6, **FAST)
    assert one.auc == pytest.approx(aucs[1], rel=1e-12)
    assert one.metrics_path.endswith("-vi-p6.parquet")
    for bad, message in ((dict(repeats=0), "--repeats must be positive"),
                         (dict(probe_seed=-1), "--probe-seed must be ≥ 0"),
                         (dict(repeats=2, keep=tmp_path / "k.pt"), "--keep keeps one")):  # fmt: skip
        with pytest.raises(PlcError, match=message):
            probe(trained, data=data, metrics=tmp_path / "x", steps=4, **bad, **FAST)


def test_a_repeat_holds_no_earlier_repeat_model_or_optimizer(tmp_path, data, trained, monkeypatch):
    """Each repeat trains a fresh copy: the ones before it (with their AdamW state, ≈ 6 GB a
    repeat at 314M) are gone by then; only curves and numbers are kept."""
    import gc
    import weakref

    import plc.probe

    models, alive = [], []
    start = plc.probe.start

    def tracked(options, build):
        gc.collect()
        alive.append(sum(ref() is not None for ref in models))
        runtime, model = start(options, build)
        models.append(weakref.ref(model))
        return runtime, model

    monkeypatch.setattr(plc.probe, "start", tracked)
    res = probe(trained, data=data, metrics=tmp_path / "m", steps=4, repeats=3, **FAST)
    assert alive == [0, 0, 0] and len(res.repeats) == 3
