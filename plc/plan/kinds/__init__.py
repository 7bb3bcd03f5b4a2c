"""The plan kinds: each module one function from PlanOptions to a Plan (see plc.plan)."""
