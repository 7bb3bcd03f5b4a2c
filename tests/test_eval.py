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


def _direct(model, val, n, L):
    """Loss by hand: window i = val[i(L+1):(i+1)(L+1)], full logits, mean over all n·L targets."""
    w = torch.from_numpy(val[: n * (L + 1)].reshape(n, L + 1)).long()
    with torch.no_grad():
        logits = model(w[:, :-1])
    return float(F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten()))


def test_loss_matches_a_direct_computation_with_a_ragged_last_batch(setup):
    tmp, val = setup
    model = load_checkpoint(tmp / "c.pt").build_model()
    expected = _direct(model, val, 7, CTX)
    res = evaluate(tmp / "c.pt", data=tmp / "data", lang="vi", seqs=7, batch_size=3, device="cpu")
    assert (res.seqs, res.seq_len, res.tokens) == (
        7,
        CTX,
        7 * CTX,
    )  # seq len defaults to the context
    assert res.loss == pytest.approx(expected, rel=1e-6)
    assert res.tokens_per_s > 0
    # Shorter windows are a different fixed set, cut from the start of val the same way.
    short = evaluate(tmp / "c.pt", data=tmp / "data", lang="vi", seqs=5, seq_len=9, device="cpu")
    assert short.loss == pytest.approx(_direct(model, val, 5, 9), rel=1e-6)


def test_validation_loss_leaves_the_model_in_training_mode(setup):
    tmp, val = setup
    model = load_checkpoint(tmp / "c.pt").build_model().train()
    windows = val[: 4 * (CTX + 1)].reshape(4, CTX + 1).astype(np.int64)
    loss = validation_loss(model, windows, Runtime(torch.device("cpu")), batch_size=2)
    assert model.training and loss == pytest.approx(_direct(model, val, 4, CTX), rel=1e-6)


def test_cli_json(setup):
    tmp, val = setup
    proc = run_plc(
        "eval", tmp / "c.pt", "--data", tmp / "data", "--lang", "vi", "--preset", "tiny", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    model = load_checkpoint(tmp / "c.pt").build_model()
    assert out["seqs"] == 4 and out["loss"] == pytest.approx(_direct(model, val, 4, CTX), rel=1e-5)


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
        "few_val": (["--seqs", "100"], ["2,000 val tokens", "pass --seqs 60"]),
        "tokenizer": (["--lang", "ru", "--seqs", "1"], ["'other'", "'byte'"]),
        "seq_len": (["--seq-len", "33"], ["33", "context 32"]),
    }[case]
    base = ["eval", tmp / "c.pt", "--data", tmp / "data", "--preset", "tiny"]
    if "--lang" not in args:
        base += ["--lang", "vi"]
    assert_bad_input(run_plc(*base, *args), *fragments)
