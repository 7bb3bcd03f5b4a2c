"""The continual protocol from Python: the same library functions the `plc` commands call.

    python examples/python/walkthrough.py [OUT_DIR]

Two model sizes, one cycle of eight tiny tasks each, probes after zh, de and ru, diagnostics at
the end of the cycle, then each run's onset. Takes about a minute on a laptop CPU.
"""

import sys
from pathlib import Path

from plc.data.shard import shard
from plc.diagnose import diagnose
from plc.init import init_checkpoint
from plc.onset.view import verdict
from plc.probe import probe
from plc.protocol import CYCLE, PROBE_LANG
from plc.study import fit_onset
from plc.task import train_task

out = Path(sys.argv[1] if len(sys.argv) > 1 else "walkthrough")
data, metrics = out / "data", out / "metrics"
preset = "tiny"  # `plc presets` lists them; `paper` is §IV-A/B. Named once: the run remembers it.

for lang in [*CYCLE, PROBE_LANG]:
    if not (data / f"{lang}.zarr").exists():
        shard(lang, data / f"{lang}.zarr", source="embedded", tokenizer="byte")

for size in ("nano", "micro"):
    ckpt = out / size / "c0.pt"
    if not ckpt.exists():
        init_checkpoint(ckpt, size=size, preset=preset, seed=0)
    for k, lang in enumerate(CYCLE, start=1):
        nxt = out / size / f"c{k}.pt"
        if not nxt.exists():
            r = train_task(ckpt, lang, data=data, out=nxt, metrics=metrics)
            print(
                f"{size} task {r.task_index} ({lang}): loss {r.final_loss:.3f}, {r.tokens_per_s:,.0f} tok/s"
            )
        ckpt = nxt
        if lang in ("zh", "de", "ru"):
            p = probe(ckpt, data=data, lang=PROBE_LANG, metrics=metrics, force=True)
            print(f"  probe after {lang}: AUC {p.auc:.4f} (final val loss {p.final_val_loss:.3f})")
    d = diagnose(ckpt, data=data, metrics=metrics, force=True)
    print(
        f"  diagnose: mean |θ| {d.param_abs_mean:.4f}, dormant {d.dormant_pct:.1f} %, "
        f"lazy {d.lazy_pct:.0f} %, collapsed {d.collapsed_pct:.0f} % of heads"
    )

result = fit_onset(sorted(metrics.glob("probe-*.parquet")), models=[])
for run in result.runs:  # the verdict with its point inside its interval, or why there is none
    print(f"{verdict(run)} ({run.n_probes} probes)")
