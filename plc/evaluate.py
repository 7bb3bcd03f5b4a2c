"""Validation loss on the fixed evaluation windows (`plc eval`), also the probe's yardstick.

The windows are drawn at random from the whole val split, once per (store, count, length, seed)
(plc.data.sampling.eval_starts; the seed is the run's unless --eval-seed says otherwise); the loss
is the mean cross-entropy in nats over every target position of every window, all weighted equally.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from plc.data.sampling import eval_windows
from plc.data.tokenstore import open_lang
from plc.errors import PlcError
from plc.presets import get_preset
from plc.protocol import PROBE_LANG
from plc.runtime import setup
from plc.store import check_tokenizer, load_checkpoint

if TYPE_CHECKING:
    from plc.data.tokenstore import TokenStore
    from plc.model import LanguageModel
    from plc.runtime import Runtime
    from plc.store import Checkpoint

# Tokens per forward pass when no batch size is given: 16 windows of 2,048 keeps the no-grad
# activations of the largest preset well under a GPU's memory and CPU batches cache-friendly.
EVAL_BATCH_TOKENS = 1 << 15


def default_batch(seq_len: int) -> int:
    return max(1, EVAL_BATCH_TOKENS // seq_len)


@dataclass
class EvalWindows:
    store: TokenStore
    seed: int
    starts: np.ndarray  # (n,) positions in the val split
    windows: np.ndarray  # (n, L+1) token ids


def load_eval_windows(
    ckpt: Checkpoint,
    data: str | os.PathLike,
    lang: str,
    seqs: int,
    seq_len: int | None,
    flag: str = "--seqs",
    seed: int | None = None,
) -> EvalWindows:
    """The store of `lang` and its `seqs` evaluation windows (drawn with `seed`, default the run's),
    checked against the checkpoint (`flag` names the option that set `seqs`, for the error when
    the val split is too small)."""

    seq_len = ckpt.config.context if seq_len is None else seq_len
    if seq_len > ckpt.config.context:
        raise PlcError(
            f"--seq-len {seq_len} is longer than the checkpoint's context {ckpt.config.context}"
        )
    store = open_lang(data, lang)
    check_tokenizer(ckpt, store.tokenizer, str(store.path))
    seed = int(ckpt.meta.get("seed", 0)) if seed is None else seed
    starts, windows = eval_windows(store, seqs, seq_len, seed, flag)
    return EvalWindows(store, seed, starts, windows)


def validation_loss(
    model: LanguageModel, windows: np.ndarray, runtime: Runtime, batch_size: int | None = None
) -> float:
    """Mean next-token loss of `model` over evaluation windows (n, L+1), without gradients.

    Under torchrun each rank evaluates every world_size-th window and the sums are all-reduced, so
    every rank returns the same number.
    """
    import torch
    from torch.distributed.fsdp import FSDPModule

    n, length = windows.shape
    batch_size = batch_size or default_batch(length - 1)
    rows = windows[runtime.rank :: runtime.world_size]
    # A sharded model gathers its weights in every forward pass, with every rank: each makes as
    # many as the rank with most windows, a short one weighing its last window 0 times more.
    passes = -(-rows.shape[0] // batch_size)
    if isinstance(model, FSDPModule):
        most = -(-n // runtime.world_size)
        passes = -(-most // batch_size)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=runtime.device)
    try:
        with torch.no_grad(), runtime.autocast():
            for s in range(0, passes * batch_size, batch_size):
                part = rows[s : s + batch_size]
                batch = torch.from_numpy(part if len(part) else windows[:1]).to(runtime.device)
                loss = model(batch[:, :-1], batch[:, 1:])
                total += loss.double() * len(part)
    finally:
        model.train(was_training)
    if runtime.distributed:
        import torch.distributed as dist

        dist.all_reduce(total)
    return float(total) / n


@dataclass
class EvalResult:
    checkpoint: str
    lang: str
    seqs: int
    seq_len: int
    tokens: int
    loss: float
    seconds: float
    tokens_per_s: float
    eval_seed: int
    window_starts: list[int]
    entropy_rate: float | None  # the store's loss floor (markov: sources), else None
    excess_loss: float | None  # loss above that floor


def evaluate(
    ckpt_path: str | os.PathLike,
    *,
    data: str | os.PathLike = "data",
    lang: str = PROBE_LANG,
    preset: str | None = None,
    seqs: int | None = None,
    seq_len: int | None = None,
    eval_seed: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    threads: int | None = None,
) -> EvalResult:
    """`plc eval`: the validation loss of a checkpoint on the first `seqs` windows of `lang`
    (default: the probe's evaluation set of `preset`, else of the checkpoint's preset)."""

    if batch_size is not None and batch_size <= 0:
        raise PlcError(f"--batch-size must be positive, got {batch_size}")
    ckpt = load_checkpoint(ckpt_path, finite=True)
    if seqs is None:
        seqs = get_preset(preset or ckpt.preset or "paper").probe_eval_seqs
    ev = load_eval_windows(ckpt, data, lang, seqs, seq_len, seed=eval_seed)
    windows = ev.windows
    runtime = setup(device, threads)
    model = ckpt.build_model(runtime.device)
    t0 = time.perf_counter()
    loss = validation_loss(model, windows, runtime, batch_size)  # float() waits for the device
    seconds = time.perf_counter() - t0
    L = windows.shape[1] - 1
    tokens = windows.shape[0] * L
    return EvalResult(
        str(ckpt_path),
        lang,
        windows.shape[0],
        L,
        tokens,
        loss,
        seconds,
        tokens / seconds,
        ev.seed,
        ev.starts.tolist(),
        ev.store.entropy_rate,
        None if ev.store.entropy_rate is None else loss - ev.store.entropy_rate,
    )
