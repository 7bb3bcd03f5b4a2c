"""§IV-A: cycles of one task per language; probes after chosen languages, and after more in a band
of cycles (App. B's second stage: --dense-cycles). Also the loop the stationary kind shares."""

from __future__ import annotations

from collections.abc import Sequence

from plc.errors import PlcError
from plc.plan.builder import Builder
from plc.plan.jobs import Plan
from plc.plan.options import PlanOptions
from plc.protocol import ENTROPY_LANG, PAPER_PROBE_AFTER, default_probe_after


def continual(o: PlanOptions) -> Plan:
    return cyclic(Builder("continual", o))


def cyclic(b: Builder, tags: Sequence[str] = ()) -> Plan:
    """continual (one task per language) or stationary (every task the mixture); `tags` lead the
    run ids' tags (checkpoints --continual-from: the revision started from)."""
    o = b.o
    cycle, probe_lang, source = b.languages()
    n = len(cycle)
    cycles = b.p.cycles if o.cycles is None else o.cycles
    stationary = b.kind == "stationary"
    probe_after = default_probe_after(cycle) if o.probe_after is None else o.probe_after
    for lang in probe_after:
        if lang not in cycle:
            raise PlcError(f"--probe-after {lang!r} is not in the cycle {','.join(cycle)}")
    dense: set[str] = set()
    lo, hi = o.dense_cycles or (0, -1)
    if o.dense_cycles is not None:
        if lo < 1 or hi > cycles:
            raise PlcError(f"--dense-cycles {lo}-{hi} is outside the plan's cycles 1-{cycles}")
        dense_after = o.dense_after
        if dense_after is None:
            dense_after = [x for x in PAPER_PROBE_AFTER if x in cycle]
        for lang in dense_after:
            if lang not in cycle:
                raise PlcError(f"--dense-after {lang!r} is not in the cycle {','.join(cycle)}")
        if not dense_after:
            raise PlcError("--dense-cycles needs --dense-after: zh,de,ru are not in the cycle")
        dense = set(dense_after)
    elif o.dense_after is not None:
        raise PlcError("--dense-after needs --dense-cycles (the cycles to probe densely)")
    if stationary and any("replay" in m or "transition" in m for _, m in b.methods):
        raise PlcError("replay and transitions move between languages: not for the mixture")
    entropy = ENTROPY_LANG if ENTROPY_LANG in cycle else probe_lang
    diagnose_every = 1 if o.diagnose_every is None else o.diagnose_every
    b.shards(cycle, probe_lang, source)

    # The stationary problem is one training run (§V-B): by default the optimizer and its
    # schedule continue from task to task; the continual problem resets both (§IV-B).
    reset = not stationary if o.reset_optimizer is None else o.reset_optimizer
    wd_tags, wd = b.weight_decay()
    tags = [*tags, *wd_tags]
    if reset != (not stationary):
        tags.append("reset" if reset else "cont")
    inputs: list[str] = []
    probes_per_run = 0
    for run, method in b.each_run(tags):

        def c(k: int) -> str:
            return f"{run.folder}/c{k}.pt"  # noqa: B023 (used within the iteration)

        b.init(run)
        inputs.append(b.scratch_probe(run, c(0), probe_lang))
        probes_per_run = 0
        for k in range(1, cycles * n + 1):
            lang, cyc = cycle[(k - 1) % n], (k - 1) // n + 1
            # --continue from c0 starts the run's optimizer and schedule; later ones carry on.
            after = [] if reset else ["--continue"]
            if stationary:
                what, stores = ["--mix", ",".join(cycle)], [b.store(x) for x in cycle]
                task_lang, probed = "mix", True
            else:
                what, stores = ["--lang", lang], [b.store(lang)]
                task_lang = lang
                probed = lang in probe_after or (lo <= cyc <= hi and lang in dense)
            earlier = [cycle[(j - 1) % n] for j in range(1, k)]
            b.train(run, k, c(k - 1), c(k), what, stores, {**wd, **method}, after, None, earlier)
            if probed:
                inputs.append(b.probe(run, k, c(k), task_lang, probe_lang))
                probes_per_run += 1
            if diagnose_every and k % n == 0 and cyc % diagnose_every == 0:
                inputs.append(b.diagnose(run, k, c(k), task_lang, probe_lang, entropy))
    fit_after = None if stationary else [x for x in cycle if x in probe_after or x in dense]
    b.onset_and_figures(inputs, probes_per_run, ",".join(fit_after or ["all"]))
    reading = "optimizer reset every task" if reset else "optimizer continued (one warm-up)"
    what = (
        f"{cycles} cycles of {n} tasks ({','.join(cycle)})"
        if not stationary
        else f"{cycles * n} tasks of the mixture of {','.join(cycle)}"
    )
    return b.plan(
        f"{b.kind}, sizes {','.join(b.sizes)}, {what}, probe {probe_lang}, {reading}",
        cycle,
        probe_lang,
        fit_after,
        cycles,
    )
