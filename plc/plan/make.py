"""A plan as a readable Makefile: one rule per file, exact prerequisites, paths as variables."""

from __future__ import annotations

import shlex

from plc.plan.jobs import INPUTS, STAGES, Job, Plan


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
        names = [short(d) for d in job.inputs]
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
        lines.append(f"{stage}: " + " ".join(short(j.output) for j in jobs))
    lines.append("")
    lines.append("")
    for stage, jobs in stages.items():
        lines.append(f"# ---- {stage}")
        for job in jobs:
            lines.append(f"{short(job.output)}: {deps(job)}".rstrip())
            lines.append(f"\t{cmd(job)}")
        lines.append("")
    return "\n".join(lines)
