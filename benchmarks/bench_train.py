"""Training and evaluation throughput of plc's GPT against Hugging Face GPT2LMHeadModel.

    python benchmarks/bench_train.py [--threads 2] [--reps 7] [--cases a,b,c] [--no-memory]

Both models have the same shape (layers, d, heads, positions, vocab, exact GeLU, no dropout, SDPA
attention), fp32 on CPU, batch 8 × 256 tokens, and the same fused AdamW (β = 0.9, 0.95, wd 0.1).
A train step is forward + backward + optimizer step; an eval step is the mean loss without grad.
Steps of the two models are interleaved (plc, HF, plc, HF, …) so that load from other processes
hits both alike; the figure is the median over --reps steps after 2 warm-up steps. The FLOP limit
is the matmul peak measured in the same run (2048² fp32 matmuls) divided by the FLOPs per token:
6·(matmul weights incl. the tied head) + 12·L·T·d for attention scores and values (training),
a third of that for eval. Peak memory (RSS) of a train step is measured in a fresh process per model.

Cases: (a) 4 layers d=128 byte vocab; (b) 4 layers d=320 byte vocab (the 5M shape);
(c) the 5M shape with the Qwen3 vocabulary (151,680).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

CASES = {
    "a": dict(n_layer=4, d_model=128, n_head=2, vocab_size=320),
    "b": dict(n_layer=4, d_model=320, n_head=5, vocab_size=320),
    "c": dict(n_layer=4, d_model=320, n_head=5, vocab_size=151_680),
}
BATCH, SEQ = 8, 256


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """fp32 matmul FLOP/s of this CPU at the current thread count (best of reps)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def flops_per_token(case: dict, train: bool) -> float:
    L, d, V = case["n_layer"], case["d_model"], case["vocab_size"]
    dense = 12 * L * d * d + d * V  # qkv, proj, fc, fc-proj, tied head
    attention = 2 * L * SEQ * d  # scores and values, forward, per token (mask not exploited)
    return (3 if train else 1) * (2 * dense + 2 * attention)


def build(kind: str, case: dict, hf_adamw: str = "fused"):
    from plc.options import TrainOptions
    from plc.train import make_optimizer

    opts = TrainOptions(lr=1e-3).resolve(preset="paper")  # the paper's AdamW settings

    torch.manual_seed(0)
    if kind == "plc":
        from plc.model import GPT, GPTConfig

        model = GPT(GPTConfig(context=SEQ, **case))

        def loss_fn(x, y):
            return model(x, y)

    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(
            n_layer=case["n_layer"],
            n_embd=case["d_model"],
            n_head=case["n_head"],
            n_positions=SEQ,
            vocab_size=case["vocab_size"],
            activation_function="gelu",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
            attn_implementation="sdpa",
        )
        model = GPT2LMHeadModel(cfg)
        assert model.config._attn_implementation == "sdpa"

        def loss_fn(x, y):
            # Labels = targets shifted right by one, so HF's internal shift scores the same tokens.
            return model(input_ids=x, labels=torch.cat([x[:, :1], y], dim=1)[:, :-1]).loss

    if kind == "hf" and hf_adamw == "default":  # torch's default AdamW: a per-tensor loop on CPU
        return (
            model,
            torch.optim.AdamW(model.parameters(), 1e-3, opts.betas, weight_decay=opts.weight_decay),
            loss_fn,
        )
    return model, make_optimizer(model, opts), loss_fn


def batch(vocab: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    t = torch.randint(0, min(vocab, 50_000), (BATCH, SEQ + 1), generator=g)
    return t[:, :-1], t[:, 1:]


def train_step(model, opt, loss_fn, x, y) -> None:
    loss = loss_fn(x, y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def eval_step(model, opt, loss_fn, x, y) -> None:
    with torch.no_grad():
        loss_fn(x, y)


def interleaved(case: dict, step_fn, reps: int, hf_adamw: str) -> dict[str, float]:
    """Median tokens/s of plc and HF, alternating one step of each."""
    impls = {k: build(k, case, hf_adamw) for k in ("plc", "hf")}
    times: dict[str, list[float]] = {k: [] for k in impls}
    for i in range(reps + 2):
        x, y = batch(case["vocab_size"], i)
        for k, (model, opt, loss_fn) in impls.items():
            t = time.perf_counter()
            step_fn(model, opt, loss_fn, x, y)
            if i >= 2:
                times[k].append(time.perf_counter() - t)
    return {k: BATCH * SEQ / statistics.median(v) for k, v in times.items()}


def peak_rss(kind: str, case_name: str, threads: int) -> float:
    """Peak resident memory (GB) of a fresh process doing 3 train steps of one model."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from this (big) process.
    code = (
        "import sys, torch; sys.path.insert(0, 'benchmarks');"
        f"torch.set_num_threads({threads});"
        "from bench_train import CASES, build, batch, train_step;"
        f"c = CASES[{case_name!r}]; m, o, f = build({kind!r}, c);"
        "[train_step(m, o, f, *batch(c['vocab_size'], i)) for i in range(3)];"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1e6  # kB


class RandomSampler:
    """Uniform random tokens: a training step's cost does not depend on the data."""

    def __init__(self, batch_size: int, seq_len: int, vocab: int):
        self.batch_size, self.seq_len, self.vocab = batch_size, seq_len, vocab

    def batch(self, step: int, rank: int = 0, world_size: int = 1):
        import numpy as np

        rng = np.random.default_rng((step, rank))
        rows = self.batch_size // world_size
        return rng.integers(0, self.vocab, (rows, self.seq_len + 1), dtype=np.int64)

    def local(self, rank: int = 0, world_size: int = 1, stop: int | None = None):
        from plc.data.sampling import LocalBatches  # the loop's read-ahead, as for a real store

        return LocalBatches(self, rank, world_size, stop)


def device_bench(args) -> list[dict]:
    """tokens/s and MFU of train_loop (bf16 autocast on CUDA, fused AdamW) for preset sizes."""
    from plc.model import GPT
    from plc.options import TrainOptions
    from plc.runtime import setup
    from plc.sizes import make_config
    from plc.train import train_loop

    runtime = setup(args.device)
    rows = []
    for size in args.sizes.split(","):
        for compile in (False, True) if args.compile else (False,):
            config = make_config(size, vocab_size=151_680, context=args.seq_len)
            model = GPT(config).to(runtime.device)
            sampler = RandomSampler(args.micro, args.seq_len, config.vocab_size)
            if runtime.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            opts = TrainOptions(
                steps=args.steps,
                lr=1e-4,
                batch_tokens=sampler.batch_size * sampler.seq_len,
                seq_len=sampler.seq_len,
                warmup=0.0,
                compile=compile,
            ).resolve(preset="paper")
            res = train_loop(model, sampler, opts, runtime=runtime)
            wall = time.perf_counter() - t
            rate = statistics.median(r["tokens_per_s"] for r in res.rows[3:])
            L, d, T = config.n_layer, config.d_model, args.seq_len
            flops = 6 * (config.n_params + config.vocab_size * d) + 12 * L * T * d
            row = {
                "size": size,
                "compile": compile,
                "micro_batch": args.micro,
                "seq_len": T,
                "tokens_per_s": rate,
                "mfu": rate * flops / (args.peak_tflops * 1e12),
                "wall_s": wall,
                "final_loss": res.final_loss,
            }
            if runtime.device.type == "cuda":
                row["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
            print(json.dumps(row), flush=True)
            rows.append(row)
            del model
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--cases", default="a,b,c")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument(
        "--hf-adamw",
        choices=("fused", "default"),
        default="fused",
        help="HF's optimizer: plc's fused AdamW (compares the models) or torch's default.",
    )
    ap.add_argument("--json", action="store_true", help="One JSON object instead of a table.")
    dev = ap.add_argument_group("device mode (GPU): train_loop tokens/s and MFU of preset sizes")
    dev.add_argument("--device", help="Run the device benchmark on this device (cuda, or cpu).")
    dev.add_argument("--sizes", default="106M,314M")
    dev.add_argument("--seq-len", type=int, default=2048)
    dev.add_argument("--micro", type=int, default=16, help="Sequences per step.")
    dev.add_argument("--steps", type=int, default=13, help="Steps (the first 3 are not timed).")
    dev.add_argument("--compile", action="store_true", help="Also measure with torch.compile.")
    dev.add_argument(
        "--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100/H200)."
    )
    args = ap.parse_args()
    if args.device:
        device_bench(args)
        return
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    peak = matmul_peak()
    results = []
    for name in args.cases.split(","):
        case = CASES[name]
        row = {"case": name, **case}
        for mode, fn in (("train", train_step), ("eval", eval_step)):
            rate = interleaved(case, fn, args.reps, args.hf_adamw)
            limit = peak / flops_per_token(case, mode == "train")
            row[mode] = {
                "plc_tok_s": rate["plc"],
                "hf_tok_s": rate["hf"],
                "speedup": rate["plc"] / rate["hf"],
                "limit_tok_s": limit,
                "plc_of_limit": rate["plc"] / limit,
            }
        if not args.no_memory:
            row["peak_rss_gb"] = {k: peak_rss(k, name, args.threads) for k in ("plc", "hf")}
        results.append(row)
    if args.json:
        print(json.dumps({"threads": args.threads, "matmul_gflops": peak / 1e9, "cases": results}))
        return
    print(
        f"threads {args.threads}, fp32 matmul peak {peak / 1e9:.0f} GFLOP/s, batch {BATCH}×{SEQ}, "
        f"HF with {args.hf_adamw} AdamW"
    )
    print(
        f"{'case':<5}{'mode':<6}{'plc tok/s':>10}{'HF tok/s':>10}{'plc/HF':>8}"
        f"{'limit':>8}{'of limit':>9}{'RSS plc':>9}{'RSS HF':>8}"
    )
    for r in results:
        for mode in ("train", "eval"):
            m = r[mode]
            mem = r.get("peak_rss_gb") if mode == "train" else None
            rss = f"{mem['plc']:>8.2f}G{mem['hf']:>7.2f}G" if mem else ""
            print(
                f"{r['case']:<5}{mode:<6}{m['plc_tok_s']:>10,.0f}{m['hf_tok_s']:>10,.0f}"
                f"{m['speedup']:>8.2f}{m['limit_tok_s']:>8,.0f}{m['plc_of_limit']:>9.0%}{rss}"
            )


if __name__ == "__main__":
    main()
