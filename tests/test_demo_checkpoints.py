"""plc demo keeps each run's last checkpoint only, unless --keep-checkpoints: neither a rerun nor
`make` retrains the removed ones while what was made from them stands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _checkpoints(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.glob("*/c*.pt"))


@pytest.mark.slow
def test_demo_removes_the_intermediate_checkpoints_and_a_rerun_does_not_retrain(tmp_path):
    from plc.cli import run_argv
    from plc.demo import demo

    kw = dict(sizes=["nano"], cycles=1, preset="tiny", control=[], execute=run_argv, workers=1)
    out = tmp_path / "d"
    res = demo(out, **kw)
    assert _checkpoints(out) == ["nano-s0/c8.pt"]  # the last: provenance, and a longer run
    assert sorted(Path(p).name for p in res.removed) == sorted(f"c{k}.pt" for k in range(8))
    assert "nano-s0/c8.pt" in Path(res.report).read_text()  # the report's provenance
    assert ".SECONDARY: $(RUNS)/nano-s0/c0.pt" in Path(res.makefile).read_text()
    if shutil.which("make"):
        env = {**os.environ, "PLC": f"{sys.executable} -m plc"}
        q = subprocess.run(["make", "-q", "-f", res.makefile], env=env, capture_output=True)
        assert q.returncode == 0, q.stdout  # up to date: nothing to retrain

    again = demo(out, **kw)
    assert again.ran == 0 and again.skipped == again.jobs == res.jobs
    assert _checkpoints(out) == ["nano-s0/c8.pt"] and again.removed == []

    # A lost result is remade from what it needs: the probe after task 6 retrains c1..c6.
    (probe,) = (out / "metrics").glob("probe-nano-s0-t6-*.parquet")
    probe.unlink()
    third = demo(out, **kw)
    assert probe.exists() and third.ran == 1 + 6 + 1  # init, tasks 1–6, the probe
    assert _checkpoints(out) == ["nano-s0/c8.pt"] and len(third.removed) == 7

    kept = demo(tmp_path / "k", **kw, keep_checkpoints=True)
    assert len(_checkpoints(tmp_path / "k")) == 9 and kept.removed == []
    assert ".SECONDARY" not in Path(kept.makefile).read_text()


def test_the_secondary_rule_spells_out_a_folder_make_has_no_variable_for(tmp_path):
    from plc.demo import _secondary_rule
    from plc.plan import build_plan

    out = str(tmp_path / "my runs")
    plan = build_plan(sizes=["nano"], cycles=1, preset="tiny", out_dir=out, data=f"{out}/data")
    rule = _secondary_rule(plan, keep_checkpoints=False)
    assert "$(RUNS)" not in rule and f"{out}/nano-s0/c0.pt".replace(" ", "\\ ") in rule
    plain = build_plan(sizes=["nano"], cycles=1, preset="tiny", out_dir=str(tmp_path / "runs"))
    assert ".SECONDARY: $(RUNS)/nano-s0/c0.pt" in _secondary_rule(plain, keep_checkpoints=False)
