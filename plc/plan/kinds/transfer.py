"""Table III: from initialisation, one task of each language, each followed by a probe."""

from __future__ import annotations

from plc.plan.builder import Builder
from plc.plan.jobs import INPUTS, Plan
from plc.plan.options import PlanOptions


def transfer(o: PlanOptions) -> Plan:
    b = Builder("transfer", o)
    cycle, probe_lang, source = b.languages()
    b.shards(cycle, probe_lang, source)
    tags, wd = b.weight_decay()
    inputs: list[str] = []
    for run, method in b.each_run(tags):
        c0 = b.init(run)
        inputs.append(b.scratch_probe(run, c0, probe_lang))
        for lang in cycle:
            out = f"{run.folder}/c1-{lang}.pt"
            b.train(run, 1, c0, out, ["--lang", lang], [b.store(lang)], {**wd, **method})
            inputs.append(b.probe(run, 1, out, lang, probe_lang))
    for target in (f"{b.out_dir}/transfer.csv", f"{b.figures}/transfer.png"):
        b.analysis(target, ["transfer-table", INPUTS, "--out", target, "--force"], inputs)
    return b.plan(
        f"transfer (Table III), sizes {','.join(b.sizes)}: from initialisation one task of each "
        f"of {','.join(cycle)}, then a probe on {probe_lang}",
        cycle,
        probe_lang,
        None,
    )
