"""Every verdict, everywhere (issue 27): synthetic studies of random sizes, seeds, probe grids and
verdict mixes — an onset, one from the start, no significant rise, still falling, too few
probes, a single probe, one size, a NaN AUC (in the first end-of-cycle probe too), NaN diagnose
values — pushed through every reader of a study: fit-onset (console, --json, --out and the table
read back), every plot kind, report, status, and the analysis jobs a plan gives the demo. Each
exits 0, or 2 with one line; never a traceback. Where they state a verdict they state the same
one, and every point drawn lies inside its interval.

The verdicts come from a scripted estimator (registered for the test under the name
`scripted`): Hypothesis draws each run's verdict, point and interval — intervals that miss their
point included — so every reader meets every verdict whatever the statistics of the real
estimators say; those are checked on series with a known truth (test_onset_ci, and the
estimators' own properties below).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_onset import write_probe
from test_plot import write_diagnose

from plc.errors import PlcError
from plc.onset import ESTIMATORS, OnsetEvidence, ProbeSeries
from plc.onset.estimators import (
    DETECTED,
    FROM_START,
    NO_RISE,
    ONSET,
    STILL_FALLING,
    TOO_FEW,
    TooShortForWindow,
    verdict_of,
)
from plc.plan import build_plan, write_plan
from plc.plan.jobs import INPUTS
from plc.plot import build_figure
from plc.protocol import PLOT_KINDS
from plc.store import write_metrics
from plc.study import judge_inputs

SIZES = {"nano": 50_112, "micro": 396_800, "mini": 1_594_368}
SINGLE = "single probe"
# Studies cost seconds each: a failing one is reported as drawn, not shrunk for minutes.
NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]
KINDS = (ONSET, FROM_START, NO_RISE, STILL_FALLING, TOO_FEW, SINGLE)


@dataclass(frozen=True)
class Script:
    """What the scripted estimator says of one run (positions are fractions of its series)."""

    kind: str
    at: float  # where the minimum is (ONSET, NO_RISE)
    lo: float | None  # the interval's ends, which may miss the point
    hi: float | None
    p: float | None


@dataclass
class Scripted:
    """An estimator whose verdicts are the test's (plc.onset.estimators.Estimator)."""

    scripts: dict[str, Script]
    name: str = "scripted"

    def assess(self, series: ProbeSeries, *, window, ci, alpha, seed) -> OnsetEvidence:
        s = self.scripts[series.run_id]
        if s.kind == TOO_FEW:
            raise TooShortForWindow(series, series.n_probes + 1)
        tasks, n = series.task_index, series.n_probes
        i = {FROM_START: 0, STILL_FALLING: n - 1}.get(s.kind, round(s.at * (n - 1)))
        lo = None if s.lo is None else tasks[round(s.lo * (n - 1))]
        hi = None if s.hi is None else tasks[round(s.hi * (n - 1))]
        return OnsetEvidence(
            minimum_task=tasks[i],
            detected=s.kind in DETECTED,
            at_start=s.kind == FROM_START,
            p_value=s.p,
            no_onset=None if s.kind in DETECTED else f"scripted: {s.kind}",
            onset_lo=lo,
            onset_hi=hi,
            onset_mass={tasks[i]: 0.5, tasks[-1]: 0.5} if i != n - 1 else {tasks[i]: 1.0},
            noise_sd=1.0,
            rho=0.2,
            rise_sd=None,
            offsets=[],
            smoothed_minimum=None,
            jitter=None,
            rise_jitter=None,
            rate=0.5,
            rate_se=0.1,
            still_falling=s.kind == STILL_FALLING,
        )

    def describe(self, *, alpha, ci) -> str:
        return "Scripted verdicts (a test)."


# No subnormals: a command run in this process earlier in the session (plc.runtime) turns on
# torch's flush-to-zero, under which Hypothesis cannot draw them (FloatingPointError); no property
# here turns on them.
fraction = st.floats(0, 1, allow_subnormal=False)
scripts = st.builds(
    Script,
    kind=st.sampled_from(KINDS),
    at=fraction,
    lo=st.one_of(st.none(), fraction),
    hi=st.one_of(st.none(), fraction),
    p=st.one_of(st.none(), fraction),
)


@st.composite
def studies(draw):
    """A study: sizes × seeds runs on one probe grid, each with its script, its method, and maybe
    a NaN AUC; maybe diagnose files, maybe with NaN values."""
    sizes = draw(st.lists(st.sampled_from(list(SIZES)), min_size=1, max_size=3, unique=True))
    seeds = draw(st.integers(1, 2))
    runs = [f"{size}-s{seed}" for size in sizes for seed in range(seeds)]
    return {
        "runs": {r: draw(scripts) for r in runs},
        "grid": draw(st.sampled_from(["paper", "every task"])),
        "cycles": draw(st.integers(1, 3)),
        "nan": {r: draw(st.sampled_from([None, None, "end of cycle", "last"])) for r in runs},
        "method": {r: draw(st.sampled_from(["none", "none", "wd0.1"])) for r in runs},
        "diagnose": draw(st.sampled_from([None, "finite", "nan"])),
        "seed": draw(st.integers(0, 2**16)),
    }


def _tasks(grid: str, cycles: int) -> list[int]:
    if grid == "paper":  # after zh, de and ru (App. B)
        return [8 * c + k for c in range(cycles) for k in (2, 6, 8)]
    return list(range(1, 8 * cycles + 1))


def scripted_plan():
    """The plan beside every generated study: 3 sizes (every figure job), the scripted judge."""
    return build_plan(
        "continual", sizes=list(SIZES), cycles=1, preset="tiny", out_dir="runs",
        estimator="scripted",
    )  # fmt: skip


def write_study(root: Path, study: dict) -> list[Path]:
    """The study's probe (and diagnose) files under root/runs/metrics, with a plan beside them
    (3 sizes: every figure job) whose runs are judged by the scripted estimator."""
    metrics = root / "runs" / "metrics"
    rng = np.random.default_rng(study["seed"])
    for run, script in study["runs"].items():
        size = run.split("-")[0]
        tasks = [8] if script.kind == SINGLE else _tasks(study["grid"], study["cycles"])
        nan = study["nan"][run]
        for t in tasks:
            bad = (nan == "end of cycle" and t == 8) or (nan == "last" and t == tasks[-1])
            path = write_probe(metrics, run, size, SIZES[size], t, 3.0 + rng.normal(0, 0.05))
            frame = _with(path, method=study["method"][run], auc=math.nan if bad else None)
            write_metrics(path, frame, True)
        if study["diagnose"]:
            write_diagnose(metrics, run, size, SIZES[size], cycles=study["cycles"])
            if study["diagnose"] == "nan":
                path = sorted(metrics.glob(f"diagnose-{run}-t*.parquet"))[-1]
                write_metrics(path, _with(path, value=math.nan), True)
    plan = scripted_plan()
    write_plan(plan, root / "Makefile", force=True)
    return sorted(metrics.glob("*.parquet"))


def _with(path: Path, **columns):
    import polars as pl

    df = pl.read_parquet(path)
    return df.with_columns(
        *(
            pl.lit(v, df.schema.get(k, pl.String)).alias(k)
            for k, v in columns.items()
            if v is not None
        )
    )


def run(monkeypatch, capsys, *args):
    """A plc command line in this process: exit 0, or 2 with one line and no traceback."""
    r = cli(monkeypatch, capsys, *map(str, args))
    assert r.returncode in (0, 2), (args, r.returncode, r.stderr)
    if r.returncode == 2:
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in r.stderr, (args, r.stderr)
    return r


def _drawn_inside(fig) -> None:
    """Every error bar of the figure holds its point."""
    for ax in fig.axes:
        for c in ax.containers:
            data = c.lines[0]
            xs, ys = np.asarray(data.get_xdata(), float), np.asarray(data.get_ydata(), float)
            (bars,) = c.lines[2]
            for x, y, seg in zip(xs, ys, bars.get_segments(), strict=True):
                lo, hi = seg.min(axis=0), seg.max(axis=0)
                assert lo[0] - 1e-9 <= x <= hi[0] + 1e-9 and lo[1] - 1e-9 <= y <= hi[1] + 1e-9


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=NO_SHRINK,
)
@given(study=studies())
def test_every_reader_takes_every_verdict(study, tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setitem(ESTIMATORS, "scripted", Scripted(study["runs"]))
    root = tmp_path_factory.mktemp("study")
    monkeypatch.chdir(root)
    files = write_study(root, study)
    judge = ["--estimator", "scripted"]

    # The demo's figure and report jobs: a plan's analysis jobs (fit-onset --out, every plot
    # kind, with the plan's settings) on these files, then the report.
    plan = scripted_plan()
    jobs = [j for j in plan.jobs if j.stage == "analysis"]
    assert {j.argv[1] for j in jobs if j.command == "plot"} == set(PLOT_KINDS)
    codes = {}
    for job in jobs:
        argv = [a for arg in job.argv for a in ([*files] if arg == INPUTS else [arg])]
        codes[job.output] = run(monkeypatch, capsys, *argv).returncode
    run(monkeypatch, capsys, "report", root, "-o", "report.html", "--force")
    run(monkeypatch, capsys, "status", root)
    by = ["--by", "method", "-o", "by.png", "--force"]
    run(monkeypatch, capsys, "plot", "onset", *files, *judge, *by)

    fit = run(monkeypatch, capsys, "fit-onset", *files, *judge)
    res = run(monkeypatch, capsys, "fit-onset", *files, *judge, "--json")
    assert fit.returncode == res.returncode == codes["runs/onset.parquet"]
    if res.returncode:
        return
    verdicts = {r["run_id"]: r for r in json.loads(res.stdout)["runs"]}
    for r in verdicts.values():  # one verdict per run, its point inside its interval
        script = study["runs"][r["run_id"]]
        assert r["verdict"] == (TOO_FEW if script.kind in (TOO_FEW, SINGLE) else script.kind)
        assert (r["onset"] is not None) == r["detected"] == (r["verdict"] in DETECTED)
        if r["onset_lo"] is not None:
            point = r["onset"] if r["onset"] is not None else r["minimum_task"]
            assert r["onset_lo"] <= point <= r["onset_hi"]
        if r["verdict"] == STILL_FALLING:
            assert r["onset_lo"] is None and r["onset_hi"] is None
    # The table fit-onset wrote reads back, as input to fit-onset and to plot onset.
    run(monkeypatch, capsys, "fit-onset", "runs/onset.parquet")
    run(monkeypatch, capsys, "plot", "onset", "runs/onset.parquet", "-o", "t.png", "--force")
    status = json.loads(run(monkeypatch, capsys, "status", root, "--json").stdout)
    for r in status["runs"]:  # status states the same verdict
        if r["run_id"] in verdicts and r["verdict"]:
            assert r["verdict"] == verdicts[r["run_id"]]["verdict"]


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=NO_SHRINK,
)
@given(study=studies())
def test_every_figure_and_table_states_the_one_verdict(study, tmp_path_factory, monkeypatch):
    """What is drawn (the figures built, not saved) and what status says are the study's
    verdicts: an onset filled and inside its interval, a minimum with no significant rise open
    and inside its interval, nothing for a run still falling or with too few probes."""
    monkeypatch.setitem(ESTIMATORS, "scripted", Scripted(study["runs"]))
    root = tmp_path_factory.mktemp("study")
    files = write_study(root, study)
    try:
        judged = judge_inputs(files, estimator="scripted")
    except PlcError:  # every probe NaN, none at the plan's positions: one line, as the CLI
        return
    by_run = {r.run_id: r for r in judged.runs}
    probing = build_figure("probing", files, judged=judged).figure
    for ax in probing.axes:
        run_id = ax.get_title().split(" (")[-1].rstrip(")") if "(" in ax.get_title() else None
        r = by_run.get(run_id) or next(x for x in judged.runs if x.size == ax.get_title())
        mark = [t.get_text() for t in ax.get_legend().get_texts()][-1]
        if r.verdict in DETECTED:
            assert mark.startswith(f"onset: task {r.onset:g} [")
        elif r.verdict == NO_RISE:
            assert mark.startswith(f"minimum: task {r.minimum_task:g} [")
        else:
            assert mark == f"no onset: {r.verdict}" and not ax.containers
    _drawn_inside(probing)
    (ax,) = build_figure("onset", files, judged=judged).figure.axes
    filled = {(r.n_params, r.onset) for r in judged.runs if r.verdict in DETECTED}
    opened = {(r.n_params, r.minimum_task) for r in judged.runs if r.verdict == NO_RISE}
    drawn = {"observed onset": set(), "no onset detected (minimum)": set()}
    for c in ax.containers:
        line = c.lines[0]
        drawn[c.get_label()] |= set(zip(line.get_xdata(), line.get_ydata(), strict=True))
    assert drawn == {"observed onset": filled, "no onset detected (minimum)": opened}
    _drawn_inside(ax.figure)
    from plc.status import status

    for r in status(root, estimator="scripted").runs:
        if r.run_id in by_run:
            assert r.verdict == by_run[r.run_id].verdict
            assert (r.onset is not None) == (r.verdict in DETECTED)


# ------------------------------------------------------------- the real estimators' contract


def _series(values: list[float], langs: list[str]) -> ProbeSeries:
    tasks = list(range(1, len(values) + 1))
    return ProbeSeries("r", "x", 1, "first", tasks, langs, values, tasks, values, 1.0)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(
        st.floats(-50, 50, allow_nan=False, allow_subnormal=False), min_size=1, max_size=30
    ),
    window=st.sampled_from([1, 3, 5]),
    seed=st.integers(0, 100),
)
def test_the_moving_average_places_its_point_inside_its_interval(values, window, seed):
    """Any series: too few probes, or a verdict whose point lies inside its interval, and none
    for a run still falling; a minimum at the first full window is an onset from the start."""
    from plc.onset.series import moving_average, onset_position

    s = _series(values, [""] * len(values))
    try:
        ev = ESTIMATORS["moving-average"].assess(s, window=window, ci=0.95, alpha=0.05, seed=seed)
    except TooShortForWindow:
        assert len(values) < window + 1 or len(values) < 2
        return
    verdict = verdict_of(ev)
    assert verdict in (ONSET, FROM_START, STILL_FALLING)
    i = onset_position(moving_average(values, window))
    assert ev.minimum_task == s.task_index[i]
    if verdict == STILL_FALLING:
        assert i == len(values) - 1 - window // 2
        assert ev.onset_lo is None and ev.onset_mass is None
    else:
        assert ev.onset_lo <= ev.minimum_task <= ev.onset_hi
        assert math.isclose(sum(ev.onset_mass.values()), 1.0)
        assert set(ev.onset_mass) <= set(s.task_index)


@settings(max_examples=4, deadline=None)
@given(
    shape=st.sampled_from(["rise", "vee", "fall", "flat"]),
    n=st.integers(7, 12),
    seed=st.integers(0, 1000),
)
def test_the_noise_model_places_its_point_inside_its_interval(shape, n, seed):
    """The default estimator on short noisy series of each shape: whatever its verdict, the
    point lies inside its interval, and a run still falling has none (the crash of issue 27)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    trend = {"rise": t, "vee": np.abs(t - n // 2), "fall": -t, "flat": 0 * t}[shape]
    values = list(trend + rng.normal(0, 1.0, n))
    ev = ESTIMATORS["noise-model"].assess(
        _series(values, [""] * n), window=3, ci=0.95, alpha=0.05, seed=seed
    )
    if ev.still_falling and not ev.detected:
        assert ev.onset_lo is None and ev.onset_hi is None
    elif ev.onset_lo is not None:
        assert ev.onset_lo <= ev.minimum_task <= ev.onset_hi


def test_the_estimators_are_named_and_the_default_is_the_protocols():
    from plc.protocol import ONSET_ESTIMATOR

    assert list(ESTIMATORS) == ["noise-model", "moving-average"]
    assert ONSET_ESTIMATOR == next(iter(ESTIMATORS))
    assert all(e.name == name for name, e in ESTIMATORS.items())
    from plc.onset.estimators import get_estimator

    with pytest.raises(PlcError, match="unknown --estimator 'x'; choose noise-model or moving"):
        get_estimator("x")
