"""The positive control (issue 14): a new random Markov chain per task (stores m01, m02, …), a
held-out chain as the probe language (m00), the `control` preset: loss of plasticity a laptop can
see."""

from __future__ import annotations

from plc.errors import PlcError
from plc.plan.builder import Builder
from plc.plan.jobs import Plan
from plc.plan.options import PlanOptions
from plc.protocol import CYCLE

# Probes after every task for the first CONTROL_DENSE tasks (the AUC's minimum comes early), then
# every CONTROL_EVERY tasks; diagnostics every CONTROL_EVERY tasks. Task k trains on the chain
# `markov:k`; the probe chain is `markov:0`, never trained on. Chains over all 256 byte symbols:
# measured on nano (48 tasks, one seed each), the probe AUC rose a clean +52 % by task 16 at 2.4 %
# jitter, where 64-symbol chains peaked and fell back (+9 % at task 48, 4.7 % jitter;
# examples/control).
CONTROL_DENSE = 12
CONTROL_EVERY = 4
CONTROL_PROBE = "m00"
CONTROL_CHAIN = "symbols=256"
# The transfer control (issue 22, `--shared β`): with probability β the next symbol is G(x_{t−1}),
# one permutation shared by every chain and the probe, so tasks first help the probe (the AUC
# falls) before plasticity is lost (it rises): an onset inside the run. Its chains are the
# prototype's, 64 symbols (shared/reference/positive-control.md), stored as g00 (probe), g01, …
# so they never collide with the plain control's stores in one data folder.
SHARED_CHAIN = "symbols=64"


def control(o: PlanOptions) -> Plan:
    b = Builder("control", o)
    if b.tokenizer != "byte":
        raise PlcError("the control plan's Markov chains are byte tokens; drop --tokenizer")
    tasks = b.p.cycles * len(CYCLE) if o.tasks is None else o.tasks
    every = CONTROL_EVERY if o.diagnose_every is None else o.diagnose_every
    width = max(2, len(str(tasks)))
    prefix, chain, what = "m", CONTROL_CHAIN, "a new Markov chain each"
    if o.shared is not None:
        from plc.data.markov import parse_markov  # numpy: not at `plc --help`

        prefix, chain = "g", f"{SHARED_CHAIN},shared={o.shared:g}"
        what = f"a new Markov chain each, sharing one map with probability {o.shared:g}"
        parse_markov(f"markov:0,{chain}")  # β outside [0, 1): exit 2 before any job
    chains = [f"{prefix}{k:0{width}d}" for k in range(1, tasks + 1)]
    probe = CONTROL_PROBE if o.shared is None else f"{prefix}{0:0{width}d}"
    b.shard(probe, f"markov:0,{chain}", b.p.probe_shard_tokens)
    for k, lang in enumerate(chains, 1):
        b.shard(lang, f"markov:{k},{chain}", b.p.shard_tokens)
    probed = [k for k in range(1, tasks + 1) if k <= CONTROL_DENSE or k % CONTROL_EVERY == 0]
    tags, wd = b.weight_decay()
    inputs: list[str] = []
    for run, method in b.each_run(tags):

        def c(k: int) -> str:
            return f"{run.folder}/c{k}.pt"  # noqa: B023 (used within the iteration)

        b.init(run)
        inputs.append(b.scratch_probe(run, c(0), probe))
        for k, lang in enumerate(chains, 1):
            task, stores = ["--lang", lang], [b.store(lang)]
            b.train(run, k, c(k - 1), c(k), task, stores, {**wd, **method}, earlier=chains[: k - 1])
            if k in probed:
                inputs.append(b.probe(run, k, c(k), lang, probe))
            if every and k % every == 0:
                inputs.append(b.diagnose(run, k, c(k), lang, probe, probe))
    b.onset_and_figures(inputs, len(probed), "all", x="task")
    return b.plan(
        f"control, sizes {','.join(b.sizes)}, {tasks} tasks of {what} "
        f"({chains[0]}…{chains[-1]}), probe chain {probe} after tasks 1-{CONTROL_DENSE} "
        f"and every {CONTROL_EVERY}th",
        chains,
        probe,
        None,
    )
