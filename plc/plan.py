"""The protocol as a graph of plc commands: rendered as a Makefile (`plc plan`) or run (`plc demo`).

One description serves both, so the demo cannot drift from what a Makefile would do: every job
is the argument list of a real `plc` subcommand, the files it reads and the file it writes.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from plc.errors import PlcError
from plc.protocol import CYCLE, ENTROPY_LANG, MIN_FIT_POINTS, PLOT_KINDS, PROBE_LANG
from plc.sizes import SHAPES

STAGES = ("data", "init", "train", "probe", "diagnose", "analysis")
INPUTS = "{inputs}"  # in an argv: the job's input files (`$^` in the Makefile)


@dataclass
class Job:
    target: str  # the file the job writes: the Make target
    argv: list[str]  # arguments of `plc`
    deps: list[str] = field(default_factory=list)
    stage: str = ""  # data, init, train, probe, diagnose, analysis
    launch: bool = False  # a training job: run under the launcher (torchrun) if one is given

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
    seed: int
    launcher: str = ""

    @property
    def n_tasks(self) -> int:
        return len(self.sizes) * self.cycles * len(CYCLE)

    def makefile(self) -> str:
        return render_makefile(self)


def metric_file(
    metrics: str, kind: str, run_id: str, task: int, lang: str, suffix: str = ""
) -> str:
    from plc.store import metric_path

    return str(metric_path(metrics, kind, run_id, task, lang, suffix or None))


def build_plan(
    problem: str = "continual",
    *,
    preset: str = "cpu",
    sizes: list[str] | None = None,
    cycles: int | None = None,
    probe_after: list[str] | None = None,
    diagnose_every: int = 1,
    data: str = "data",
    out_dir: str = "runs",
    seed: int = 0,
    tokenizer: str | None = None,
    source: str = "embedded",
    launcher: str = "",
) -> Plan:
    """The jobs of the continual or stationary protocol for several model sizes.

    Continual: one task per language of CYCLE, repeated `cycles` times; probes after the languages
    in `probe_after` (default: the last of the cycle). Stationary: every task draws from the mixture
    of all eight languages and is probed. Diagnostics every `diagnose_every` cycles. Sizes, cycles
    and tokenizer default to the preset's.
    """
    from plc.presets import get_preset

    p = get_preset(preset)
    sizes = list(p.sizes) if sizes is None else list(sizes)
    cycles = p.cycles if cycles is None else cycles
    tokenizer = p.tokenizer if tokenizer is None else tokenizer
    if problem not in ("continual", "stationary"):
        raise PlcError(f"unknown problem {problem!r}; choose continual or stationary")
    if cycles <= 0:
        raise PlcError("--cycles must be positive")
    if diagnose_every < 0:
        raise PlcError("--diagnose-every must be ≥ 0 (0 = never)")
    for s in sizes:
        if s not in SHAPES:
            raise PlcError(f"unknown size {s!r}; choose from {', '.join(SHAPES)}")
    if not sizes:
        raise PlcError("give at least one size")
    probe_after = probe_after or [CYCLE[-1]]
    for lang in probe_after:
        if lang not in CYCLE:
            raise PlcError(f"--probe-after {lang!r} is not in the cycle {','.join(CYCLE)}")

    metrics, figures = f"{out_dir}/metrics", f"{out_dir}/figures"
    common = ["--preset", preset]
    jobs: list[Job] = []

    def store(lang: str) -> str:
        return f"{data}/{lang}.zarr/zarr.json"

    for lang in [*CYCLE, PROBE_LANG]:
        jobs.append(
            Job(
                store(lang),
                [
                    "shard",
                    "--lang",
                    lang,
                    "--source",
                    source.replace("{lang}", lang),
                    "--tokenizer",
                    tokenizer,
                    "--out",
                    f"{data}/{lang}.zarr",
                    "--seed",
                    str(seed),
                    "--force",
                ],
                stage="data",
            )
        )

    analysis_inputs: list[str] = []
    for size in sizes:
        run_id = f"{size}-s{seed}"
        ckpt = f"{out_dir}/{size}"

        def c(k: int) -> str:
            return f"{ckpt}/c{k}.pt"  # noqa: B023 (used within the iteration)

        jobs.append(
            Job(
                c(0),
                [
                    "init",
                    "--size",
                    size,
                    "--preset",
                    preset,
                    "--tokenizer",
                    tokenizer,
                    "--seed",
                    str(seed),
                    "--run-id",
                    run_id,
                    "--out",
                    c(0),
                    "--force",
                ],
                stage="init",
            )
        )
        scratch = metric_file(metrics, "probe", run_id, 0, "", f"{PROBE_LANG}-scratch")
        jobs.append(
            Job(
                scratch,
                [
                    "probe",
                    c(0),
                    "--data",
                    data,
                    "--lang",
                    PROBE_LANG,
                    *common,
                    "--from-scratch",
                    "--metrics",
                    metrics,
                    "--force",
                ],
                deps=[c(0), store(PROBE_LANG)],
                stage="probe",
                launch=True,
            )
        )
        analysis_inputs.append(scratch)
        for k in range(1, cycles * len(CYCLE) + 1):
            lang = CYCLE[(k - 1) % len(CYCLE)]
            if problem == "continual":
                train = ["--lang", lang]
                deps = [c(k - 1), store(lang)]
                task_lang, probed = lang, lang in probe_after
            else:
                train = ["--mix", ",".join(CYCLE)]
                deps = [c(k - 1), *map(store, CYCLE)]
                task_lang, probed = "mix", True
            jobs.append(
                Job(
                    c(k),
                    [
                        "train-task",
                        *train,
                        "--ckpt",
                        c(k - 1),
                        "--data",
                        data,
                        "--out",
                        c(k),
                        *common,
                        "--metrics",
                        metrics,
                        "--force",
                    ],
                    deps=deps,
                    stage="train",
                    launch=True,
                )
            )
            if probed:
                out = metric_file(metrics, "probe", run_id, k, task_lang, PROBE_LANG)
                jobs.append(
                    Job(
                        out,
                        [
                            "probe",
                            c(k),
                            "--data",
                            data,
                            "--lang",
                            PROBE_LANG,
                            *common,
                            "--metrics",
                            metrics,
                            "--force",
                        ],
                        deps=[c(k), store(PROBE_LANG)],
                        stage="probe",
                        launch=True,
                    )
                )
                analysis_inputs.append(out)
            end_of_cycle = k % len(CYCLE) == 0
            if diagnose_every and end_of_cycle and (k // len(CYCLE)) % diagnose_every == 0:
                out = metric_file(metrics, "diagnose", run_id, k, task_lang)
                jobs.append(
                    Job(
                        out,
                        [
                            "diagnose",
                            c(k),
                            "--data",
                            data,
                            *common,
                            "--metrics",
                            metrics,
                            "--force",
                        ],
                        deps=[c(k), store(PROBE_LANG), store(ENTROPY_LANG)],
                        stage="diagnose",
                    )
                )
                analysis_inputs.append(out)

    # The fits of Table V need three sizes; with fewer the plan still finds each run's onset.
    # An onset needs two probes per run, the centred moving average of App. B three.
    probes_per_run = cycles * (len(CYCLE) if problem == "stationary" else len(probe_after))
    fits = "all" if len(sizes) >= MIN_FIT_POINTS else "none"
    onset_args = [
        *([] if problem == "stationary" else ["--probe-after", ",".join(probe_after)]),
        "--window",
        "3" if probes_per_run >= 3 else "1",
    ]
    if probes_per_run >= 2:
        onset = f"{out_dir}/onset.parquet"
        jobs.append(
            Job(
                onset,
                ["fit-onset", INPUTS, "--model", fits, *onset_args, "--out", onset, "--force"],
                deps=list(analysis_inputs),
                stage="analysis",
            )
        )
    for kind in PLOT_KINDS:
        if (
            kind in ("probing", "onset")
            and probes_per_run < 2
            or kind == "onset"
            and fits == "none"
        ):
            continue
        fig = f"{figures}/{kind}.png"
        extra = onset_args if kind in ("probing", "onset") else []
        jobs.append(
            Job(
                fig,
                ["plot", kind, INPUTS, *extra, "--out", fig, "--force"],
                deps=list(analysis_inputs),
                stage="analysis",
            )
        )
    return Plan(
        problem, list(sizes), cycles, preset, jobs, data, out_dir, metrics, figures, seed, launcher
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
        return " ".join([prog, *args])

    def deps(job: Job) -> str:
        names = [short(d) for d in job.deps]
        return " \\\n    ".join(" ".join(names[i : i + 4]) for i in range(0, len(names), 4))

    stages: dict[str, list[Job]] = {s: [] for s in STAGES}
    for job in plan.jobs:
        stages.setdefault(job.stage, []).append(job)
    launch = f"{plan.launcher} -m plc" if plan.launcher else "$(PLC)"
    lines = [
        f"# plc protocol: {plan.problem}, sizes {','.join(plan.sizes)}, {plan.cycles} cycles of "
        f"{len(CYCLE)} tasks ({','.join(CYCLE)}), preset {plan.preset}, seed {plan.seed}.",
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
