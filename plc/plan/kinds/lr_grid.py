"""App. A: one task of the cycle's first language per (size, peak learning rate), validated during
training, then `plc fit-lr`."""

from __future__ import annotations

from plc.errors import PlcError
from plc.options import number
from plc.plan.builder import Builder, metric_file
from plc.plan.jobs import INPUTS, Plan
from plc.plan.options import PlanOptions
from plc.sizes import shape_of

PAPER_LR_GRID = (1e-4, 3e-4, 5e-4, 8e-4, 1e-3, 3e-3, 5e-3)  # App. A's grid


def lr_grid(o: PlanOptions) -> Plan:
    b = Builder("lr-grid", o)
    if len({shape_of(s)[1] for s in b.sizes}) < 2:
        raise PlcError(
            "an lr grid needs at least two sizes of different d_model (the power law in d is "
            "fitted between the smallest and the largest)"
        )
    cycle, _, source = b.languages()
    lrs = PAPER_LR_GRID if o.lrs is None else o.lrs
    val_every = b.p.probe_eval_every if o.val_every is None else o.val_every
    lang = cycle[0]
    val_seqs = _val_seqs(b, o.val_seqs, lang, source)
    b.shard(lang, source, b.p.shard_tokens)
    tags, wd = b.weight_decay()
    metrics = []
    for lr in lrs:
        for run, method in b.each_run([*tags, f"lr{number(lr)}"]):
            c0 = b.init(run)
            # The train metric file is the job's target, not c1.pt: a rate that diverges writes
            # it (status "diverged") and no checkpoint, and the grid goes on without it.
            metrics.append(metric_file(b.metrics, "train", run.run_id, 1, lang))
            train = {"lr": lr, **wd, **method}
            after = ["--val-every", str(val_every), "--val-seqs", str(val_seqs)]
            out = f"{run.folder}/c1.pt"
            b.train(run, 1, c0, out, ["--lang", lang], [b.store(lang)], train, after, metrics[-1])
    b.analysis(f"{b.out_dir}/lr-fit.txt", ["fit-lr", INPUTS], metrics, stdout=True)
    return b.plan(
        f"lr-grid (App. A), sizes {','.join(b.sizes)}, one {lang} task at each of "
        f"{','.join(number(x) for x in lrs)}, validated every {val_every} steps on {val_seqs} "
        "windows",
        [lang],
        "",
        None,
    )


def _val_seqs(b: Builder, asked: int | None, lang: str, source: str) -> int:
    """Validation windows of every task: `asked`, else the preset's probe evaluation set, or as
    many as the val split of `lang` holds where that is fewer (the embedded corpus's en has 28 of
    the cpu preset's 65 tokens, not its 30)."""
    room = b.val_windows(lang, source, b.p.shard_tokens)
    n = asked or (b.p.probe_eval_seqs if room is None else min(b.p.probe_eval_seqs, room))
    if room is not None and (room == 0 or n > room):
        raise PlcError(
            f"the {lang} val split holds {room} validation windows of {b.p.seq_len + 1} tokens, "
            f"not {n}: " + (f"pass --val-seqs {room} or fewer" if room else "shard more val tokens")
        )
    return n
