"""The in-process runner: dependency order, skipping what exists, and printed results."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from plc.cli import run_argv
from plc.errors import PlcError
from plc.plan import Job, build_plan
from plc.runner import run_plan


def test_a_job_whose_result_is_what_it_prints_writes_it_to_its_target(tmp_path):
    # lr-grid's fit-lr is such a job; Make and Snakemake redirect it, the runner must too.
    target = tmp_path / "out" / "sizes.json"
    job = Job("sizes", str(target), stage="analysis", args=["--json"], stdout=True)
    plan = replace(build_plan(preset="tiny"), jobs=[job])
    (done,) = run_plan(plan, workers=1, log_dir=tmp_path / "logs", execute=run_argv)
    assert not done.skipped
    sizes = json.loads(target.read_text())
    assert [s["size"] for s in sizes["sizes"]][:2] == ["nano", "micro"]
    assert list(target.parent.iterdir()) == [target]  # no temporary file left

    broken = tmp_path / "broken.txt"
    bad = replace(plan, jobs=[Job("sizes", str(broken), args=["--no-such-flag"], stdout=True)])
    with pytest.raises(PlcError, match="sizes"):
        run_plan(bad, workers=1, log_dir=tmp_path / "logs", execute=run_argv)
    assert not broken.exists()  # no half result for the next run to take as done
