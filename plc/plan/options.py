"""`PlanOptions`: every setting of `plc plan`, one field per flag, and the kinds that use it.

Each field declares its flag, its help, how the flag's text parses and the plan kinds that accept
it (`plc.cli` builds the `plan` command's options from these alone). A field set away from its
default for a kind that does not list it is an error naming the kinds that do. Checks of a field
alone happen at construction; checks that need the preset or the cycle happen in the kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from plc.errors import PlcError
from plc.hf.source import parse_source
from plc.memory import GPUS, gpu_spec
from plc.options import TrainOptions, arm_help, arm_label
from plc.options import parse_mitigation as arm_fields
from plc.protocol import ONSET_ALPHA, ONSET_ESTIMATOR
from plc.sizes import shape_of
from plc.store import method_tag

LANG_CODE = re.compile(r"[A-Za-z0-9_-]+")  # as `plc shard --lang` takes them
KINDS = ("continual", "stationary", "control", "transfer", "lr-grid", "checkpoints")
CYCLIC = ("continual", "stationary")
# Kinds trained or probed on text; checkpoints' continual part (--continual-from) is a cycle too.
LANGUAGES = ("continual", "stationary", "transfer", "lr-grid", "checkpoints")
CONTINUAL_FROM = ("continual", "checkpoints")  # the continual protocol's own flags
# Kinds whose runs get an onset verdict (fit-onset, figures); checkpoints' along pretraining.
JUDGED = (*CYCLIC, "control", "checkpoints")


def parse_list(text: str | None) -> tuple[str, ...] | None:
    """`a,b,c` → ('a', 'b', 'c'); None or blank → None."""
    if text is None or not text.strip():
        return None
    return tuple(x.strip() for x in text.split(",") if x.strip())


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in parse_list(text) or ())
    except ValueError as e:
        raise PlcError(f"--seeds must be integers such as 0,1,2, got {text!r}") from e


def parse_range(text: str | None) -> tuple[int, int] | None:
    """`4-9` → (4, 9); `5` → (5, 5)."""
    if text is None:
        return None
    lo, sep, hi = text.partition("-")
    try:
        return int(lo), int(hi if sep else lo)
    except ValueError as e:
        raise PlcError(f"--dense-cycles takes a range of cycles such as 4-9, got {text!r}") from e


def parse_lrs(text: str | None) -> tuple[float, ...] | None:
    try:
        return tuple(float(x) for x in parse_list(text) or ()) or None
    except ValueError as e:
        raise PlcError(f"--lrs must be numbers such as 1e-4,3e-4, got {text!r}") from e


def _opt(
    default: Any,
    flag: str,
    help: str,
    kinds: tuple[str, ...] = KINDS,
    parse: Callable[[Any], Any] | None = None,
    cli_type: type = str,
) -> Any:
    """A field with its flag (`--a/--b` for a switch; `--a,--b` for aliases), its help, the kinds
    that accept it, and `parse` from the flag's `cli_type` value to the field's."""
    meta = {"flag": flag, "help": help, "kinds": kinds, "parse": parse, "cli_type": cli_type}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class PlanOptions:
    sizes: tuple[str, ...] | None = _opt(
        None,
        "--sizes",
        "Model sizes, e.g. micro,mini (default: the preset's).",
        tuple(k for k in KINDS if k != "checkpoints"),  # checkpoints studies --models
        parse_list,
    )
    cycles: int | None = _opt(
        None,
        "--cycles",
        "Times through the cycle (default: the preset's).",
        (*CYCLIC, "checkpoints"),
        cli_type=int,
    )
    preset: str | None = _opt(
        None, "--preset", "paper, cpu, control or tiny (default: control for control, else cpu)."
    )
    cycle: tuple[str, ...] | None = _opt(
        None,
        "--cycle",
        "The training languages in order (default en,zh,fr,ja,es,de,pt,ru).",
        LANGUAGES,
        parse_list,
    )
    probe_lang: str | None = _opt(
        None,
        "--probe-lang",
        "The probe language, never trained on (default vi).",
        ("continual", "stationary", "transfer", "checkpoints"),
    )
    probe_after: tuple[str, ...] | None = _opt(
        None,
        "--probe-after",
        "Probe after these languages (default: zh,de,ru in the paper's cycle, else its last).",
        CONTINUAL_FROM,
        parse_list,
    )
    dense_cycles: tuple[int, int] | None = _opt(
        None,
        "--dense-cycles",
        "App. B's second stage: in cycles A-B also probe after --dense-after.",
        CONTINUAL_FROM,
        parse_range,
    )
    dense_after: tuple[str, ...] | None = _opt(
        None,
        "--dense-after",
        "Languages probed in the dense cycles (default zh,de,ru).",
        CONTINUAL_FROM,
        parse_list,
    )
    diagnose_every: int | None = _opt(
        None,
        "--diagnose-every",
        "Diagnose every K cycles (control: tasks; checkpoints: revisions; 0 = never).",
        (*CYCLIC, "control", "checkpoints"),
        cli_type=int,
    )
    tasks: int | None = _opt(
        None, "--tasks", "control: tasks, one Markov chain each (48).", ("control",), cli_type=int
    )
    shared: float | None = _opt(
        None,
        "--shared",
        "control: β, the transfer control — every chain and the probe share one map with "
        "probability β (0.3: an onset inside the run; markov:…,shared=β).",
        ("control",),
        cli_type=float,
    )
    seeds: tuple[int, ...] = _opt(
        (0,),
        "--seeds,--seed",
        "Seeds: one independent run per size and seed, e.g. 0,1,2 (default 0).",
        parse=parse_seeds,
    )
    weight_decay: float | None = _opt(
        None,
        "--weight-decay",
        "AdamW weight decay of every task (default: the preset's).",
        cli_type=float,
    )
    reset_optimizer: bool | None = _opt(
        None,
        "--reset-optimizer/--continue-optimizer",
        "Fresh optimizer and warm-up every task (default: continual yes, stationary no).",
        (*CYCLIC, "checkpoints"),
        cli_type=bool,
    )
    probe_repeats: int | None = _opt(
        None,
        "--probe-repeats",
        "Probe seeds per probed checkpoint (plc probe --repeats; default control 2, else 1).",
        (*CYCLIC, "control", "transfer", "checkpoints"),
        cli_type=int,
    )
    models: tuple[str, ...] | None = _opt(
        None,
        "--models",
        "checkpoints: Hugging Face models of one suite, IDs or local folders "
        "(EleutherAI/pythia-70m,EleutherAI/pythia-160m; docs/models.md).",
        ("checkpoints",),
        parse_list,
    )
    revisions: tuple[str, ...] | None = _opt(
        None,
        "--revisions",
        "checkpoints: the revisions probed along pretraining, in order (step1000,step2000; a "
        "local model's are its subfolders).",
        ("checkpoints",),
        parse_list,
    )
    tokens_per_step: int | None = _opt(
        None,
        "--tokens-per-step",
        "checkpoints: the suite's pretraining tokens per step (default: Pythia's 2,097,152 for "
        "EleutherAI/pythia-*; OLMo's revisions name their tokens).",
        ("checkpoints",),
        cli_type=int,
    )
    continual_from: str | None = _opt(
        None,
        "--continual-from",
        "checkpoints: instead, run the paper's continual protocol starting from this revision "
        "of every model (its cycle, probes and diagnoses; the continual flags apply).",
        ("checkpoints",),
    )
    lrs: tuple[float, ...] | None = _opt(
        None,
        "--lrs",
        "lr-grid: peak learning rates (default App. A's seven).",
        ("lr-grid",),
        parse_lrs,
    )
    val_every: int | None = _opt(
        None,
        "--val-every",
        "lr-grid: steps between validations (default: probe cadence).",
        ("lr-grid",),
        cli_type=int,
    )
    val_seqs: int | None = _opt(
        None,
        "--val-seqs",
        "lr-grid: validation windows (default: the probe's, or all the val split holds if fewer).",
        ("lr-grid",),
        cli_type=int,
    )
    transition: int | None = _opt(
        None,
        "--transition",
        "Gradual transitions: every task's batches move from the previous task's language to its "
        "own over its first K steps (0 = the abrupt switch, the default).",
        ("continual", "control"),
        cli_type=int,
    )
    mitigations: tuple[str, ...] | None = _opt(
        None,
        "--mitigation",
        "Run the protocol once per method (repeatable): " + arm_help() + ".",
        parse=lambda values: tuple(values) or None,  # typer gives [] for none
        cli_type=list[str],
    )
    data: str = _opt("data", "--data", "Folder of token stores.")
    out_dir: str = _opt("runs", "--out-dir", "Folder of checkpoints, metrics and figures.")
    tokenizer: str | None = _opt(
        None, "--tokenizer", "byte, qwen3 or hf:NAME (default: the preset's)."
    )
    source: str | None = _opt(
        None,
        "--source",
        "Text source for `plc shard` ({lang} is replaced; default embedded).",
        LANGUAGES,
    )
    launcher: str = _opt(
        "", "--launcher", "Prefix for training jobs, e.g. 'torchrun --nproc_per_node 8'."
    )
    nodes: int = _opt(
        1,
        "--nodes",
        "Nodes per training job: the launcher (torchrun) on each, joined by its c10d rendezvous "
        "(--format snakemake, under Slurm).",
        cli_type=int,
    )
    keep_every: int | None = _opt(
        None,
        "--keep-every",
        "Keep every K-th checkpoint of a run, those probes and diagnoses read and its last; "
        "the others go once the next task has trained from them (default: keep all).",
        (*CYCLIC, "control"),
        cli_type=int,
    )
    gpu: str = _opt("h100", "--gpu", f"GPU the costs and wall times assume: {', '.join(GPUS)}.")
    mfu: float = _opt(
        0.45,
        "--mfu",
        "Model FLOPs utilisation the costs and wall times assume (not measured here).",
        cli_type=float,
    )
    estimator: str = _opt(
        ONSET_ESTIMATOR,
        "--estimator",
        "How each run's onset is judged (plc fit-onset --estimator): noise-model or moving-average.",
        JUDGED,
    )
    alpha: float = _opt(
        ONSET_ALPHA,
        "--alpha",
        "False-alarm rate of each run's test of a rise after the minimum (fit-onset --alpha).",
        JUDGED,
        cli_type=float,
    )

    def __post_init__(self) -> None:
        for f in fields(self):  # lists from Python callers: tuples, so the options stay frozen
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        if self.sizes is not None:
            if not self.sizes:
                raise PlcError("give at least one size")
            for s in self.sizes:
                shape_of(s)
            if len(set(self.sizes)) < len(self.sizes):
                raise PlcError(f"--sizes names a size twice: {','.join(self.sizes)}")
        if (
            not self.seeds
            or any(s < 0 for s in self.seeds)
            or len(set(self.seeds)) < len(self.seeds)
        ):
            raise PlcError(
                f"--seeds must be distinct non-negative integers, got {list(self.seeds)}"
            )
        if self.cycles is not None and self.cycles <= 0:
            raise PlcError("--cycles must be positive")
        if self.tasks is not None and self.tasks < 2:
            raise PlcError(f"--tasks must be at least 2, got {self.tasks}")
        if self.probe_repeats is not None and self.probe_repeats < 1:
            raise PlcError(f"--probe-repeats must be at least 1, got {self.probe_repeats}")
        if self.diagnose_every is not None and self.diagnose_every < 0:
            raise PlcError("--diagnose-every must be ≥ 0 (0 = never)")
        if self.weight_decay is not None:
            TrainOptions(weight_decay=self.weight_decay)  # its check, once
        if self.dense_cycles is not None and self.dense_cycles[0] > self.dense_cycles[1]:
            lo, hi = self.dense_cycles
            raise PlcError(f"--dense-cycles {lo}-{hi}: the first cycle is after the last")
        for name in ("data", "out_dir"):
            if getattr(self, name).startswith("-"):
                flag = display_flag(name)
                raise PlcError(
                    f"{flag} {getattr(self, name)!r} would read as a flag in the plan's commands; "
                    f"write it ./{getattr(self, name)}"
                )
        for name in ("cycle", "probe_after", "dense_after", "probe_lang"):
            value = getattr(self, name)
            for lang in (value,) if isinstance(value, str) else value or ():
                if not LANG_CODE.fullmatch(lang):
                    raise PlcError(
                        f"{display_flag(name)}: {lang!r} is not a language code such as en or vi"
                    )
        if self.cycle is not None:
            if not self.cycle:
                raise PlcError("--cycle names no language")
            if len(set(self.cycle)) < len(self.cycle):
                raise PlcError(f"--cycle names a language twice: {','.join(self.cycle)}")
        lrs = self.lrs
        if lrs is not None and (
            not lrs or any(not lr > 0 for lr in lrs) or len(set(lrs)) < len(lrs)
        ):
            raise PlcError(f"--lrs must be distinct positive rates, got {list(lrs)}")
        if self.transition is not None and self.transition < 0:
            raise PlcError(f"--transition K must be 0 or more steps, got {self.transition}")
        if self.val_every is not None and self.val_every < 1:
            raise PlcError(f"--val-every must be positive, got {self.val_every}")
        if self.val_seqs is not None and self.val_seqs < 1:
            raise PlcError(f"--val-seqs must be positive, got {self.val_seqs}")
        if self.nodes < 1:
            raise PlcError(f"--nodes must be positive, got {self.nodes}")
        if self.nodes > 1 and "torchrun" not in self.launcher:
            raise PlcError(
                f"--nodes {self.nodes} starts torchrun on each node: give --launcher "
                "'torchrun --nproc_per_node G' (G GPUs a node)"
            )
        if self.keep_every is not None and self.keep_every < 1:
            raise PlcError(f"--keep-every must be positive, got {self.keep_every}")
        gpu_spec(self.gpu)
        if not 0 < self.mfu <= 1:
            raise PlcError(f"--mfu is a fraction in (0, 1], got {self.mfu}")
        if not 0 < self.alpha < 1:
            raise PlcError(f"--alpha is a false-alarm rate between 0 and 1, not {self.alpha:g}")
        from plc.onset.estimators import get_estimator  # numpy: only when a plan is built

        get_estimator(self.estimator)
        self._check_checkpoints()

    def _check_checkpoints(self) -> None:
        """--models, --revisions, --tokens-per-step, --continual-from alone."""
        for name in ("models", "revisions"):
            values = getattr(self, name)
            if values is not None and len(set(values)) < len(values):
                raise PlcError(f"{display_flag(name)} names one twice: {','.join(values)}")
        for model in self.models or ():
            if parse_source(model).revision is not None:
                raise PlcError(
                    f"--models {model}: name the models without a revision; the revisions go in "
                    "--revisions (or --continual-from)"
                )
        revisions = [
            *(self.revisions or ()),
            *([] if self.continual_from is None else [self.continual_from]),
        ]
        for revision in revisions:
            if not revision or "/" in revision or revision.startswith("-"):
                raise PlcError(f"{revision!r} is not a revision such as step1000")
        if self.tokens_per_step is not None and self.tokens_per_step <= 0:
            raise PlcError(f"--tokens-per-step must be positive, got {self.tokens_per_step}")
        if self.revisions is not None and self.continual_from is not None:
            raise PlcError(
                "--revisions probes along pretraining, --continual-from trains from one revision: "
                "give one of them (two plans for both)"
            )

    @classmethod
    def from_flags(cls, **values: Any) -> PlanOptions:
        """The options from the flags' values (`cli_type` each): every field parsed once."""
        kw = {}
        for f in fields(cls):
            value, parse = values[f.name], f.metadata["parse"]
            if value is not None:  # not given: the field's default
                kw[f.name] = value if parse is None else parse(value)
        return cls(**kw)

    def check_kind(self, kind: str) -> None:
        """Every field set away from its default is one `kind` uses."""
        if kind not in KINDS:
            raise PlcError(f"unknown problem {kind!r}; choose one of {', '.join(KINDS)}")
        for f in fields(self):
            kinds = f.metadata["kinds"]
            if kind not in kinds and getattr(self, f.name) != f.default:
                flag = display_flag(f.name)
                plural = "s" if len(kinds) > 1 else ""
                names = ", ".join(kinds[:-1]) + " and " * (len(kinds) > 1) + kinds[-1]
                raise PlcError(
                    f"{flag} is not for the {kind} plan ({flag} is for the {names} plan{plural})"
                )


def display_flag(name: str) -> str:
    """A field's flag as a user types it (the first of its names)."""
    flag = next(f.metadata["flag"] for f in fields(PlanOptions) if f.name == name)
    return flag.split(",")[0].split("/")[0]


def parse_mitigation(spec: str, transition: int | None = None) -> tuple[str, dict[str, Any]]:
    """`--mitigation NAME[:ARGS]` (plc.options.parse_mitigation, where the remedies are declared)
    → (run id tag, the TrainOptions fields it sets); the tag is the method's name in metric file
    names (plc.store.method_tag), '' for none. `transition` (--transition K > 0) joins every arm."""
    train = arm_fields(spec)
    if transition:
        if "transition" in train or "replay" in train:
            raise PlcError(f"--transition {transition} does not combine with --mitigation {spec}")
        train["transition"] = transition
    label = arm_label(train)
    return ("" if label == "none" else method_tag(label)), train
