"""A plan as a readable Makefile: one rule per file, exact prerequisites, paths as variables.

Any path the plan holds is written so that make and the shell take it as a file name and nothing
else: `$` doubled everywhere (make would expand `$(shell …)` even in `make -n`), the characters
make splits or globs on escaped in rules, and every word of a command quoted for the shell. A
path that make cannot carry at all is refused with one line (`make_path`).
"""

from __future__ import annotations

import re
import shlex

from plc.errors import EXIT_DIVERGED, PlcError
from plc.plan.jobs import INPUTS, STAGES, Job, Plan, check_text

# What GNU make cannot carry in a file name, escaped or not: `;`, `=` and `|` end a prerequisite
# list or start a variable, `%` makes a pattern rule, `(` `)` name an archive member, a
# backslash escapes what follows it, and a line ends at a control character.
UNCARRIED = re.compile(r"[;=|%()\\]")
ESCAPED = re.compile(r"([ #:*?\[])")  # make splits, comments, separates or globs on these
PLAIN = re.compile(r"[A-Za-z0-9@+,./_-]+")  # a word make and the shell both take as it is


def make_path(path: str) -> str:
    """`path` as a target or prerequisite of a rule; a path make cannot carry is refused."""
    check_text(path)
    bad = UNCARRIED.search(path)
    if bad or path.startswith("~") or path != path.strip():
        what = (
            f"{bad.group()!r}" if bad else "a leading ~" if path[:1] == "~" else "a space at an end"
        )
        raise PlcError(
            f"the plan's path {path!r} holds {what}, which a Makefile cannot carry in a file "
            "name; choose --data and --out-dir without ; = | % ( ) \\ (or --format snakemake)"
        )
    return ESCAPED.sub(r"\\\1", path.replace("$", "$$"))


def shell_word(arg: str) -> str:
    """One word of a recipe: quoted for the shell, its `$` kept from make."""
    check_text(arg)
    return shlex.quote(arg).replace("$", "$$")


def render_makefile(plan: Plan) -> str:
    """A readable Makefile: one rule per file, exact prerequisites, paths shortened to variables."""
    folders = [(plan.metrics, "$(METRICS)"), (plan.out_dir, "$(RUNS)"), (plan.data, "$(DATA)")]
    prefixes = [(p, var) for p, var in folders if PLAIN.fullmatch(p)]

    def short(path: str) -> str:
        for prefix, var in prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return var + path[len(prefix) :]
        return path

    def word(path: str) -> str:
        return short(path) if PLAIN.fullmatch(path) else make_path(path)

    def arg(a: str) -> str:
        return short(a) if PLAIN.fullmatch(a) else shell_word(a)

    def cmd(job: Job) -> str:
        line = command(job)
        gone = [d for d in job.inputs if d in transient]
        if gone:  # --keep-every: the input only this task reads goes once it has trained
            line += " && rm -f " + " ".join(
                word(d) if PLAIN.fullmatch(d) else shell_word(d) for d in gone
            )
        return line

    def command(job: Job) -> str:
        prog = "$(PLC_TRAIN)" if job.launch else "$(PLC)"
        # $^ and $@ lose make's escapes: a path that needs them is spelled out, quoted.
        plain = all(PLAIN.fullmatch(p) for p in [job.output, *job.inputs])
        inputs = "$^" if plain else " ".join(shell_word(p) for p in job.inputs)
        args = [inputs if a == INPUTS else arg(a) for a in job.argv]
        line = " ".join([prog, *args])
        if job.stdout:
            # Written under a temporary name: a failed command leaves no target that looks done.
            out = "$@" if plain else shell_word(job.output)
            tmp = "$@.tmp" if plain else shell_word(job.output + ".tmp")
            return f"{line} > {tmp} && mv {tmp} {out}"
        if job.diverged_ok:
            # A diverged run (exit 3) is a result when it left its record, the target.
            out = "$@" if plain else shell_word(job.output)
            return f"{line} || {{ test $$? -eq {EXIT_DIVERGED} && test -f {out}; }}"
        return line

    def deps(job: Job) -> str:
        chained = plan.chained(job)  # order-only: made first, time stamps not compared
        names = [word(d) for d in job.inputs if d not in chained]
        names += ["|", *(word(d) for d in chained)] if chained else []
        return " \\\n    ".join(" ".join(names[i : i + 4]) for i in range(0, len(names), 4))

    if plan.nodes > 1:
        raise PlcError(
            f"--nodes {plan.nodes}: make runs every job on the machine it runs on; write the "
            "plan with --format snakemake to run each training job on several Slurm nodes"
        )
    transient = plan.transient_checkpoints()
    stages: dict[str, list[Job]] = {s: [] for s in STAGES}
    for job in plan.jobs:
        stages.setdefault(job.stage, []).append(job)
    check_text(plan.launcher)
    check_text(plan.description)
    launch = f"{plan.launcher} -m plc" if plan.launcher else "$(PLC)"
    launch = launch if launch == "$(PLC)" else launch.replace("$", "$$").replace("#", r"\#")
    seeds = ",".join(map(str, plan.seeds))
    values = {
        "$(DATA)": plan.data,
        "$(RUNS)": plan.out_dir,
        "$(METRICS)": plan.metrics.replace(plan.out_dir + "/", "$(RUNS)/", 1),
    }
    shortened = {var for _, var in prefixes}
    variables = [f"{var[2:-1]} ?= {value}" for var, value in values.items() if var in shortened]
    lines = [
        f"# plc protocol: {plan.description}; preset {plan.preset}, "
        f"seed{'s' if len(plan.seeds) > 1 else ''} {seeds}.",
        "# Written by `plc plan`. `make -j2` on a 2-core CPU (one thread per job); rerunning `make`",
        "# after a crash redoes only what is missing; `make -q` says whether all is up to date.",
        "",
        "PLC ?= plc",
        f"PLC_TRAIN ?= {launch}",
        *variables,
        "export PLC_THREADS ?= 1",
        "",
        ".PHONY: all " + " ".join(stages),
        "all: analysis",
        "",
    ]
    for stage, jobs in stages.items():
        kept = [word(j.output) for j in jobs if j.output not in transient]
        lines.append(f"{stage}: " + " ".join(kept))
    if transient:
        lines += [
            "",
            f"# --keep-every {plan.keep_every}: these checkpoints are removed once the next task "
            "has trained",
            "# from them; make remakes them only where something made from them is missing.",
            ".SECONDARY: " + " ".join(word(t) for t in sorted(transient)),
        ]
    lines.append("")
    lines.append("")
    for stage, jobs in stages.items():
        lines.append(f"# ---- {stage}")
        for job in jobs:
            lines.append(f"{word(job.output)}: {deps(job)}".rstrip())
            lines.append(f"\t{cmd(job)}")
        lines.append("")
    return "\n".join(lines)
