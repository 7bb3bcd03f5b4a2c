"""`build_plan`: a kind's name and its options → the Plan."""

from __future__ import annotations

from typing import Any

from plc.plan.costs import plan_costs
from plc.plan.jobs import Plan
from plc.plan.kinds.checkpoints import checkpoints
from plc.plan.kinds.continual import continual
from plc.plan.kinds.control import control
from plc.plan.kinds.lr_grid import lr_grid
from plc.plan.kinds.stationary import stationary
from plc.plan.kinds.transfer import transfer
from plc.plan.options import PlanOptions

BUILDERS = {
    "continual": continual,
    "stationary": stationary,
    "control": control,
    "transfer": transfer,
    "lr-grid": lr_grid,
    "checkpoints": checkpoints,
}


def build_plan(kind: str = "continual", options: PlanOptions | None = None, **fields: Any) -> Plan:
    """The jobs of one plan kind for several model sizes and seeds; `fields` are PlanOptions
    fields (Python values: lists, tuples, numbers), given instead of `options`."""
    o = PlanOptions(**fields) if options is None else options
    o.check_kind(kind)
    plan = BUILDERS[kind](o)
    costs = plan_costs(plan)
    plan.costs = None if costs is None else costs.to_dict()
    return plan
