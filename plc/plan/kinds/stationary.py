"""§V-B: every task samples the mixture of the cycle's languages, a probe after each; the optimizer
and its schedule continue from task to task (one warm-up for the run) unless --reset-optimizer."""

from __future__ import annotations

from plc.plan.builder import Builder
from plc.plan.jobs import Plan
from plc.plan.kinds.continual import cyclic
from plc.plan.options import PlanOptions


def stationary(o: PlanOptions) -> Plan:
    return cyclic(Builder("stationary", o))
