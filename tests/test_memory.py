"""plc.memory: what autograd keeps is counted exactly; the choice of strategy, micro-batch and
activation checkpointing for a device; the options a job trains with on CUDA and on the CPU."""

from __future__ import annotations

import contextlib

import pytest
import torch

from plc.errors import PlcError
from plc.memory import GIB, choose, estimate, saved_bytes, usable_bytes
from plc.model import GPT, make_config
from plc.options import TrainOptions
from plc.taskrun import fit_to_device

pytestmark = pytest.mark.usefixtures("one_thread")
QWEN3 = 151_680


def _kept_by_autograd(model: GPT, x: torch.Tensor, y: torch.Tensor, autocast: bool) -> int:
    """Bytes of the distinct tensors a forward pass saves for its backward pass, weights aside."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            kept[s.data_ptr()] = s.nbytes()
        return t

    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        model(x, y)
    return sum(kept.values())


@pytest.mark.parametrize(
    "shape",
    [
        dict(layers=2, d_model=128),
        dict(layers=3, d_model=192, heads=2),
        dict(layers=2, d_model=128, qk_norm=True),
        dict(layers=2, d_model=128, sink_tokens=3),
    ],
)
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_saved_bytes_are_what_autograd_keeps(shape, autocast, checkpointing):
    config = make_config(vocab_size=320, context=64, **shape)
    torch.manual_seed(0)
    model = GPT(config)
    model.checkpointing = checkpointing
    x, y = (torch.randint(0, 320, (4, 48)) for _ in range(2))
    kept = _kept_by_autograd(model, x, y, autocast)
    assert kept == saved_bytes(config, 4 * 48, 48, autocast=autocast, checkpointing=checkpointing)


def test_checkpointing_keeps_a_fraction_of_the_activations():
    c = make_config("314M", vocab_size=QWEN3, context=2048)
    whole = saved_bytes(c, 16 * 2048, 2048, autocast=True)
    kept = saved_bytes(c, 16 * 2048, 2048, autocast=True, checkpointing=True)
    # 36·d bytes a token and layer (plus bf16 weight casts) against the block input's 4·d.
    assert 24 * GIB < whole < 25 * GIB and kept < whole / 6


def _fit(size: str, world: int, gib: float = 80, **kw):
    c = make_config(size, vocab_size=QWEN3, context=2048)
    share = 256 // world  # the paper's batch: 256 sequences of 2,048
    return choose(c, seq_len=2048, share=share, world=world, device_bytes=int(gib * GIB), **kw)


@pytest.mark.parametrize("size", ["5M", "106M", "314M"])
def test_the_paper_sizes_train_as_before_on_80gb(size):
    fit = _fit(size, 8, cap=16)
    assert fit.fits and (fit.strategy, fit.micro_batch, fit.activation_checkpointing) == (
        "ddp",
        16,
        False,
    )


def test_past_1b_the_micro_batch_shrinks_then_the_weights_are_sharded():
    # The 1.2B model runs out of memory at micro-batch 16 under DDP on 80 GB.
    assert not estimate(
        make_config("L24-d2048", vocab_size=QWEN3, context=2048),
        seq_len=2048,
        micro_batch=16,
        world=8,
        strategy="ddp",
        checkpointing=False,
    ).total <= usable_bytes(80 * GIB)
    b12 = _fit("L24-d2048", 8, cap=16)
    assert b12.fits and b12.strategy == "ddp" and b12.micro_batch == 8
    # 7B: DDP's 20 bytes a parameter alone exceed 80 GB; FSDP over 8 ranks fits.
    b7 = _fit("L32-d4096", 8, cap=16)
    assert b7.fits and b7.strategy == "fsdp" and not b7.activation_checkpointing
    assert b7.estimate.states < 16 * 7.1e9 / 8 + 1
    # On one GPU nothing shards: checkpointing is the last resort, and 7B does not fit at all.
    one = _fit("L32-d4096", 1, cap=16)
    assert not one.fits and one.micro_batch == 1 and one.activation_checkpointing
    # A bigger GPU fits the 1.2B model's preset micro-batch.
    assert _fit("L24-d2048", 8, gib=141, cap=16).micro_batch == 16


def test_given_choices_are_kept():
    fit = _fit("314M", 8, cap=16, strategy="fsdp", checkpointing=True, micro_batch=4)
    assert (fit.strategy, fit.micro_batch, fit.activation_checkpointing) == ("fsdp", 4, True)
    with pytest.raises(PlcError, match="--strategy"):
        _fit("5M", 8, strategy="zero3")


def test_more_of_anything_needs_more_memory():
    c = make_config("106M", vocab_size=QWEN3, context=2048)

    def total(**kw):
        base = dict(seq_len=2048, micro_batch=8, world=8, strategy="ddp", checkpointing=False)
        return estimate(c, **{**base, **kw}).total

    assert total(micro_batch=4) < total() < total(micro_batch=16)
    assert total(strategy="fsdp") < total() and total(checkpointing=True) < total()
    assert total(strategy="fsdp", world=16) < total(strategy="fsdp")


def test_a_job_fits_its_device_where_the_flags_leave_it_open():
    c = make_config("L24-d2048", vocab_size=QWEN3, context=2048)
    opts = TrainOptions(preset="paper").resolve(d_model=c.d_model, world_size=8)
    assert opts.micro_batch == 16 and opts.strategy == "auto"
    # The CPU: nothing to fit; auto is DDP, the rest as resolved.
    cpu = fit_to_device(opts, c, None, world=8)
    assert (cpu.strategy, cpu.micro_batch, cpu.activation_checkpointing) == ("ddp", 16, False)
    gpu = fit_to_device(opts, c, 80 * GIB, world=8)
    assert (gpu.strategy, gpu.micro_batch) == ("ddp", 8)
    # How, not what: a resumed run may fit another device; the micro-batch is part of the record.
    assert "strategy" not in gpu.record() and gpu.record()["micro_batch"] == 8
    given = fit_to_device(opts, c, 80 * GIB, world=8, fixed=16)
    assert given.micro_batch == 16 and given.strategy == "fsdp"
