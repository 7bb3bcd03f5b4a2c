"""Writing a plan (its Makefile or Snakefile and plan.json beside it) and reading plan.json back.

plan.json is the plan as data (FORMATS.md): `plc status`, `plc report` and `plc fit-onset` read
what a study planned from it, never from the Makefile's text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from plc.errors import PlcError
from plc.plan.jobs import Plan
from plc.plan.make import render_makefile
from plc.plan.snakefile import render_snakefile
from plc.protocol import default_probe_after
from plc.status import PLAN_FILES, PLAN_JSON  # the names plc status looks for in a study
from plc.store import atomic_path, check_output

FORMATS = ("make", "snakemake")
SEARCH_UP = 3  # folders above a metric file where fit-onset looks for its plan.json


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
        tmp.write_text(json.dumps(plan.to_json(), indent=1) + "\n")
        with atomic_path(output, force=True) as tmp_plan:
            tmp_plan.write_text(text)
    return output, data


def read_plan(path: str | os.PathLike) -> Plan:
    """A plan.json written by `plc plan`."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PlcError(f"cannot read the plan {path}: {e}") from e
    return Plan.from_json(obj, str(path))


def plan_of_metrics(paths: Iterable[str | os.PathLike]) -> Plan | None:
    """The plan whose metrics folder holds these files (the first names it: a file, a glob or
    the folder): a plan.json (or *.plan.json) up to SEARCH_UP folders above it whose `metrics` is
    that folder; None if there is none."""
    first = next(iter(paths), None)
    if first is None:
        return None
    folder = Path(first) if Path(first).is_dir() else Path(first).parent
    folder = folder.resolve()
    for here in [folder, *folder.parents][: SEARCH_UP + 1]:
        for candidate in sorted(here.glob(f"*{PLAN_JSON}")):
            try:
                plan = read_plan(candidate)
            except PlcError:
                continue
            if (here / plan.metrics).resolve() == folder:
                return plan
    return None


def probe_after_of(paths: Iterable[str | os.PathLike]) -> tuple[str, ...] | None:
    """fit-onset's default probe positions: those of the plan the metric files belong to (None:
    every probe), else the protocol's (plc.protocol.default_probe_after)."""
    plan = plan_of_metrics(paths)
    return default_probe_after() if plan is None else plan.probe_after
