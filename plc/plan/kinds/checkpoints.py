"""Plasticity along a model suite's pretraining (issue 32): the probe on every revision of every model.

A suite such as Pythia (one data order, many sizes, checkpoints every 1,000 steps as Hub
revisions `step1000` …) gives the series of probe AUCs along pretraining without paying for it.
Every (model, revision) is written as a plc checkpoint that is a point of its run's pretraining
(`plc init --from hf:ID@REV --along-pretraining`: task index = the revision's step, tokens seen =
step × tokens per step), probed on the probe language with the preset's budget and cadence, and
diagnosed; fit-onset then finds where each model's AUC turns up along pretraining and fits that
onset against size (eq. 2 on a public suite), and the figures put pretraining tokens on the x-axis.

`--continual-from REV` writes instead the paper's continual protocol started from revision REV of
every model (the continual kind's cycle, probes and diagnoses; its flags apply).
"""

from __future__ import annotations

from plc.errors import PlcError
from plc.hf.source import Source, parse_source, tokens_per_step_of
from plc.plan.builder import Builder
from plc.plan.jobs import Plan, Run
from plc.plan.kinds.continual import cyclic
from plc.plan.options import PlanOptions, display_flag
from plc.protocol import ENTROPY_LANG, PRETRAIN_LANG, PROBE_LANG

# Flags of the continual protocol: only with --continual-from.
CONTINUAL_ONLY = (
    "cycles",
    "cycle",
    "probe_after",
    "dense_cycles",
    "dense_after",
    "reset_optimizer",
    "weight_decay",
    "mitigations",
)


def checkpoints(o: PlanOptions) -> Plan:
    b = Builder("checkpoints", o)
    if o.models is None:
        raise PlcError("plan checkpoints needs --models (Hugging Face IDs or local folders)")
    models = {parse_source(m).model_name: parse_source(m) for m in o.models}
    if len(models) < len(o.models):
        raise PlcError(f"--models: two models share a name ({','.join(o.models)})")
    b.sizes = list(models)
    first = o.continual_from or (o.revisions or [None])[0]
    b.tokenizer = o.tokenizer or Source(o.models[0], first).spec
    if o.continual_from is not None:
        b.hf_models = {name: src.name for name, src in models.items()}
        b.start_revision = o.continual_from
        return cyclic(b, tags=[o.continual_from])
    if o.revisions is None:
        raise PlcError("plan checkpoints needs --revisions (or --continual-from REV)")
    for name in CONTINUAL_ONLY:
        if getattr(o, name) != PlanOptions.__dataclass_fields__[name].default:
            raise PlcError(
                f"{display_flag(name)} is a flag of the continual protocol: give it with "
                "--continual-from REV"
            )
    return along_pretraining(b, models, o.revisions)


def _points(
    src: Source, revisions: tuple[str, ...], tokens_per_step: int | None
) -> list[tuple[str, int]]:
    """(revision, step) of each revision, in pretraining order; each must name its step and have
    a token count (from tokens per step, or its name)."""
    points = []
    for revision in revisions:
        rev = Source(src.name, revision)
        if rev.step is None:
            raise PlcError(
                f"--revisions {revision}: names no pretraining step (revisions such as "
                "step1000 or step1000-tokens4B)"
            )
        if tokens_per_step is None and rev.tokens_in_name is None:
            raise PlcError(
                f"{rev.spec}: give the suite's --tokens-per-step (its revisions do not name "
                "their tokens)"
            )
        points.append((revision, rev.step))
    steps = [s for _, s in points]
    if steps != sorted(steps):
        raise PlcError(f"--revisions must follow pretraining (steps {steps} are not in order)")
    return points


def along_pretraining(b: Builder, models: dict[str, Source], revisions: tuple[str, ...]) -> Plan:
    o = b.o
    probe_lang = PROBE_LANG if o.probe_lang is None else o.probe_lang
    source = "embedded" if o.source is None else o.source
    diagnose_every = 1 if o.diagnose_every is None else o.diagnose_every
    entropy = ENTROPY_LANG
    # Only the probe trains (on the probe language); entropy reads validation windows alone.
    b.shard(probe_lang, source, b.p.probe_shard_tokens)
    if diagnose_every and entropy != probe_lang:
        b.shard(entropy, source, b.p.probe_shard_tokens)
    inputs: list[str] = []
    for name, src in models.items():
        per_step = o.tokens_per_step or tokens_per_step_of(src.name)
        points = _points(src, revisions, per_step)
        for seed in b.seeds:
            run = Run(f"{name}-s{seed}", name, seed, f"{b.out_dir}/{name}-s{seed}")
            b.runs.append(run)
            for k, (revision, step) in enumerate(points):
                ckpt = b.pretraining_point(run, Source(src.name, revision), step, per_step)
                inputs.append(b.probe(run, step, ckpt, PRETRAIN_LANG, probe_lang))
                if k == 0:
                    inputs.append(b.scratch_probe(run, ckpt, probe_lang))
                if diagnose_every and k % diagnose_every == 0:
                    inputs.append(b.diagnose(run, step, ckpt, PRETRAIN_LANG, probe_lang, entropy))
    b.onset_and_figures(inputs, len(revisions), PRETRAIN_LANG, x="tokens")
    return b.plan(
        f"checkpoints: {len(models)} models ({','.join(models)}) × {len(revisions)} revisions "
        f"of pretraining ({revisions[0]} … {revisions[-1]}), probe {probe_lang}",
        (PRETRAIN_LANG,),
        probe_lang,
        (PRETRAIN_LANG,),
    )
