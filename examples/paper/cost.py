"""Expected cost of the paper's protocol, computed from the `paper` preset.

    python examples/paper/cost.py [--mfu 0.45] [--peak-tflops 989] [--cycles 48]

FLOPs per token from plc.sizes.train_flops_per_token (6 per matmul weight, the tied LM head
included, plus causal attention), tokens from the preset; probes cost as much as tasks.
"""

import argparse

from plc.presets import get_preset
from plc.sizes import make_config, train_flops_per_token

ap = argparse.ArgumentParser()
ap.add_argument("--mfu", type=float, default=0.45, help="model FLOPs utilisation")
ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
ap.add_argument("--cycles", type=int, default=None)
ap.add_argument("--probes-per-cycle", type=int, default=3, help="zh, de, ru")
args = ap.parse_args()

p = get_preset("paper")
cycles = args.cycles or p.cycles
tokens = p.steps * p.batch_tokens
rate = args.mfu * args.peak_tflops * 1e12
print(
    f"paper preset: {tokens:,} tokens per task ({p.steps:,} steps × {p.batch_tokens:,}), "
    f"{cycles} cycles, {args.probes_per_cycle} probes per cycle, {args.mfu:.0%} MFU of "
    f"{args.peak_tflops:g} TFLOP/s"
)
print(f"{'size':>6} {'PFLOP/task':>11} {'GPU-h/task':>11} {'tasks+probes':>13} {'GPU-hours':>10}")
total = 0.0
for size in p.sizes:
    c = make_config(size, vocab_size=151_680, context=p.context)
    flops = train_flops_per_token(c, p.seq_len) * tokens
    hours = flops / rate / 3600
    jobs = cycles * (8 + args.probes_per_cycle)
    total += hours * jobs
    print(f"{size:>6} {flops / 1e15:>11,.0f} {hours:>11.2f} {jobs:>13,} {hours * jobs:>10,.0f}")
print(f"{'all':>6} {'':>11} {'':>11} {'':>13} {total:>10,.0f}")
