"""plan.json, the plan as data (FORMATS.md): its names, its schema, writing it with the plan's
Makefile or Snakefile, and reading it back.

Every reader (`plc status`, `report`, `fit-onset`, `plot`, `demo`) reads a plan through
`read_plan`, which checks the file against the schema below and the version rule (this plc reads
the version it writes, PLAN_VERSION), so a hand-edited or foreign file is one line naming its
field, never a traceback or a silently different reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

from plc.errors import PlcError
from plc.memory import GPUS
from plc.plan.costs import Costs, SizeCost
from plc.plan.jobs import STAGES, Job, Plan, Run
from plc.plan.make import render_makefile
from plc.plan.options import KINDS
from plc.plan.snakefile import render_snakefile
from plc.store import atomic_path, check_output

FORMATS = ("make", "snakemake")
# A study's plan: the Makefile or Snakefile `plc plan` wrote, and beside it plan.json.
PLAN_FILES = ("Makefile", "Snakefile")
PLAN_JSON = "plan.json"
PLAN_FORMAT = "plc-plan"
PLAN_VERSION = 1  # the version this plc writes, and the one it reads


def plan_json_path(output: str | os.PathLike) -> Path:
    """plan.json beside a Makefile or Snakefile; `<name>.plan.json` beside a plan file of another
    name, so that several plans can share a folder (Makefile.control, protocol-ru.mk)."""
    output = Path(output)
    name = PLAN_JSON if output.name in PLAN_FILES else f"{output.name}.{PLAN_JSON}"
    return output.with_name(name)


def render(plan: Plan, fmt: str = "make") -> str:
    if fmt not in FORMATS:
        raise PlcError(f"unknown --format {fmt!r}; choose make or snakemake")
    if fmt == "snakemake":
        return render_snakefile(plan)
    return render_makefile(plan)


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan as plan.json's object."""
    return {"format": PLAN_FORMAT, "version": PLAN_VERSION, **asdict(plan)}


def write_plan(
    plan: Plan,
    output: str | os.PathLike,
    fmt: str = "make",
    *,
    force: bool = False,
    epilogue: str = "",
) -> tuple[Path, Path]:
    """Write the plan file and its plan.json (both or neither); returns their paths. `epilogue`
    is text appended to the plan file (the demo's rule for the checkpoints it removes)."""
    text = render(plan, fmt) + epilogue
    output, data = Path(output), plan_json_path(output)
    check_output(output, force)
    check_output(data, force)
    with atomic_path(data, force=True) as tmp:
        tmp.write_text(json.dumps(plan_json(plan), indent=1) + "\n")
        with atomic_path(output, force=True) as tmp_plan:
            tmp_plan.write_text(text)
    return output, data


def read_plan(path: str | os.PathLike) -> Plan:
    """A plan.json written by `plc plan`, checked against the schema (bad input otherwise)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PlcError(f"cannot read the plan {path}: {e}") from e
    return plan_from_json(obj, str(path))


# ---------------------------------------------------------------------------------- schema

# What a value must be: the words for the error, and the test.
Check = tuple[str, Callable[[Any], bool]]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


STR: Check = ("a string", lambda v: isinstance(v, str))
INT: Check = ("an integer", _is_int)
BOOL: Check = ("true or false", lambda v: isinstance(v, bool))
NUMBER: Check = ("a number", lambda v: _is_int(v) or isinstance(v, float))
OBJECT: Check = ("an object", lambda v: isinstance(v, dict))


def _list(item: Check) -> Check:
    return (f"a list of {item[0].split(' ', 1)[1]}s", lambda v: _every(v, item[1]))


def _every(v: Any, test: Callable[[Any], bool]) -> bool:
    return isinstance(v, list) and all(test(x) for x in v)


def _or_null(check: Check) -> Check:
    return (f"{check[0]} or null", lambda v: v is None or check[1](v))


def _one_of(names: tuple[str, ...]) -> Check:
    return (f"one of {', '.join(names)}", lambda v: v in names)


POSITIVE: Check = ("a positive integer", lambda v: _is_int(v) and v > 0)
FRACTION: Check = ("a number in (0, 1]", lambda v: NUMBER[1](v) and 0 < v <= 1)


STRINGS = _list(STR)
PLAN_SCHEMA: dict[str, Check] = {
    "kind": _one_of(KINDS),
    "description": STR,
    "preset": STR,
    "tokenizer": STR,
    "sizes": STRINGS,
    "seeds": _list(INT),
    "cycles": INT,
    "cycle": STRINGS,
    "probe_lang": STR,
    "probe_after": _or_null(STRINGS),
    "data": STR,
    "out_dir": STR,
    "metrics": STR,
    "figures": STR,
    "launcher": STR,
    "runs": ("a list of objects", lambda v: _every(v, OBJECT[1])),
    "jobs": ("a list of objects", lambda v: _every(v, OBJECT[1])),
    "estimator": STR,
    "alpha": ("a number between 0 and 1", lambda v: NUMBER[1](v) and 0 < v < 1),
    "window": ("a positive odd integer", lambda v: _is_int(v) and v > 0 and v % 2 == 1),
    "nodes": POSITIVE,
    "keep_every": _or_null(POSITIVE),
    "gpu": _one_of(tuple(GPUS)),
    "mfu": FRACTION,
    "costs": _or_null(OBJECT),
}
RUN_SCHEMA: dict[str, Check] = {
    "run_id": STR,
    "size": STR,
    "seed": INT,
    "folder": STR,
    "method": STR,
}
JOB_SCHEMA: dict[str, Check] = {
    "command": STR,
    "output": STR,
    "inputs": STRINGS,
    "stage": _one_of(STAGES),
    "args": STRINGS,
    "train": OBJECT,
    "args_after": STRINGS,
    "run_id": _or_null(STR),
    "size": _or_null(STR),
    "task": _or_null(INT),
    "launch": BOOL,
    "stdout": BOOL,
    "diverged_ok": BOOL,
}
# plan.json's `costs` (plc.plan.costs.Costs): estimates, written by `plc plan` and shown again
# by whoever reads the plan; every number is one (a CPU preset's GPU fields are null).
COSTS_SCHEMA: dict[str, Check] = {
    "device": STR,
    "peak_tflops": _or_null(NUMBER),
    "mfu": _or_null(NUMBER),
    "devices_per_job": POSITIVE,
    "hours": NUMBER,
    "store_tb": NUMBER,
    "store_files": INT,
    "checkpoint_tb": NUMBER,
    "checkpoint_files": INT,
    "critical_path_days": NUMBER,
    "mean_devices": NUMBER,
    "keep_every": _or_null(POSITIVE),
    "sizes": ("a list of objects", lambda v: _every(v, OBJECT[1])),
}
SIZE_COST_SCHEMA: dict[str, Check] = {
    "size": STR,
    "params": INT,
    "strategy": _or_null(_one_of(("ddp", "fsdp"))),
    "micro_batch": _or_null(POSITIVE),
    "activation_checkpointing": _or_null(BOOL),
    "gpu_memory_gib": _or_null(NUMBER),
    "fits": _or_null(BOOL),
    "task_hours": NUMBER,
    "hours": NUMBER,
    "checkpoint_gb": NUMBER,
}


def plan_from_json(obj: Any, where: str = PLAN_JSON) -> Plan:
    """The Plan of a plan.json object: its format and version (PLAN_VERSION), then every key of
    the schema; bad input naming the first field that does not fit. `launcher` and the verdict
    settings (estimator, alpha, window) may be missing (a plan.json of an earlier plc of the same
    version: their defaults), and a run's `method`; unknown keys are ignored."""
    if not isinstance(obj, dict) or obj.get("format") != PLAN_FORMAT:
        raise PlcError(f"{where} is not a plc plan (no format {PLAN_FORMAT!r})")
    version = obj.get("version")
    if version != PLAN_VERSION:
        newer = _is_int(version) and version > PLAN_VERSION
        raise PlcError(
            f"{where} is a plan of version {json.dumps(version)}"
            + (", written by a newer plc" if newer else "")
            + f"; this plc reads version {PLAN_VERSION}: write it again with plc plan"
        )
    kw = _fields(Plan, obj, PLAN_SCHEMA, where, "", required=("runs", "jobs"))
    kw["cycle"] = tuple(kw["cycle"])
    if kw["probe_after"] is not None:
        kw["probe_after"] = tuple(kw["probe_after"])
    kw["runs"] = [
        Run(**_fields(Run, r, RUN_SCHEMA, where, f"runs[{i}].")) for i, r in enumerate(kw["runs"])
    ]
    kw["jobs"] = [
        Job(**_fields(Job, j, JOB_SCHEMA, where, f"jobs[{i}].")) for i, j in enumerate(kw["jobs"])
    ]
    if kw.get("costs") is not None:
        costs = _fields(Costs, kw["costs"], COSTS_SCHEMA, where, "costs.", required=("sizes",))
        costs["sizes"] = [
            _fields(SizeCost, c, SIZE_COST_SCHEMA, where, f"costs.sizes[{i}].")
            for i, c in enumerate(costs["sizes"])
        ]
        kw["costs"] = costs
    return Plan(**kw)


def _fields(
    cls: type,
    obj: dict[str, Any],
    schema: dict[str, Check],
    where: str,
    prefix: str,
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The keys of `obj` that are fields of `cls`, each checked against `schema`; a field with
    no default, or `required`, must be there."""
    kw = {}
    for f in fields(cls):
        if f.name not in obj:
            if f.name in required or (f.default is MISSING and f.default_factory is MISSING):
                raise PlcError(
                    f"{where}: {prefix}{f.name} is missing; write it again with plc plan"
                )
            continue
        value = obj[f.name]
        what, test = schema[f.name]
        if not test(value):
            shown = json.dumps(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "…"
            raise PlcError(
                f"{where}: {prefix}{f.name} must be {what}, not {shown}; write it again with plc plan"
            )
        kw[f.name] = value
    return kw
