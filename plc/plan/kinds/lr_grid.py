"""App. A: one task of the cycle's first language per (size, peak learning rate), validated during
training, then `plc fit-lr`."""

from __future__ import annotations

from plc.errors import PlcError
from plc.options import number
from plc.plan.builder import Builder, metric_file
from plc.plan.jobs import Plan
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
    b.shard(lang, source, b.p.shard_tokens)
    tags, wd = b.weight_decay()
    ckpts, metrics = [], []
    for lr in lrs:
        for run, method in b.each_run([*tags, f"lr{number(lr)}"]):
            c0 = b.init(run)
            ckpts.append(f"{run.folder}/c1.pt")
            train = {"lr": lr, **wd, **method}
            after = ["--val-every", str(val_every)]
            b.train(run, 1, c0, ckpts[-1], ["--lang", lang], [b.store(lang)], train, after)
            metrics.append(metric_file(b.metrics, "train", run.run_id, 1, lang))
    # fit-lr reads the train metric files; the jobs that write them are named by their
    # checkpoints, so those are the prerequisites.
    b.analysis(f"{b.out_dir}/lr-fit.txt", ["fit-lr", *metrics], ckpts, stdout=True)
    return b.plan(
        f"lr-grid (App. A), sizes {','.join(b.sizes)}, one {lang} task at each of "
        f"{','.join(number(x) for x in lrs)}, validated every {val_every} steps",
        [lang],
        "",
        None,
    )
