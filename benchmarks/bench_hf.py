"""Training throughput of a Hugging Face model through plc's loop, against a plain PyTorch loop over
the same model; and plc's own GPT through the loop, this checkout against another (before/after).

    python benchmarks/bench_hf.py [--threads 1] [--families gpt_neox,llama] [--vocabs 512,50304]
    python benchmarks/bench_hf.py --baseline /path/to/other/checkout   # GPT before/after

**HF.** A random model of each family (4 layers, d 256, 8 heads, MLP 1024, or 688 SwiGLU units
so that the MLP has the same weights; positions 256) at each vocabulary, fp32, batch 8 × 256,
the paper's AdamW (fused, β = 0.9, 0.95, weight decay 0.1). *plc* is `plc.train.train_loop` on
the adapter (plc.hf.adapter.HFModel: the family's own forward to the final norm, plc's chunked
cross-entropy against the head, the loop's gradient norm and finiteness checks); its tokens/s is
the loop's own per-step figure. *plain* is the loop a user writes: `model(input_ids=x,
labels=…).loss`, backward, `optimizer.step()`, `zero_grad()`, timed over the same part of a step
(batch to tensor through zero_grad), on a copy of the model with its own optimizer. The two
alternate step by step — each plc step is followed by a plain one, run from the loop's on_step,
which the loop's own timing leaves out — so that load from other processes hits both alike; the
figure is the median over `--rounds` loops of `--steps` steps, the first two of each left out.

**GPT before/after** (`--baseline PATH`): the same measure of `train_loop` on plc's GPT (4 layers,
d 320, byte vocabulary; and the 5M shape at the Qwen3 vocabulary) in fresh processes that import
plc from PATH or from this checkout, alternating, `--rounds` each; medians of all steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

BATCH, SEQ = 8, 256
REPO = Path(__file__).resolve().parents[1]


class RandomSampler:
    """Uniform random tokens (a step's cost does not depend on the data), a pure function of the step."""

    def __init__(self, batch_size: int, seq_len: int, vocab: int):
        self.batch_size, self.seq_len, self.vocab = batch_size, seq_len, vocab

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        rng = np.random.default_rng(step)
        rows = rng.integers(0, self.vocab, (self.batch_size, self.seq_len + 1), dtype=np.int64)
        return rows[rank::world_size]

    def local(self, rank: int = 0, world_size: int = 1, stop: int | None = None):
        from plc.data.sampling import LocalBatches

        return LocalBatches(self, rank, world_size, stop)


def options(steps: int):
    from plc.options import TrainOptions

    return TrainOptions(
        steps=steps, lr=1e-4, batch_tokens=BATCH * SEQ, seq_len=SEQ, warmup=0.0, device="cpu"
    ).resolve(preset="paper")


def hf_model(family: str, vocab: int):
    import transformers as t

    from plc.hf.adapter import HFModel, config_of

    gated = family not in ("gpt2", "gpt_neox")
    shape = dict(
        vocab_size=vocab,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=8,
        intermediate_size=688 if gated else 1024,
        max_position_embeddings=SEQ,
    )
    config = {
        "gpt2": lambda: t.GPT2Config(
            vocab_size=vocab,
            n_embd=256,
            n_layer=4,
            n_head=8,
            n_positions=SEQ,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        ),
        "gpt_neox": lambda: t.GPTNeoXConfig(**shape),
        "llama": lambda: t.LlamaConfig(**shape, num_key_value_heads=4),
        "qwen3": lambda: t.Qwen3Config(**shape, num_key_value_heads=4, head_dim=32),
        "olmo2": lambda: t.Olmo2Config(**shape, num_key_value_heads=4),
    }[family]()
    torch.manual_seed(0)
    hf = t.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return HFModel(hf, config_of(hf, family))


def plc_block(model, steps: int, on_step=None) -> list[float]:
    from plc.train import train_loop

    sampler = RandomSampler(BATCH, SEQ, model.config.vocab_size)
    res = train_loop(model, sampler, options(steps), on_step=on_step)
    return [float(r["tokens_per_s"]) for r in res.rows[2:]]


class Plain:
    """The loop a user writes over the Hugging Face model itself, one step per call."""

    def __init__(self, hf, steps: int):
        from plc.train import make_optimizer

        self.hf, self.rates = hf, []
        hf.train()
        self.opt = make_optimizer(hf, options(steps))
        self.sampler = RandomSampler(BATCH, SEQ, hf.config.vocab_size)

    def step(self, row: dict, steps: int) -> None:
        step = int(row["step"])
        t = time.perf_counter()
        x = torch.from_numpy(self.sampler.batch(step))[:, :-1]
        # HF shifts labels left by one inside: labels = the inputs score the next tokens.
        loss = self.hf(input_ids=x, labels=x.clone()).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if step >= 2:
            self.rates.append(BATCH * SEQ / (time.perf_counter() - t))


def hf_bench(args) -> list[dict]:
    rows = []
    for family in args.families.split(","):
        for vocab in (int(v) for v in args.vocabs.split(",")):
            model, twin = hf_model(family, vocab), hf_model(family, vocab).hf
            rates: dict[str, list[float]] = {"plc": [], "plain": []}
            for _ in range(args.rounds):
                plain = Plain(twin, args.steps)
                rates["plc"] += plc_block(model, args.steps, on_step=plain.step)
                rates["plain"] += plain.rates
            med = {k: statistics.median(v) for k, v in rates.items()}
            row = {
                "family": family,
                "vocab": vocab,
                "plc_tok_s": med["plc"],
                "plain_tok_s": med["plain"],
                "ratio": med["plc"] / med["plain"],
                "steps_each": len(rates["plc"]),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


GPT_CASES = {
    "b": dict(n_layer=4, d_model=320, n_head=5, vocab_size=320),
    "c": dict(n_layer=4, d_model=320, n_head=5, vocab_size=151_680),
}


def gpt_rates(case: str, steps: int) -> list[float]:
    """train_loop tokens/s of plc's GPT (whichever plc this process imports)."""
    from plc.model import GPT, GPTConfig

    torch.manual_seed(0)
    return plc_block(GPT(GPTConfig(context=SEQ, **GPT_CASES[case])), steps)


def gpt_before_after(args) -> list[dict]:
    rows = []
    for case in args.gpt_cases.split(","):
        rates: dict[str, list[float]] = {"baseline": [], "this": []}
        for _ in range(args.rounds):
            for name, path in (("baseline", args.baseline), ("this", str(REPO))):
                code = (
                    f"import sys, json, torch; sys.path.insert(0, {str(REPO / 'benchmarks')!r});"
                    f"torch.set_num_threads({args.threads}); torch.set_flush_denormal(True);"
                    "import bench_hf, plc;"
                    f"assert plc.__file__.startswith({path!r}), plc.__file__;"
                    f"print(json.dumps(bench_hf.gpt_rates({case!r}, {args.steps})))"
                )
                env = {**os.environ, "PYTHONPATH": path}
                out = subprocess.run(
                    [sys.executable, "-c", code],
                    env=env,
                    cwd="/",
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rates[name] += json.loads(out.stdout.strip().splitlines()[-1])
        med = {k: statistics.median(v) for k, v in rates.items()}
        row = {
            "case": case,
            **GPT_CASES[case],
            "baseline_tok_s": med["baseline"],
            "this_tok_s": med["this"],
            "ratio": med["this"] / med["baseline"],
            "baseline": args.baseline,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8, help="Steps per block (2 not timed).")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--families", default="gpt_neox,llama")
    ap.add_argument("--vocabs", default="512,50304")
    ap.add_argument("--baseline", help="Another plc checkout: plc's GPT there against here.")
    ap.add_argument("--gpt-cases", default="b,c")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    sys.path.insert(0, str(REPO))
    if args.baseline:
        gpt_before_after(args)
    else:
        hf_bench(args)


if __name__ == "__main__":
    main()
