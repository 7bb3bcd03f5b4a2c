"""plc.study: plan.json checked by every reader, non-finite values left out with a note (never a
silent verdict change), the study's estimator and α taken from flags or its plan, and the verdict
computed in one place."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import assert_bad_input, cli
from test_onset import paper_probe_tasks, write_probe
from test_plot import write_diagnose

from plc.errors import PlcError
from plc.plan import build_plan, plan_json, read_plan, write_plan
from plc.store import write_metrics
from plc.study import fit_onset, judge_inputs

REPO = Path(__file__).resolve().parents[1]


def _study(root: Path, runs: dict[str, int], cycles: int = 4) -> list[Path]:
    """Runs {run_id: dip} whose AUC falls to its minimum at probe `dip` and rises 20 noise SDs
    after it, on App. B's probes (after zh, de and ru), under root/runs/metrics, with a control
    plan beside them (probe_after: every probe)."""
    metrics = root / "runs" / "metrics"
    for k, (run, dip) in enumerate(runs.items()):
        rng = np.random.default_rng(k)
        for i, t in enumerate(paper_probe_tasks(cycles)):
            auc = 3.0 + 0.05 * abs(i - dip) + rng.normal(0, 0.0025)
            write_probe(metrics, run, "nano", 50_112 * (k + 1), t, auc)
    write_plan(build_plan("control", sizes=["nano"], tasks=4, out_dir="runs"), root / "Makefile")
    return sorted(metrics.glob("*.parquet"))


def _set_auc(path: Path, value: float) -> None:
    df = pl.read_parquet(path)
    write_metrics(path, df.with_columns(pl.lit(value, df.schema["auc"]).alias("auc")), True)


# ----------------------------------------------------------------------- non-finite values


def test_a_nan_auc_is_named_and_left_out_never_a_silent_verdict_change(
    tmp_path, monkeypatch, capsys
):
    files = _study(tmp_path, {"a": 5, "b": 6})
    tasks = paper_probe_tasks(4)
    clean = {r.run_id: (r.verdict, r.onset) for r in fit_onset(files, models=[]).runs}
    assert clean == {"a": ("onset", tasks[5]), "b": ("onset", tasks[6])}
    nan = tmp_path / "runs" / "metrics" / "probe-a-t26-zh.parquet"
    without = fit_onset([f for f in files if f != nan], models=[]).runs[0]
    _set_auc(nan, math.nan)
    res = fit_onset(files, models=[])
    note = "left out probe-a-t26-zh.parquet (run a, task 26): its AUC is NaN"
    assert res.notes == [note]
    (a, b) = res.runs
    assert a.n_probes == 11 and b.n_probes == 12  # the probe, and only it, left out
    # The verdict is that of the series without the probe, as if it had never been written.
    fields = ("verdict", "onset", "p_value", "onset_lo", "onset_hi", "n_probes")
    assert [getattr(a, f) for f in fields] == [getattr(without, f) for f in fields]
    r = cli(monkeypatch, capsys, "fit-onset", *map(str, files), "--model", "none")
    assert r.returncode == 0 and r.stderr.strip() == f"note: {note}"
    r = cli(monkeypatch, capsys, "fit-onset", *map(str, files), "--model", "none", "--json")
    assert json.loads(r.stdout)["notes"] == [note]
    # An infinite or empty AUC alike; a file of NaN AUCs alone is one line, exit 2.
    _set_auc(nan, math.inf)
    assert fit_onset(files, models=[]).notes == [note.replace("NaN", "infinite")]
    only = tmp_path / "only"
    _set_auc(write_probe(only, "c", "nano", 1, 8, 3.0), math.nan)
    assert_bad_input(
        cli(monkeypatch, capsys, "fit-onset", str(only / "probe-c-t8-ru.parquet")),
        "no probe in the input metric files has a finite AUC",
    )


def test_a_nan_in_the_first_end_of_cycle_probe_moves_eq_1s_baseline_and_crashes_nothing(
    tmp_path, monkeypatch, capsys
):
    files = _study(tmp_path, {"a": 5, "b": 6, "c": 7})
    first = tmp_path / "runs" / "metrics" / "probe-a-t8-ru.parquet"
    _set_auc(first, math.nan)
    judged = judge_inputs(files)
    (a,) = [s for s in judged.series if s.run_id == "a"]
    assert a.baseline_task == 16 and 8 not in a.task_index  # the next ru probe is AUC_1
    assert all(math.isfinite(v) for s in judged.series for v in s.value)
    for argv in (
        ["fit-onset", *files],
        ["plot", "auc", *files, "-o", tmp_path / "auc.png"],
        ["plot", "probing", *files, "-o", tmp_path / "probing.png"],
        ["plot", "onset", *files, "-o", tmp_path / "onset.png"],
        ["report", tmp_path, "-o", tmp_path / "r.html"],
        ["status", tmp_path],
    ):
        r = cli(monkeypatch, capsys, *map(str, argv))
        assert r.returncode == 0, (argv, r.stderr)
        assert "left out probe-a-t8-ru.parquet (run a, task 8): its AUC is NaN" in r.stderr
    assert "nan %" not in r.stdout  # status: no "+nan %"


def test_nan_diagnose_values_are_left_out_with_a_note(tmp_path, monkeypatch, capsys):
    files = _study(tmp_path, {"a": 5})
    metrics = tmp_path / "runs" / "metrics"
    write_diagnose(metrics, "a", "nano", 50_112)
    last = metrics / "diagnose-a-t32-ru.parquet"
    df = pl.read_parquet(last)
    dormant = pl.col("metric") == "dormant_pct"
    write_metrics(
        last, df.with_columns(value=pl.when(dormant).then(math.nan).otherwise("value")), True
    )
    files = sorted(metrics.glob("*.parquet"))
    note = (
        "left out diagnose-a-t32-ru.parquet (run a, task 32): 3 diagnose value(s) NaN (dormant_pct)"
    )
    for argv in (
        ["plot", "correlates", *files, "-o", tmp_path / "c.png"],
        ["plot", "dormant-layers", *files, "-o", tmp_path / "d.png"],
        ["status", tmp_path],
        ["report", tmp_path, "-o", tmp_path / "r.html"],
    ):
        r = cli(monkeypatch, capsys, *map(str, argv))
        assert r.returncode == 0 and note in r.stderr, (argv, r.stderr)
    (a,) = [
        r
        for r in json.loads(cli(monkeypatch, capsys, "status", str(tmp_path), "--json").stdout)[
            "runs"
        ]
        if r["run_id"] == "a"
    ]
    assert "dormant_pct" not in a["diagnose"] and a["diagnose"]["param_abs_mean"] > 0


# ------------------------------------------------------------------------------- plan.json


def _hand_edit(root: Path, **changes) -> Path:
    path = root / "plan.json"
    obj = json.loads(path.read_text())
    obj.update(changes)
    for key in [k for k, v in changes.items() if v is ...]:
        del obj[key]
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"jobs": None}, "plan.json: jobs must be a list of objects, not null"),
        (
            {"probe_after": "zh,de,ru"},
            'probe_after must be a list of strings or null, not "zh,de,ru"',
        ),
        (
            {"version": 2},
            "is a plan of version 2, written by a newer plc; this plc reads version 1",
        ),
        ({"format": "other"}, "is not a plc plan"),
        ({"runs": ...}, "plan.json: runs is missing"),
        ({"alpha": 1.5}, "alpha must be a number between 0 and 1, not 1.5"),
        ({"kind": "weekly"}, "kind must be one of continual, stationary, control"),
    ],
)
def test_every_reader_checks_plan_json_with_one_line(
    changes, message, tmp_path, monkeypatch, capsys
):
    files = _study(tmp_path, {"a": 5})
    _hand_edit(tmp_path, **changes)
    for argv in (
        ["status", tmp_path],
        ["report", tmp_path, "-o", tmp_path / "r.html"],
        ["fit-onset", *files],
        ["plot", "probing", *files, "-o", tmp_path / "p.png"],
    ):
        assert_bad_input(cli(monkeypatch, capsys, *map(str, argv)), message)
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "p.png").exists()


def test_a_job_field_is_named_with_its_place_and_older_plans_read(tmp_path):
    _study(tmp_path, {"a": 5})
    obj = json.loads((tmp_path / "plan.json").read_text())
    obj["jobs"][3]["stage"] = "cooking"
    (tmp_path / "plan.json").write_text(json.dumps(obj))
    with pytest.raises(PlcError, match=r"plan.json: jobs\[3\]\.stage must be one of data, init"):
        read_plan(tmp_path / "plan.json")
    # A plan.json written before plans said how their runs are judged reads with the defaults;
    # keys it does not know are ignored.
    plan = build_plan("control", sizes=["nano"], tasks=4)
    old = {k: v for k, v in plan_json(plan).items() if k not in ("estimator", "alpha", "window")}
    (tmp_path / "plan.json").write_text(json.dumps({**old, "note": "by hand"}))
    again = read_plan(tmp_path / "plan.json")
    assert (again.estimator, again.alpha, again.window) == ("noise-model", 0.05, 3)
    assert again.jobs == plan.jobs and again.probe_after is None


# ---------------------------------------------------------------- the study's settings


def test_readers_judge_with_the_plans_estimator_and_alpha_unless_told(
    tmp_path, monkeypatch, capsys
):
    files = _study(tmp_path, {"a": 5, "b": 6})
    plan = build_plan(
        "control", sizes=["nano"], tasks=4, out_dir="runs", estimator="moving-average", alpha=0.2
    )
    write_plan(plan, tmp_path / "Makefile", force=True)
    none = ["--model", "none", "--json"]
    res = json.loads(cli(monkeypatch, capsys, "fit-onset", *map(str, files), *none).stdout)
    assert (res["estimator"], res["alpha"], res["window"]) == ("moving-average", 0.2, 3)
    assert [r["p_value"] for r in res["runs"]] == [None, None]  # the moving average has no test
    status = json.loads(cli(monkeypatch, capsys, "status", str(tmp_path), "--json").stdout)
    assert {r["run_id"]: r["onset"] for r in status["runs"] if r["run_id"] in "ab"} == {
        r["run_id"]: r["onset"] for r in res["runs"]
    }
    told = cli(
        monkeypatch, capsys, "fit-onset", *map(str, files), *none, "--estimator", "noise-model"
    )
    assert json.loads(told.stdout)["estimator"] == "noise-model"
    assert all(r["p_value"] is not None for r in json.loads(told.stdout)["runs"])
    r = cli(monkeypatch, capsys, "report", str(tmp_path), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 0
    page = (tmp_path / "r.html").read_text()
    assert "minimum of the centred moving average" in page and "AR(1)" not in page
    assert_bad_input(
        cli(monkeypatch, capsys, "status", str(tmp_path), "--estimator", "magic"),
        "unknown --estimator 'magic'",
    )


def test_the_moving_average_is_table_iv_s_read_out():
    """On a V with its minimum at task 22 (App. B's probes), the moving average of 3 puts its
    minimum there; a series falling to its end is still falling at its last full window."""
    from plc.onset.estimators import MovingAverage, verdict_of
    from plc.onset.series import ProbeSeries

    tasks = paper_probe_tasks(4)
    v = [abs(t - 22) / 4 for t in tasks]
    s = ProbeSeries("r", "x", 1, "first", tasks, ["zh", "de", "ru"] * 4, v, tasks, v, 1.0)
    ev = MovingAverage().assess(s, window=3, ci=0.95, alpha=0.05, seed=0)
    assert (verdict_of(ev), ev.minimum_task, ev.smoothed_minimum) == ("onset", 22, 22)
    assert ev.p_value is None and ev.onset_lo <= 22 <= ev.onset_hi <= 24  # 22 and 24 tie at 0.5
    falling = [-float(t) for t in tasks]
    s.value = falling
    ev = MovingAverage().assess(s, window=3, ci=0.95, alpha=0.05, seed=0)
    assert verdict_of(ev) == "still falling" and ev.minimum_task == tasks[-2]
    assert ev.onset_lo is None and ev.no_onset.startswith("no onset yet")


# ------------------------------------------------------------------------- the one place


def test_the_verdict_is_computed_in_one_place():
    """An estimator is called in plc.study.verdicts.run_verdicts alone (calibration apart, which
    judges synthetic series); status, report, plot, demo and fit-onset reach it through the
    study module, and plan/ does not import status."""
    calls = {}
    for path in (REPO / "plc").rglob("*.py"):
        text = path.read_text()
        for pattern in (r"\.assess\(", r"\bassess_onset\(", r"\brun_verdicts\("):
            for _ in re.finditer(pattern, text):
                calls.setdefault(pattern, set()).add(str(path.relative_to(REPO)))
    assert calls[r"\.assess\("] == {"plc/study/verdicts.py", "plc/onset/calibrate.py"}
    assert calls[r"\bassess_onset\("] == {"plc/onset/estimators.py", "plc/onset/detect.py"}
    assert calls[r"\brun_verdicts\("] == {"plc/study/verdicts.py"}
    plan_imports = " ".join(p.read_text() for p in (REPO / "plc" / "plan").rglob("*.py"))
    assert "plc.status" not in plan_imports and "plc.study" not in plan_imports
