"""The protocol as a graph of plc commands: rendered as a Makefile or Snakefile with its plan.json
(`plc plan`), or run in-process (`plc demo`).

One description serves all, so the demo cannot drift from what a Makefile would do: every job is
a real `plc` subcommand with the files it reads and the file it writes (plc.plan.jobs).

- `options`: PlanOptions, one field per `plc plan` flag, and the kinds each belongs to;
- `kinds/`: one module per plan kind, each a function from PlanOptions to a Plan:
  `continual` (§IV-A), `stationary` (§V-B), `control` (Markov chains, issue 14), `transfer`
  (Table III), `lr_grid` (App. A);
- `builder`: the jobs the kinds share (stores, init, tasks, probes, diagnoses, onset, figures);
- `jobs`: Job, Run, Plan and the one function from a job to its command line (`Job.argv`);
- `make`: the Makefile; `snakefile`: the Snakefile and its resources; `files`: plan.json (its
  names, its schema), written beside them and read back, checked, by every reader.

Every run is a (method, size, seed) triple; its id is `<size>-s<seed>` plus what else differs from
the preset (`-wd0.1`, `-lr0.003`, `-cont`/`-reset`, the method), and its checkpoints live in
`<out_dir>/<run id>/`.
"""

from plc.plan.build import BUILDERS, build_plan
from plc.plan.files import (
    PLAN_FILES,
    PLAN_JSON,
    plan_from_json,
    plan_json,
    plan_json_path,
    read_plan,
    render,
    write_plan,
)
from plc.plan.jobs import INPUTS, STAGES, Job, Plan, Run
from plc.plan.options import KINDS, PlanOptions

__all__ = [
    "BUILDERS",
    "INPUTS",
    "KINDS",
    "PLAN_FILES",
    "PLAN_JSON",
    "STAGES",
    "Job",
    "Plan",
    "PlanOptions",
    "Run",
    "build_plan",
    "plan_from_json",
    "plan_json",
    "plan_json_path",
    "read_plan",
    "render",
    "write_plan",
]
