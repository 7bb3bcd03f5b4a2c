"""The protocol as a graph of plc commands: rendered as a Makefile (`plc plan`) or run (`plc demo`).

One description serves both, so the demo cannot drift from what a Makefile would do: every job
is the argument list of a real `plc` subcommand, the files it reads and the file it writes.

Plan kinds (`PROBLEMS`):
- `continual` (§IV-A): cycles of one task per language, probes after chosen languages, optionally
  after more languages in a band of cycles (App. B's second stage: `dense_cycles`);
- `stationary` (§V-B): every task samples the mixture of the cycle's languages, a probe after each;
  the optimizer and its schedule continue from task to task (one warm-up for the run) unless
  `reset_optimizer`;
- `control` (issue 14): a new random Markov chain per task (stores m01, m02, …), a held-out chain
  as the probe language (m00), the `control` preset: loss of plasticity a laptop can see;
- `transfer` (Table III): from initialisation, one task of each language, each followed by a probe;
- `lr-grid` (App. A): one task of the cycle's first language per (size, learning rate), validated
  during training, then `plc fit-lr`.

Every run is a (size, seed) pair; its id is `<size>-s<seed>` plus what else differs from the
preset (`-wd0.1`, `-lr0.003`, `-cont`/`-reset`), and its checkpoints live in `<out_dir>/<run id>/`.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from plc.errors import PlcError
from plc.protocol import (
    CYCLE,
    ENTROPY_LANG,
    MIN_FIT_POINTS,
    PAPER_PROBE_AFTER,
    PLOT_KINDS,
    PROBE_LANG,
)
from plc.sizes import shape_of

X_KINDS = ("auc", "correlates", "dormant-layers", "entropy")  # the figures `plc plot --x` sets

STAGES = ("data", "init", "train", "probe", "diagnose", "analysis")
PROBLEMS = ("continual", "stationary", "control", "transfer", "lr-grid")
INPUTS = "{inputs}"  # in an argv: the job's input files (`$^` in the Makefile)

# The control (issue 14): probes after every task for the first CONTROL_DENSE tasks (the AUC's
# minimum comes early), then every CONTROL_EVERY tasks; diagnostics every CONTROL_EVERY tasks.
# Task k trains on the chain `markov:k`; the probe chain is `markov:0`, never trained on. Chains
# over all 256 byte symbols: measured on nano (48 tasks, one seed each), the probe AUC rose a clean
# +52 % by task 16 at 2.4 % jitter, where 64-symbol chains peaked and fell back (+9 % at task 48,
# 4.7 % jitter; examples/control).
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
CONTROL_REPEATS = 2  # probe seeds per probed checkpoint (the jitter between checkpoints dominates)
# App. A's grid of peak learning rates.
PAPER_LR_GRID = (1e-4, 3e-4, 5e-4, 8e-4, 1e-3, 3e-3, 5e-3)


@dataclass
class Job:
    target: str  # the file the job writes: the Make target
    argv: list[str]  # arguments of `plc`
    deps: list[str] = field(default_factory=list)
    stage: str = ""  # data, init, train, probe, diagnose, analysis
    launch: bool = False  # a training job: run under the launcher (torchrun) if one is given
    stdout: bool = False  # the command prints its result: its standard output is the target

    def command(self) -> list[str]:
        """The `plc` arguments with the input files spliced in."""
        out: list[str] = []
        for arg in self.argv:
            out.extend(self.deps) if arg == INPUTS else out.append(arg)
        return out


@dataclass
class Plan:
    problem: str
    sizes: list[str]
    cycles: int
    preset: str
    jobs: list[Job]
    data: str
    out_dir: str
    metrics: str
    figures: str
    seed: int  # the first of `seeds`: the token stores are sharded with it
    launcher: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    cycle: tuple[str, ...] = CYCLE
    probe_lang: str = PROBE_LANG
    description: str = ""  # one line for the Makefile's header

    @property
    def n_tasks(self) -> int:
        """Training tasks of the whole plan."""
        return sum(job.stage == "train" for job in self.jobs)

    def makefile(self) -> str:
        return render_makefile(self)


def metric_file(
    metrics: str, kind: str, run_id: str, task: int, lang: str, suffix: str = ""
) -> str:
    from plc.store import metric_path

    return str(metric_path(metrics, kind, run_id, task, lang, suffix or None))


def parse_list(text: str | None) -> list[str] | None:
    """`a,b,c` → ['a', 'b', 'c']; None or blank → None."""
    if text is None or not text.strip():
        return None
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in parse_list(text) or []]
    except ValueError as e:
        raise PlcError(f"--seeds must be integers such as 0,1,2, got {text!r}") from e


def parse_range(text: str | None, flag: str) -> tuple[int, int] | None:
    """`4-9` → (4, 9); `5` → (5, 5)."""
    if text is None:
        return None
    lo, sep, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi if sep else lo)
    except ValueError as e:
        raise PlcError(f"{flag} takes a range of cycles such as 4-9, got {text!r}") from e
    if first > last:
        raise PlcError(f"{flag} {text}: the first cycle is after the last")
    return first, last


def parse_lrs(text: str | None) -> list[float] | None:
    try:
        return [float(x) for x in parse_list(text) or []] or None
    except ValueError as e:
        raise PlcError(f"--lrs must be numbers such as 1e-4,3e-4, got {text!r}") from e


def can_shard(source: str, lang: str) -> str | None:
    """None if `source` can make the store of `lang`, else why not."""
    if source.startswith(("hf:", "markov:")):
        return None
    if source == "embedded":
        from plc.data.sources import embedded_languages

        if lang in embedded_languages():
            return None
        return f"the embedded corpus has no {lang!r}"
    path = source.replace("{lang}", lang)
    return None if Path(path).exists() else f"{path} does not exist"


def build_plan(
    problem: str = "continual",
    *,
    preset: str | None = None,
    sizes: list[str] | None = None,
    cycles: int | None = None,
    probe_after: list[str] | None = None,
    diagnose_every: int | None = None,
    data: str = "data",
    out_dir: str = "runs",
    seed: int = 0,
    seeds: list[int] | None = None,
    tokenizer: str | None = None,
    source: str | None = None,
    launcher: str = "",
    cycle: Sequence[str] | None = None,
    probe_lang: str | None = None,
    dense_cycles: tuple[int, int] | None = None,
    dense_after: Sequence[str] | None = None,
    weight_decay: float | None = None,
    reset_optimizer: bool | None = None,
    probe_repeats: int | None = None,
    tasks: int | None = None,
    lrs: Sequence[float] | None = None,
    val_every: int | None = None,
    mitigations: Sequence[str] | None = None,
    shared: float | None = None,
) -> Plan:
    """The jobs of one plan kind (see the module doc) for several model sizes and seeds.

    Sizes, cycles, tokenizer and preset default to the problem's preset (control: `control`, the
    others: `cpu`). `cycle` and `probe_lang` replace the paper's languages; every language needs a
    store in `data` or a `source` that can make one. Continual: probes after `probe_after` (default
    the cycle's last language) and, in the cycles `dense_cycles` (first, last), also after
    `dense_after` (default zh,de,ru). Diagnostics every `diagnose_every` cycles (control: tasks;
    0 = never). `weight_decay` reaches every training task (not the probes: the instrument stays
    the preset's). `reset_optimizer` None takes the problem's reading: reset for continual,
    continued for stationary. `probe_repeats` > 1 asks each probe for that many probe seeds
    (default: 2 for the control, else 1). `shared` β makes the control the transfer control
    (`markov:…,shared=β`). `mitigations` (`cbp:1e-4`, `none`, …; see
    parse_mitigation) run the same protocol once per method, each run id carrying its method, the
    probes and diagnoses identical.
    """
    from plc.presets import get_preset

    if problem not in PROBLEMS:
        raise PlcError(f"unknown problem {problem!r}; choose one of {', '.join(PROBLEMS)}")
    p = get_preset(preset or ("control" if problem == "control" else "cpu"))
    sizes = list(p.sizes) if sizes is None else list(sizes)
    if not sizes:
        raise PlcError("give at least one size")
    for s in sizes:
        shape_of(s)
    if len(set(sizes)) < len(sizes):
        raise PlcError(f"--sizes names a size twice: {','.join(sizes)}")
    seeds = [seed] if seeds is None else list(seeds)
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise PlcError(f"--seeds must be distinct non-negative integers, got {seeds}")
    if probe_repeats is not None and probe_repeats < 1:
        raise PlcError(f"--probe-repeats must be at least 1, got {probe_repeats}")
    if diagnose_every is not None and diagnose_every < 0:
        raise PlcError("--diagnose-every must be ≥ 0 (0 = never)")
    if weight_decay is not None and not weight_decay >= 0:
        raise PlcError(f"--weight-decay must be ≥ 0, got {weight_decay}")
    tokenizer = p.tokenizer if tokenizer is None else tokenizer
    if problem != "continual" and (dense_cycles is not None or dense_after is not None):
        raise PlcError("--dense-cycles is for the continual plan (probes after chosen languages)")
    if problem not in ("continual", "stationary") and reset_optimizer is not None:
        raise PlcError(f"the {problem} plan trains each task from a fresh optimizer")
    if problem != "lr-grid" and (lrs is not None or val_every is not None):
        raise PlcError("--lrs and --val-every are for the lr-grid plan")
    if problem != "control" and tasks is not None:
        raise PlcError("--tasks is for the control plan (the others count --cycles)")
    if problem != "control" and shared is not None:
        raise PlcError("--shared is for the control plan (its tasks are Markov chains)")
    if problem in ("transfer", "lr-grid"):  # one task per run from c0: no cycles, no diagnostics
        unused = [("--cycles", cycles), ("--probe-after", probe_after)]
        unused += [("--diagnose-every", diagnose_every)]
        if problem == "lr-grid":  # and no probes
            unused += [("--probe-lang", probe_lang), ("--probe-repeats", probe_repeats)]
        for flag, value in unused:
            if value is not None:
                raise PlcError(f"{flag} is not for the {problem} plan")

    if probe_repeats is None:
        probe_repeats = CONTROL_REPEATS if problem == "control" else 1
    methods = [parse_mitigation(m) for m in (mitigations or ["none"])]
    if len({tag for tag, _ in methods}) < len(methods):
        raise PlcError(f"--mitigation names a method twice: {','.join(mitigations)}")
    same = [
        t
        for t, flags in methods
        if flags[:1] == ["--weight-decay"] and float(flags[1]) == p.weight_decay
    ]
    if same and ("", []) in methods:
        raise PlcError(
            f"--mitigation {same[0][:2]}:{same[0][2:]} is the {p.name} preset's own weight decay: "
            "the same runs as none; drop it or give another λ"
        )
    b = _Builder(p, data, out_dir, tokenizer, seeds[0], launcher, probe_repeats, methods)
    if problem == "control":
        return b.control(
            sizes,
            seeds,
            tasks,
            cycles,
            cycle,
            probe_lang,
            source,
            diagnose_every,
            weight_decay,
            shared,
        )
    cycle = tuple(CYCLE if cycle is None else cycle)
    probe_lang = PROBE_LANG if probe_lang is None else probe_lang
    _check_languages(cycle, probe_lang)
    source = "embedded" if source is None else source
    if problem == "lr-grid":
        return b.lr_grid(sizes, seeds, cycle, source, lrs, val_every, weight_decay)
    if problem == "transfer":
        return b.transfer(sizes, seeds, cycle, probe_lang, source, weight_decay)
    cycles = p.cycles if cycles is None else cycles
    if cycles <= 0:
        raise PlcError("--cycles must be positive")
    return b.cyclic(
        problem,
        sizes,
        seeds,
        cycles,
        cycle,
        probe_lang,
        source,
        probe_after,
        dense_cycles,
        dense_after,
        1 if diagnose_every is None else diagnose_every,
        weight_decay,
        reset_optimizer,
    )


def _check_languages(cycle: Sequence[str], probe_lang: str) -> None:
    if not cycle:
        raise PlcError("--cycle names no language")
    if len(set(cycle)) < len(cycle):
        raise PlcError(f"--cycle names a language twice: {','.join(cycle)}")
    if probe_lang in cycle:
        raise PlcError(
            f"--probe-lang {probe_lang} is in the cycle {','.join(cycle)}: the probe language "
            "must be one the model never trains on"
        )


def _tag(value: float) -> str:
    return f"{value:g}"


# --mitigation NAME[:ARGS] → the train-task flags (plc.mitigations; defaults of the reference code)
MITIGATIONS = {
    "none": ([], None),
    "wd": (["--weight-decay"], None),
    "clip": (["--clip-weights"], "1"),
    "l2init": (["--l2-init"], "0.01"),
    "sp": (["--shrink-perturb"], None),
    "sp-step": (["--shrink-perturb-at", "step", "--shrink-perturb"], None),
    "cbp": (["--cbp"], "0.0001"),
    "redo": (["--redo"], "0.025"),
}


def parse_mitigation(spec: str) -> tuple[str, list[str]]:
    """`cbp:1e-4`, `sp:0.8,0.01`, `redo:0.025,100` (τ, every K steps), `none` → (run id tag,
    train-task flags); the values are checked as the flags would be (one-line PlcError)."""
    name, _, args = spec.partition(":")
    if name not in MITIGATIONS:
        raise PlcError(f"unknown --mitigation {name!r}; choose one of {', '.join(MITIGATIONS)}")
    flags, default = MITIGATIONS[name]
    if name == "none":
        if args:
            raise PlcError("--mitigation none takes no arguments")
        return "", []
    args = args or default
    if args is None:
        raise PlcError(f"--mitigation {name} needs its value, e.g. {name}:0.1")
    tag = name + args.replace(",", "_")
    if name == "redo" and "," in args:
        tau, every = args.split(",", 1)
        flags, args = ["--redo-every", every, "--redo"], tau
    values = [*flags, args]
    from plc.options import TrainOptions

    names = {f.metadata["flag"]: f.name for f in fields(TrainOptions)}
    try:
        TrainOptions(
            **{
                names[flag]: _parse_value(value)
                for flag, value in zip(values[::2], values[1::2], strict=True)
            }
        )
    except (TypeError, ValueError) as e:
        raise PlcError(f"--mitigation {spec!r}: {e}") from e
    return tag, values


def _parse_value(text: str) -> float | int | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class _Builder:
    """The jobs every plan kind shares: stores, initial checkpoints, tasks, probes, diagnostics."""

    def __init__(self, p, data, out_dir, tokenizer, data_seed, launcher, probe_repeats, methods):
        self.p = p
        self.methods = methods  # (run id tag, train-task flags) per --mitigation
        self.data, self.out_dir = data, out_dir
        self.metrics, self.figures = f"{out_dir}/metrics", f"{out_dir}/figures"
        self.tokenizer = tokenizer
        self.data_seed = data_seed
        self.launcher = launcher
        self.probe_repeats = probe_repeats
        self.common = ["--preset", p.name]
        self.jobs: list[Job] = []

    # ---------------------------------------------------------------------------- pieces

    def store(self, lang: str) -> str:
        return f"{self.data}/{lang}.zarr/zarr.json"

    def shard(self, lang: str, source: str, budget: tuple[int | None, int | None]) -> None:
        """A shard job for `lang`, or none if its store exists and `source` cannot make it."""
        why = can_shard(source, lang)
        if why is not None:
            if Path(self.store(lang)).exists():
                return  # an existing store is an input of the plan, not one of its jobs
            raise PlcError(
                f"no token store {self.data}/{lang}.zarr and --source {source} cannot make one "
                f"({why}); shard it first or give a --source that has it"
            )
        train, val = budget
        argv = ["shard", "--lang", lang, "--source", source.replace("{lang}", lang)]
        argv += ["--tokenizer", self.tokenizer, "--out", f"{self.data}/{lang}.zarr"]
        argv += [] if train is None else ["--train-tokens", str(train)]
        argv += [] if val is None else ["--val-tokens", str(val)]
        argv += ["--seed", str(self.data_seed), "--force"]
        self.jobs.append(Job(self.store(lang), argv, stage="data"))

    def shards(self, cycle: Sequence[str], probe_lang: str | None, source: str) -> None:
        for lang in cycle:
            self.shard(lang, source, self.p.shard_tokens)
        if probe_lang is not None:
            self.shard(probe_lang, source, self.p.probe_shard_tokens)

    def init(self, size: str, seed: int, run_id: str, out: str) -> str:
        argv = ["init", "--size", size, "--preset", self.p.name, "--tokenizer", self.tokenizer]
        argv += ["--seed", str(seed), "--run-id", run_id, "--out", out, "--force"]
        self.jobs.append(Job(out, argv, stage="init"))
        return out

    def train(self, src: str, out: str, task: list[str], deps: list[str], extra: list[str]) -> None:
        argv = ["train-task", *task, "--ckpt", src, "--data", self.data, "--out", out]
        argv += [*self.common, *extra, "--metrics", self.metrics, "--force"]
        self.jobs.append(Job(out, argv, deps=[src, *deps], stage="train", launch=True))

    def probe(self, ckpt: str, run_id: str, task: int, task_lang: str, probe_lang: str) -> str:
        out = metric_file(self.metrics, "probe", run_id, task, task_lang, probe_lang)
        self._probe(ckpt, probe_lang, out, [])
        return out

    def scratch_probe(self, c0: str, run_id: str, probe_lang: str) -> str:
        out = metric_file(self.metrics, "probe", run_id, 0, "", f"{probe_lang}-scratch")
        self._probe(c0, probe_lang, out, ["--from-scratch"])
        return out

    def _probe(self, ckpt: str, lang: str, out: str, extra: list[str]) -> None:
        repeats = ["--repeats", str(self.probe_repeats)] if self.probe_repeats > 1 else []
        argv = ["probe", ckpt, "--data", self.data, "--lang", lang, *self.common, *extra]
        argv += [*repeats, "--metrics", self.metrics, "--force"]
        deps = [ckpt, self.store(lang)]
        self.jobs.append(Job(out, argv, deps=deps, stage="probe", launch=True))

    def diagnose(
        self, ckpt: str, run_id: str, task: int, task_lang: str, probe_lang: str, entropy: str
    ) -> str:
        out = metric_file(self.metrics, "diagnose", run_id, task, task_lang)
        argv = ["diagnose", ckpt, "--data", self.data, *self.common]
        argv += [] if probe_lang == PROBE_LANG else ["--dormant-lang", probe_lang]
        argv += [] if entropy == ENTROPY_LANG else ["--entropy-lang", entropy]
        argv += ["--metrics", self.metrics, "--force"]
        deps = [ckpt, *dict.fromkeys([self.store(probe_lang), self.store(entropy)])]
        self.jobs.append(Job(out, argv, deps=deps, stage="diagnose"))
        return out

    def analysis(self, target: str, argv: list[str], deps: list[str], stdout: bool = False) -> None:
        self.jobs.append(Job(target, argv, deps=list(deps), stage="analysis", stdout=stdout))

    def onset_and_figures(
        self, inputs: list[str], n_sizes: int, probes_per_run: int, probe_after: str, x: str = ""
    ) -> None:
        """fit-onset and the figures over every probe and diagnose file; `x` the figures' axis
        where cycles of eight mean nothing (the control: task)."""
        # The fits of Table V need three sizes; with fewer the plan still finds each run's onset.
        # An onset needs two probes per run, the centred moving average of App. B three.
        fits = "all" if n_sizes >= MIN_FIT_POINTS else "none"
        onset_args = ["--probe-after", probe_after]
        onset_args += ["--window", "3" if probes_per_run >= 3 else "1"]
        if probes_per_run >= 2:
            onset = f"{self.out_dir}/onset.parquet"
            argv = ["fit-onset", INPUTS, "--model", fits, *onset_args, "--out", onset, "--force"]
            self.analysis(onset, argv, inputs)
        diagnosed = any(j.stage == "diagnose" for j in self.jobs)
        for kind in PLOT_KINDS:
            if kind in ("probing", "onset") and probes_per_run < 2:
                continue
            if kind in ("correlates", "dormant-layers", "entropy") and not diagnosed:
                continue  # e.g. a control shorter than its diagnose cadence
            if kind == "onset" and fits == "none":
                continue
            fig = f"{self.figures}/{kind}.png"
            extra = onset_args if kind in ("probing", "onset", "correlates") else []
            extra += ["--x", x] if x and kind in X_KINDS else []
            self.analysis(fig, ["plot", kind, INPUTS, *extra, "--out", fig, "--force"], inputs)

    def plan(self, problem, sizes, seeds, cycles, cycle, probe_lang, description) -> Plan:
        return Plan(
            problem,
            list(sizes),
            cycles,
            self.p.name,
            self.jobs,
            self.data,
            self.out_dir,
            self.metrics,
            self.figures,
            seeds[0],
            self.launcher,
            seeds=list(seeds),
            cycle=tuple(cycle),
            probe_lang=probe_lang,
            description=description,
        )

    def runs(self, sizes, seeds, tags: list[str]) -> list[tuple[str, int, str, str, list[str]]]:
        """(size, seed, run id, checkpoint folder, the method's train-task flags) of every run:
        methods outermost, then sizes, then seeds."""
        out = []
        for method, flags in self.methods:
            for size in sizes:
                for seed in seeds:
                    run_id = "-".join([size, f"s{seed}", *tags, *([method] if method else [])])
                    out.append((size, seed, run_id, f"{self.out_dir}/{run_id}", flags))
        return out

    def wd_tags(self, weight_decay: float | None) -> tuple[list[str], list[str]]:
        """(run id tags, train-task flags) of a weight decay other than the preset's."""
        if weight_decay is None:
            return [], []
        flags = ["--weight-decay", _tag(weight_decay)]
        return ([] if weight_decay == self.p.weight_decay else [f"wd{_tag(weight_decay)}"]), flags

    # ---------------------------------------------------------------------------- kinds

    def cyclic(
        self,
        problem,
        sizes,
        seeds,
        cycles,
        cycle,
        probe_lang,
        source,
        probe_after,
        dense_cycles,
        dense_after,
        diagnose_every,
        weight_decay,
        reset_optimizer,
    ) -> Plan:
        """continual (one task per language) or stationary (every task the mixture)."""
        n = len(cycle)
        stationary = problem == "stationary"
        probe_after = [cycle[-1]] if probe_after is None else list(probe_after)
        for lang in probe_after:
            if lang not in cycle:
                raise PlcError(f"--probe-after {lang!r} is not in the cycle {','.join(cycle)}")
        dense: set[str] = set()
        if dense_cycles is not None:
            lo, hi = dense_cycles
            if lo < 1 or hi > cycles:
                raise PlcError(f"--dense-cycles {lo}-{hi} is outside the plan's cycles 1-{cycles}")
            if dense_after is None:
                dense_after = [x for x in PAPER_PROBE_AFTER if x in cycle]
            for lang in dense_after:
                if lang not in cycle:
                    raise PlcError(f"--dense-after {lang!r} is not in the cycle {','.join(cycle)}")
            if not dense_after:
                raise PlcError("--dense-cycles needs --dense-after: zh,de,ru are not in the cycle")
            dense = set(dense_after)
        elif dense_after is not None:
            raise PlcError("--dense-after needs --dense-cycles (the cycles to probe densely)")
        entropy = ENTROPY_LANG if ENTROPY_LANG in cycle else probe_lang
        self.shards(cycle, probe_lang, source)

        # The stationary problem is one training run (§V-B): by default the optimizer and its
        # schedule continue from task to task; the continual problem resets both (§IV-B).
        reset = not stationary if reset_optimizer is None else reset_optimizer
        tags, wd_flags = self.wd_tags(weight_decay)
        if reset != (not stationary):
            tags.append("reset" if reset else "cont")
        inputs: list[str] = []
        probes_per_run = 0
        for size, seed, run_id, folder, method in self.runs(sizes, seeds, tags):

            def c(k: int) -> str:
                return f"{folder}/c{k}.pt"  # noqa: B023 (used within the iteration)

            self.init(size, seed, run_id, c(0))
            inputs.append(self.scratch_probe(c(0), run_id, probe_lang))
            probes_per_run = 0
            for k in range(1, cycles * n + 1):
                lang, cyc = cycle[(k - 1) % n], (k - 1) // n + 1
                # --continue from c0 starts the run's optimizer and schedule; later ones carry on.
                extra = wd_flags + method + ([] if reset else ["--continue"])
                if stationary:
                    task = ["--mix", ",".join(cycle)]
                    self.train(c(k - 1), c(k), task, [self.store(x) for x in cycle], extra)
                    task_lang, probed = "mix", True
                else:
                    self.train(c(k - 1), c(k), ["--lang", lang], [self.store(lang)], extra)
                    in_band = dense_cycles is not None and lo <= cyc <= hi
                    task_lang, probed = lang, lang in probe_after or (in_band and lang in dense)
                if probed:
                    inputs.append(self.probe(c(k), run_id, k, task_lang, probe_lang))
                    probes_per_run += 1
                if diagnose_every and k % n == 0 and cyc % diagnose_every == 0:
                    inputs.append(self.diagnose(c(k), run_id, k, task_lang, probe_lang, entropy))
        if stationary:
            fit_after = "all"
        else:
            fit_after = ",".join(x for x in cycle if x in probe_after or x in dense)
        self.onset_and_figures(inputs, len(sizes), probes_per_run, fit_after)
        reading = "optimizer reset every task" if reset else "optimizer continued (one warm-up)"
        what = (
            f"{cycles} cycles of {n} tasks ({','.join(cycle)})"
            if not stationary
            else f"{cycles * n} tasks of the mixture of {','.join(cycle)}"
        )
        return self.plan(
            problem,
            sizes,
            seeds,
            cycles,
            cycle,
            probe_lang,
            f"{problem}, sizes {','.join(sizes)}, {what}, probe {probe_lang}, {reading}",
        )

    def control(
        self,
        sizes,
        seeds,
        tasks,
        cycles,
        cycle,
        probe_lang,
        source,
        diagnose_every,
        weight_decay,
        shared=None,
    ) -> Plan:
        """A new random Markov chain per task; the held-out chain `markov:0` is the probe. With
        `shared` β, every chain and the probe also share one map (the transfer control)."""
        for flag, value in (
            ("--cycles", cycles),
            ("--cycle", cycle),
            ("--probe-lang", probe_lang),
            ("--source", source),
        ):
            if value is not None:
                raise PlcError(f"{flag} is not for the control plan: its tasks are Markov chains")
        if self.tokenizer != "byte":
            raise PlcError("the control plan's Markov chains are byte tokens; drop --tokenizer")
        tasks = self.p.cycles * len(CYCLE) if tasks is None else tasks
        if tasks < 2:
            raise PlcError(f"--tasks must be at least 2, got {tasks}")
        every = CONTROL_EVERY if diagnose_every is None else diagnose_every
        width = max(2, len(str(tasks)))
        prefix, chain, what = "m", CONTROL_CHAIN, "a new Markov chain each"
        if shared is not None:
            from plc.data.markov import parse_markov

            prefix, chain = "g", f"{SHARED_CHAIN},shared={shared:g}"
            what = f"a new Markov chain each, sharing one map with probability {shared:g}"
            parse_markov(f"markov:0,{chain}")  # β outside [0, 1): exit 2 before any job
        chains = [f"{prefix}{k:0{width}d}" for k in range(1, tasks + 1)]
        probe = CONTROL_PROBE if shared is None else f"{prefix}{0:0{width}d}"
        self.shard(probe, f"markov:0,{chain}", self.p.probe_shard_tokens)
        for k, lang in enumerate(chains, 1):
            self.shard(lang, f"markov:{k},{chain}", self.p.shard_tokens)
        probed = [k for k in range(1, tasks + 1) if k <= CONTROL_DENSE or k % CONTROL_EVERY == 0]
        tags, wd_flags = self.wd_tags(weight_decay)
        inputs: list[str] = []
        for size, seed, run_id, folder, method in self.runs(sizes, seeds, tags):

            def c(k: int) -> str:
                return f"{folder}/c{k}.pt"  # noqa: B023 (used within the iteration)

            self.init(size, seed, run_id, c(0))
            inputs.append(self.scratch_probe(c(0), run_id, probe))
            for k, lang in enumerate(chains, 1):
                self.train(c(k - 1), c(k), ["--lang", lang], [self.store(lang)], wd_flags + method)
                if k in probed:
                    inputs.append(self.probe(c(k), run_id, k, lang, probe))
                if every and k % every == 0:
                    inputs.append(self.diagnose(c(k), run_id, k, lang, probe, probe))
        self.onset_and_figures(inputs, len(sizes), len(probed), "all", x="task")
        return self.plan(
            "control",
            sizes,
            seeds,
            1,
            chains,
            probe,
            f"control, sizes {','.join(sizes)}, {tasks} tasks of {what} "
            f"({chains[0]}…{chains[-1]}), probe chain {probe} after tasks 1-{CONTROL_DENSE} "
            f"and every {CONTROL_EVERY}th",
        )

    def transfer(self, sizes, seeds, cycle, probe_lang, source, weight_decay) -> Plan:
        """Table III: from initialisation, one task of each language, then a probe."""
        self.shards(cycle, probe_lang, source)
        tags, wd_flags = self.wd_tags(weight_decay)
        inputs: list[str] = []
        for size, seed, run_id, folder, method in self.runs(sizes, seeds, tags):
            c0 = self.init(size, seed, run_id, f"{folder}/c0.pt")
            inputs.append(self.scratch_probe(c0, run_id, probe_lang))
            for lang in cycle:
                out = f"{folder}/c1-{lang}.pt"
                self.train(c0, out, ["--lang", lang], [self.store(lang)], wd_flags + method)
                inputs.append(self.probe(out, run_id, 1, lang, probe_lang))
        for target in (f"{self.out_dir}/transfer.csv", f"{self.figures}/transfer.png"):
            self.analysis(target, ["transfer-table", INPUTS, "--out", target, "--force"], inputs)
        return self.plan(
            "transfer",
            sizes,
            seeds,
            1,
            cycle,
            probe_lang,
            f"transfer (Table III), sizes {','.join(sizes)}: from initialisation one task of each "
            f"of {','.join(cycle)}, then a probe on {probe_lang}",
        )

    def lr_grid(self, sizes, seeds, cycle, source, lrs, val_every, weight_decay) -> Plan:
        """App. A: one task of the cycle's first language per (size, rate), then fit-lr."""
        if len({shape_of(s)[1] for s in sizes}) < 2:
            raise PlcError(
                "an lr grid needs at least two sizes of different d_model (the power law in d is "
                "fitted between the smallest and the largest)"
            )
        lrs = list(PAPER_LR_GRID if lrs is None else lrs)
        if not lrs or any(not lr > 0 for lr in lrs) or len(set(lrs)) < len(lrs):
            raise PlcError(f"--lrs must be distinct positive rates, got {lrs}")
        val_every = self.p.probe_eval_every if val_every is None else val_every
        if val_every < 1:
            raise PlcError(f"--val-every must be positive, got {val_every}")
        lang = cycle[0]
        self.shard(lang, source, self.p.shard_tokens)
        tags, wd_flags = self.wd_tags(weight_decay)
        ckpts, metrics = [], []
        for lr in lrs:
            for size, seed, run_id, folder, method in self.runs(
                sizes, seeds, [*tags, f"lr{_tag(lr)}"]
            ):
                c0 = self.init(size, seed, run_id, f"{folder}/c0.pt")
                extra = ["--lr", _tag(lr), "--val-every", str(val_every), *wd_flags, *method]
                ckpts.append(f"{folder}/c1.pt")
                self.train(c0, ckpts[-1], ["--lang", lang], [self.store(lang)], extra)
                metrics.append(metric_file(self.metrics, "train", run_id, 1, lang))
        # fit-lr reads the train metric files; the jobs that write them are named by their
        # checkpoints, so those are the prerequisites.
        self.analysis(f"{self.out_dir}/lr-fit.txt", ["fit-lr", *metrics], ckpts, stdout=True)
        return self.plan(
            "lr-grid",
            sizes,
            seeds,
            1,
            [lang],
            "",
            f"lr-grid (App. A), sizes {','.join(sizes)}, one {lang} task at each of "
            f"{','.join(_tag(x) for x in lrs)}, validated every {val_every} steps",
        )


def render_makefile(plan: Plan) -> str:
    """A readable Makefile: one rule per file, exact prerequisites, paths shortened to variables."""

    prefixes = [(plan.metrics, "$(METRICS)"), (plan.out_dir, "$(RUNS)"), (plan.data, "$(DATA)")]

    def short(path: str) -> str:
        for prefix, var in prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return var + path[len(prefix) :]
        return path

    def cmd(job: Job) -> str:
        prog = "$(PLC_TRAIN)" if job.launch else "$(PLC)"
        args = [
            "$^" if a == INPUTS else short(a) if shlex.quote(a) == a else shlex.quote(a)
            for a in job.argv
        ]
        line = " ".join([prog, *args])
        # Written under a temporary name: a failed command leaves no target that looks done.
        return f"{line} > $@.tmp && mv $@.tmp $@" if job.stdout else line

    def deps(job: Job) -> str:
        names = [short(d) for d in job.deps]
        return " \\\n    ".join(" ".join(names[i : i + 4]) for i in range(0, len(names), 4))

    stages: dict[str, list[Job]] = {s: [] for s in STAGES}
    for job in plan.jobs:
        stages.setdefault(job.stage, []).append(job)
    launch = f"{plan.launcher} -m plc" if plan.launcher else "$(PLC)"
    seeds = ",".join(map(str, plan.seeds))
    lines = [
        f"# plc protocol: {plan.description}; preset {plan.preset}, "
        f"seed{'s' if len(plan.seeds) > 1 else ''} {seeds}.",
        "# Written by `plc plan`. `make -j2` on a 2-core CPU (one thread per job); rerunning `make`",
        "# after a crash redoes only what is missing; `make -q` says whether all is up to date.",
        "",
        "PLC ?= plc",
        f"PLC_TRAIN ?= {launch}",
        f"DATA ?= {plan.data}",
        f"RUNS ?= {plan.out_dir}",
        f"METRICS ?= {plan.metrics.replace(plan.out_dir + '/', '$(RUNS)/', 1)}",
        "export PLC_THREADS ?= 1",
        "",
        ".PHONY: all " + " ".join(stages),
        "all: analysis",
        "",
    ]
    for stage, jobs in stages.items():
        lines.append(f"{stage}: " + " ".join(short(j.target) for j in jobs))
    lines.append("")
    lines.append("")
    for stage, jobs in stages.items():
        lines.append(f"# ---- {stage}")
        for job in jobs:
            lines.append(f"{short(job.target)}: {deps(job)}".rstrip())
            lines.append(f"\t{cmd(job)}")
        lines.append("")
    return "\n".join(lines)
