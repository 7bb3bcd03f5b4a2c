"""A plan as data: its jobs, its runs, and the one function that turns a job into a command line.

A job is a `plc` subcommand with the file it writes (`output`), the files it reads (`inputs`), the
run, model size and task it belongs to, and the TrainOptions fields it sets (`train`). The same
data renders as a Makefile (plc.plan.make), a Snakefile (plc.plan.snakefile) and `plan.json`
(FORMATS.md, plc.plan.files), which `plc status`, `plc report`, `plc plot` and `plc fit-onset` read back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from plc.errors import PlcError
from plc.options import option_argv
from plc.protocol import ONSET_ALPHA, ONSET_ESTIMATOR, ONSET_WINDOW

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
INPUTS = "{inputs}"  # in a job's arguments: its input files (`$^` in the Makefile)
STAGES = ("data", "init", "train", "probe", "diagnose", "analysis")


def check_text(text: str) -> None:
    """Refuse a newline or other control character in a path or argument of a plan: a plan file
    is lines, and one of them in a path would end it and start another rule."""
    bad = CONTROL.search(text)
    if bad:
        raise PlcError(
            f"{text!r} holds the control character {bad.group()!r}; a plan cannot carry it in a "
            "path or argument"
        )


@dataclass
class Job:
    command: str  # the plc subcommand
    output: str  # the file it writes: the Make target
    inputs: list[str] = field(default_factory=list)  # the files it reads: its prerequisites
    stage: str = ""  # one of STAGES
    args: list[str] = field(default_factory=list)  # arguments before the training settings
    train: dict[str, Any] = field(default_factory=dict)  # TrainOptions field → value it sets
    args_after: list[str] = field(default_factory=list)  # arguments after them
    run_id: str | None = None  # None for jobs of the study (stores, analysis)
    size: str | None = None  # the model it works on
    task: int | None = None  # the task index of the checkpoint it writes or reads
    launch: bool = False  # a training job: run under the launcher (torchrun) if one is given
    stdout: bool = False  # the command prints its result: its standard output is the output
    # Training that diverges (exit status 3) is a result, not a failure, where it leaves its
    # output (App. A's grid: the train metric file records the divergence, no checkpoint).
    diverged_ok: bool = False

    @property
    def argv(self) -> list[str]:
        """The `plc` arguments, INPUTS where the input files go: the one place a job becomes a
        command line (the Makefile, the Snakefile and the runner all render this)."""
        return [self.command, *self.args, *option_argv(self.train), *self.args_after]

    def command_line(self) -> list[str]:
        """The `plc` arguments with the input files spliced in."""
        out: list[str] = []
        for arg in self.argv:
            out.extend(self.inputs) if arg == INPUTS else out.append(arg)
        return out


@dataclass
class Run:
    """One (method, size, seed) run of a plan; its checkpoints live in `folder`."""

    run_id: str
    size: str
    seed: int
    folder: str
    method: str = ""  # the --mitigation tag ('' for none)


@dataclass
class Plan:
    kind: str  # continual, stationary, control, transfer, lr-grid
    description: str  # one line for the plan file's header
    preset: str
    tokenizer: str
    sizes: list[str]
    seeds: list[int]
    cycles: int
    cycle: tuple[str, ...]  # the training languages (the control: its chains)
    probe_lang: str
    probe_after: tuple[str, ...] | None  # the languages fit-onset keeps; None: every probe
    data: str
    out_dir: str
    metrics: str
    figures: str
    launcher: str = ""
    runs: list[Run] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    # How its runs are judged (fit-onset, plot, status and report take them from plan.json):
    estimator: str = ONSET_ESTIMATOR  # plc.onset.estimators
    alpha: float = ONSET_ALPHA
    window: int = ONSET_WINDOW  # of the moving average (1 where runs have fewer probes)
    nodes: int = 1  # nodes of each training job (torchrun on each)
    keep_every: int | None = None  # checkpoint retention: see transient_checkpoints
    gpu: str = "h100"  # what the costs and the Snakefile's wall times assume
    mfu: float = 0.45
    costs: dict[str, Any] | None = None  # plc.plan.costs.Costs, as plan.json holds it

    def chained(self, job: Job) -> list[str]:
        """The inputs of `job` whose time stamps make and Snakemake must not compare: under
        --keep-every, a training's input checkpoint. A removed checkpoint retrained later (for
        a probe added by App. B's dense stage, or lost) is then newer than what was trained from
        it, and make or Snakemake would retrain the rest of the run; it is the same training,
        so they retrain only up to it. Without --keep-every: none (a remade checkpoint remakes
        what follows, as always)."""
        if self.keep_every is None or job.stage != "train":
            return []
        made = {j.output for j in self.jobs if j.stage in ("init", "train")}
        return [d for d in job.inputs if d in made]

    def transient_checkpoints(self) -> set[str]:
        """The checkpoints `--keep-every K` removes once the next task has trained from them:
        those only a next task reads (no probe, no diagnose), of a task index that is not a
        multiple of K, and not a run's last. Every K-th stays so that probes added later (App.
        B's dense stage) retrain at most K − 1 tasks to reach their checkpoint."""
        if self.keep_every is None:
            return set()
        read_by_train = {d for j in self.jobs if j.stage == "train" for d in j.inputs}
        read_by_others = {d for j in self.jobs if j.stage != "train" for d in j.inputs}
        return {
            j.output
            for j in self.jobs
            if j.stage == "train"
            and j.output.endswith(".pt")
            and j.output in read_by_train
            and j.output not in read_by_others
            and (j.task or 0) % self.keep_every
        }

    @property
    def seed(self) -> int:
        """The first seed: the token stores are sharded with it."""
        return self.seeds[0]

    @property
    def n_tasks(self) -> int:
        """Training tasks of the whole plan."""
        return sum(job.stage == "train" for job in self.jobs)
