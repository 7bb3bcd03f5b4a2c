"""FSDP2 (`--strategy fsdp`) on two gloo ranks of this CPU: it trains as DDP does, its state and
checkpoints are gathered whole into plc's own formats, a job lost mid-task resumes bit-exactly,
and evaluation over unevenly split windows does not hang."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from plc.data.shard import shard
from plc.init import init_checkpoint
from plc.model import GPT, GPTConfig
from plc.store import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

WORKER = """
import sys
import torch
from plc.data.sampling import BatchSampler
from plc.data.tokenstore import open_lang
from plc.evaluate import eval_windows, validation_loss
from plc.model import GPT, GPTConfig
from plc.options import TrainOptions
from plc.runtime import setup
from plc.train import train_loop

data, out = sys.argv[1], sys.argv[2]
runtime = setup("cpu", threads=1)
store = open_lang(data, "en")
windows = eval_windows(store, 3, 32, 0)[1]  # 2 on rank 0, 1 on rank 1


class Lost(Exception):
    pass


class LosingSampler(BatchSampler):
    # A job lost before step 4 (a node gone): every rank stops there.
    def local(self, rank, world, stop=None):
        inner = super().local(rank, world, stop)
        batch = inner.batch

        def lost_at_4(step):
            if step == 4:
                raise Lost
            return batch(step)

        inner.batch = lost_at_4
        return inner


def run(strategy, sampler_class=BatchSampler, state=None, checkpointing=False, continued=None):
    torch.manual_seed(0)
    model = GPT(GPTConfig(2, 64, 1, 320, 32))
    opts = TrainOptions(
        steps=6, lr=3e-3, batch_tokens=128, seq_len=32, micro_batch=1, grad_clip=1.0,
        strategy=strategy, activation_checkpointing=checkpointing,
        save_every=3 if state else None,
    ).resolve(world_size=2)
    res = train_loop(
        model, sampler_class([store], 32, 4, 0, 1), opts, runtime=runtime,
        state_path=state, signature={}, continued=continued,
        eval_fn=lambda done: validation_loss(model, windows, runtime, batch_size=1),
        eval_every=3,
    )
    return res, model


def summary(res, model):
    weights = res.weights(model)
    return {
        "loss": [r["loss"] for r in res.rows],
        "grad_norm": [r["grad_norm"] for r in res.rows],
        "evals": [e["value"] for e in res.evals],
        "weights": weights,
        "types": sorted({type(v).__name__ for v in weights.values()}) if weights else [],
    }


found = {}
for name, strategy in (("ddp", "ddp"), ("fsdp", "fsdp")):
    res, model = run(strategy, continued={})
    found[name] = {**summary(res, model), "optimizer": res.continued_state()["optimizer"]}
res, model = run("fsdp", checkpointing=True)
found["fsdp_checkpointing"] = summary(res, model)
state = f"{out}.resume"
try:
    run("fsdp", LosingSampler, state)
except Lost:
    pass
res, model = run("fsdp", state=state)
found["fsdp_resumed"] = {**summary(res, model), "resumed_from": res.resumed_from}
if runtime.is_main:
    torch.save(found, out)
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    shard("en", d / "en.zarr", source="embedded", tokenizer="byte")
    return d


def _torchrun(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PLC_THREADS": "1", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*argv, *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )


def test_fsdp_trains_as_ddp_gathers_whole_state_and_resumes_exactly(tmp_path, data):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    proc = _torchrun(worker, data, tmp_path / "found.pt")
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = torch.load(tmp_path / "found.pt", weights_only=False)
    ddp, fsdp = found["ddp"], found["fsdp"]
    # The same training to float rounding (gradients reduce-scattered instead of all-reduced).
    for key in ("loss", "grad_norm", "evals"):
        assert len(ddp[key]) == len(fsdp[key]) > 0
        assert max(abs(a - b) for a, b in zip(ddp[key], fsdp[key], strict=True)) < 1e-5, key
    # Whole weights in plc's layout, plain tensors, as the model's own state dict.
    plain = GPT(GPTConfig(2, 64, 1, 320, 32)).state_dict()
    assert fsdp["types"] == ["Tensor"] and list(fsdp["weights"]) == list(plain)
    for k, v in plain.items():
        assert fsdp["weights"][k].shape == v.shape and fsdp["weights"][k].dtype == v.dtype
        torch.testing.assert_close(fsdp["weights"][k], ddp["weights"][k], rtol=0, atol=1e-5)
    # The optimizer's state keyed by parameter index, as a plain AdamW's: a continued run's next
    # task loads it whatever strategy it trains with.
    a, b = ddp["optimizer"], fsdp["optimizer"]
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for i, s in a["state"].items():
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(b["state"][i][k], s[k], rtol=1e-4, atol=1e-7)
    model = GPT(GPTConfig(2, 64, 1, 320, 32))
    torch.optim.AdamW(model.parameters()).load_state_dict(
        {**b, "param_groups": [{**b["param_groups"][0], "params": list(range(len(plain)))}]}
    )
    # Activation checkpointing recomputes the same numbers; a lost job resumes bit-exactly.
    for other in ("fsdp_checkpointing", "fsdp_resumed"):
        assert found[other]["loss"] == fsdp["loss"], other
        assert all(torch.equal(v, fsdp["weights"][k]) for k, v in found[other]["weights"].items())
    assert found["fsdp_resumed"]["resumed_from"] == 3


def test_train_task_under_fsdp_writes_a_whole_checkpoint(tmp_path, data):
    init_checkpoint(tmp_path / "c0.pt", size="nano", tokenizer="byte", context=32, seed=3)
    common = ["--lang", "en", "--ckpt", tmp_path / "c0.pt", "--data", data, "--steps", "4"]
    common += ["--preset", "tiny"]
    one = subprocess.run(
        [sys.executable, "-m", "plc", "train-task", *map(str, common), "--out",
         str(tmp_path / "one.pt"), "--metrics", str(tmp_path / "m1")],
        env={**os.environ, "PLC_THREADS": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = _torchrun(
        "--module", "plc", "train-task", *common, "--out", tmp_path / "two.pt",
        "--metrics", tmp_path / "m2", "--micro-batch", "2", "--strategy", "fsdp",
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a = pl.read_parquet(next((tmp_path / "m1").glob("*.parquet")))["loss"].to_numpy()
    b = pl.read_parquet(next((tmp_path / "m2").glob("*.parquet")))["loss"].to_numpy()
    assert len(a) == len(b) == 4 and abs(a - b).max() < 1e-5
    wa, wb = (load_checkpoint(tmp_path / f"{n}.pt").model for n in ("one", "two"))
    assert list(wa) == list(wb)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4
