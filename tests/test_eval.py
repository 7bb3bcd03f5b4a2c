"""plc eval: the mean validation loss over the fixed windows, every target position weighted equally."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FOREIGN_TOKENIZER, assert_bad_input, run_plc

from plc.data.tokenizers import ByteTokenizer
from plc.data.tokenstore import write_store
from plc.evaluate import evaluate, validation_loss
from plc.init import init_checkpoint
from plc.runtime import Runtime
from plc.store import load_checkpoint

CTX = 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(0)
    val = rng.integers(0, 256, 2000)
    write_store(
        tmp_path / "data" / "vi.zarr",
        rng.integers(0, 256, 3000),
        val,
        lang="vi",
        tokenizer=ByteTokenizer().identity(),
    )
    init_checkpoint(tmp_path / "c.pt", size="nano", tokenizer="byte", context=CTX, seed=1)
    return tmp_path, val


def _direct(model, val, starts, L):
    """Loss by hand: windows val[s:s+L+1] at the reported starts, full logits, mean of all targets."""
    w = torch.from_numpy(np.stack([val[s : s + L + 1] for s in starts])).long()
    with torch.no_grad():
        logits = model(w[:, :-1])
    return float(F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten()))


def test_loss_matches_a_direct_computation_with_a_ragged_last_batch(setup):
    tmp, val = setup
    model = load_checkpoint(tmp / "c.pt").build_model()
    res = evaluate(tmp / "c.pt", data=tmp / "data", lang="vi", seqs=7, batch_size=3, device="cpu")
    assert (res.seqs, res.seq_len, res.tokens) == (
        7,
        CTX,
        7 * CTX,
    )  # seq len defaults to the context
    # The reported windows are enough to recompute the loss independently.
    assert res.eval_seed == 1 and len(res.window_starts) == 7  # the run's seed
    assert res.loss == pytest.approx(_direct(model, val, res.window_starts, CTX), rel=1e-6)
    assert res.tokens_per_s > 0 and res.entropy_rate is None and res.excess_loss is None
    # Shorter windows are another draw; another seed another one.
    short = evaluate(tmp / "c.pt", data=tmp / "data", lang="vi", seqs=5, seq_len=9, device="cpu")
    assert short.loss == pytest.approx(_direct(model, val, short.window_starts, 9), rel=1e-6)
    again = evaluate(tmp / "c.pt", data=tmp / "data", lang="vi", seqs=7, eval_seed=2, device="cpu")
    assert again.window_starts != res.window_starts and again.eval_seed == 2


def test_eval_windows_are_random_non_overlapping_and_fixed_per_seed(setup):
    from plc.data.sampling import eval_windows
    from plc.data.tokenstore import open_lang

    store = open_lang(setup[0] / "data", "vi")  # 2,000 val tokens
    for n, L in ((50, 31), (59, 32), (1, 999)):
        starts, windows = eval_windows(store, n, L, seed=3)
        again, _ = eval_windows(store, n, L, seed=3)
        assert np.array_equal(starts, again) and windows.shape == (n, L + 1)
        s = np.sort(starts)
        assert s[0] >= 0 and s[-1] + L + 1 <= 2000 and (np.diff(s) >= L + 1).all()
        assert np.array_equal(windows[0], np.asarray(store.val[starts[0] : starts[0] + L + 1]))
    # A smaller draw is the start of a larger one (diagnose reads two counts in one pass).
    assert np.array_equal(eval_windows(store, 20, 31, 3)[0], eval_windows(store, 50, 31, 3)[0][:20])
    assert not np.array_equal(eval_windows(store, 20, 31, 3)[0], eval_windows(store, 20, 31, 4)[0])
    # Drawn from the whole split, not its head: over seeds the windows' mean position is the middle.
    pooled = np.concatenate([eval_windows(store, 10, 31, seed)[0] for seed in range(300)])
    assert abs(pooled.mean() - (2000 - 32) / 2) < 40
    assert pooled.min() < 32 and pooled.max() > 2000 - 2 * 32


def test_validation_loss_leaves_the_model_in_training_mode(setup):
    tmp, val = setup
    model = load_checkpoint(tmp / "c.pt").build_model().train()
    windows = val[: 4 * (CTX + 1)].reshape(4, CTX + 1).astype(np.int64)
    loss = validation_loss(model, windows, Runtime(torch.device("cpu")), batch_size=2)
    starts = [i * (CTX + 1) for i in range(4)]
    assert model.training and loss == pytest.approx(_direct(model, val, starts, CTX), rel=1e-6)


def test_cli_json(setup):
    tmp, val = setup
    proc = run_plc(
        "eval", tmp / "c.pt", "--data", tmp / "data", "--lang", "vi", "--preset", "tiny", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    model = load_checkpoint(tmp / "c.pt").build_model()
    expected = _direct(model, val, out["window_starts"], CTX)
    assert out["seqs"] == 4 and out["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("case", ["missing_lang", "few_val", "tokenizer", "seq_len"])
def test_cli_bad_input(setup, case):
    tmp, _ = setup
    if case == "tokenizer":
        other = FOREIGN_TOKENIZER
        write_store(
            tmp / "data" / "ru.zarr", np.zeros(100), np.zeros(100), lang="ru", tokenizer=other
        )
    args, fragments = {
        "missing_lang": (["--lang", "xx"], ["'xx'", "(it has: vi)"]),
        "few_val": (["--seqs", "100"], ["2,000 val tokens", "pass --seqs 59"]),
        "tokenizer": (["--lang", "ru", "--seqs", "1"], ["'other'", "'byte'"]),
        "seq_len": (["--seq-len", "33"], ["33", "context 32"]),
    }[case]
    base = ["eval", tmp / "c.pt", "--data", tmp / "data", "--preset", "tiny"]
    if "--lang" not in args:
        base += ["--lang", "vi"]
    assert_bad_input(run_plc(*base, *args), *fragments)
