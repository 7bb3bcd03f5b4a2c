"""How sure an onset is: the noise model, the test of a rise after the minimum (its false-alarm
rate and power on synthetic studies), onsets at the first probe, intervals, probe repeats, the rate
of loss, --auc-from, --suggest-dense, pooled seeds, and bootstrap intervals of the fits."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
from conftest import assert_bad_input, run_plc
from scipy.stats import linregress
from test_onset import TABLE_IV, lang_of, write_probe, write_run, write_table_iv
from test_onset import _series as series_of

from plc.errors import PlcError
from plc.onset import (
    RunOnset,
    assess_onset,
    bootstrap_fits,
    judge_onset,
    pool_seeds,
    probe_series,
    read_probes,
)
from plc.onset.calibrate import Case, run_case
from plc.onset.detect import _repeat_var
from plc.onset.noise import Design, offset_groups, simulate
from plc.probe import auc
from plc.store import cycle_of, metric_path, write_metrics
from plc.study import fit_onset

DENSE = [8 * c + k for c in range(8) for k in (2, 6, 8)]  # probes after zh, de and ru (App. B)


def dense_series(values, run_id="r"):
    """A series on App. B's dense probing with its languages (so one offset per language)."""
    s = series_of(list(values), DENSE[: len(values)])
    s.lang = [lang_of(t) for t in s.task_index]
    s.run_id = run_id
    return s


def v_shape(n: int, onset: float, slope: float, noise: float, rng) -> np.ndarray:
    """AUC change falling to `onset` and rising after it, plus independent noise."""
    t = np.arange(1, n + 1)
    return slope * np.abs(t - onset) + rng.normal(0.0, noise, n)


# ------------------------------------------------------------------------ the noise model


def test_offsets_only_where_each_language_labels_several_probes():
    groups, names = offset_groups(["zh", "de", "ru"] * 3)
    assert names == ["de", "ru", "zh"] and groups.tolist() == [2, 0, 1] * 3
    assert offset_groups([f"m{i:02d}" for i in range(12)])[1] == []  # the control: a chain each
    assert offset_groups(["ru"] * 9)[1] == []


def test_the_noise_model_recovers_its_parameters():
    # Many series from a known broken stick with offsets and AR(0.5) noise: the fitted ρ and
    # variance are biased low (short series), which is what the bootstrap corrects.
    tasks = np.array(DENSE, dtype=float)
    groups, _ = offset_groups([lang_of(int(t)) for t in tasks])
    design = Design(tasks, groups)
    mean = np.where(tasks < 30, (30 - tasks) / 6, (tasks - 30) / 3.4) + np.array([3, -2, 0] * 8)
    fits = design.fit(simulate(mean, 0.5, 1.0, 300, np.random.default_rng(0)))
    assert np.median(tasks[fits.knot]) == 30
    assert 0.2 < fits.rho1.mean() < 0.5 and 0.5 < fits.var1.mean() < 1.0
    assert (fits.lr > 0).mean() > 0.95


# ------------------------------------------------------------------- is there an onset?


def test_false_alarms_power_coverage_and_width_on_synthetic_studies():
    """The calibration of docs/estimators.md in small (fixed seed; plc simulate-onset runs it
    in full): a flat trend under AR(0.5) and AR(0.8) noise with language offsets of +3/−2/0 % is
    called an onset in at most 10 % of runs; a clear mid-run onset (a rise of ten noise SDs) is
    found in at least 80 %, inside its 95 % interval in at least 85 %, which is well under two
    cycles wide."""
    # Seeds 1–4 and 11 gave false alarms of 0–7 % (AR(0.5)) and 0–10 % (AR(0.8)), power 80–97 %,
    # coverage 90–100 %, median width 6–10 tasks.
    rng = np.random.default_rng(1)
    kw = {"cycles": 6, "rng": rng, "samples": 100}
    for rho in (0.5, 0.8):
        flat = run_case(Case("flat", None, rho), reps=60, **kw)
        assert flat.detected <= 0.10
    onset = run_case(Case("interior onset", 22, 0.5), reps=40, **kw)
    assert onset.detected >= 0.80
    assert onset.coverage >= 0.85
    assert onset.width < 12


def test_a_fall_then_rise_with_its_minimum_at_task_6_is_an_onset_at_6():
    # Dense zh/de/ru probing from cycle 1: tasks 2, 6, 8, 10, …; the minimum at the second probe,
    # where Table IV puts the paper's 5M and 12M onsets and a 3-point average cannot look.
    rng = np.random.default_rng(6)
    t = np.array(DENSE, dtype=float)
    y = (
        np.where(t < 6, 6 - t, (t - 6) / 2.5)
        + np.array([1.5, -1.0, 0.0] * 8)
        + rng.normal(0, 0.3, 24)
    )
    ev = assess_onset(dense_series(y))
    assert ev.detected and ev.minimum_task == 6 and not ev.at_start
    assert ev.p_value < 0.01 and ev.onset_lo <= 6 <= ev.onset_hi and ev.onset_hi <= 10
    assert ev.offsets == ["de", "ru", "zh"]
    assert ev.smoothed_minimum is not None  # Table IV's read-out stays beside it


def test_a_minimum_at_the_first_probe_is_an_onset_from_the_start(tmp_path):
    rng = np.random.default_rng(7)
    y = 0.4 * np.arange(24) + rng.normal(0, 1.0, 24)
    ev = assess_onset(dense_series(y))
    assert ev.detected and ev.at_start and ev.minimum_task == 2 and ev.onset_lo == 2
    # The same through fit-onset's files and text.
    for t, v in zip(DENSE, y, strict=True):
        write_probe(tmp_path, "nano-s0", "nano", 50_112, t, 3.0 * (1 + v / 100))
    text = run_plc("fit-onset", *tmp_path.glob("*.parquet"), "--model", "none").stdout
    verdict = re.search(r"nano-s0: onset at task 2 \[2, \d+\] \(from the start\), p = (\S+)", text)
    assert verdict and float(verdict[1]) < 0.05


def test_a_flat_series_has_no_onset_and_a_falling_one_none_yet():
    rng = np.random.default_rng(4)
    flat = assess_onset(dense_series(rng.normal(0.0, 1.0, 24)))
    assert not flat.detected and flat.p_value >= 0.05
    assert flat.no_onset.startswith("no significant rise after the minimum: p = ")
    falling = assess_onset(dense_series(-0.5 * np.arange(24) + rng.normal(0, 0.5, 24)))
    assert not falling.detected and falling.minimum_task == DENSE[-1]
    assert falling.no_onset.startswith("no onset yet: still falling at the last probe (task 64)")
    # The same seed gives the same verdict; α sets the bar.
    y = dense_series(np.abs(np.arange(24) - 12) * 0.15 + rng.normal(0, 1.0, 24))
    ev = assess_onset(y, seed=3)
    assert assess_onset(y, seed=3).p_value == ev.p_value
    assert assess_onset(y, seed=3, alpha=min(ev.p_value * 1.01, 0.99)).detected


def test_a_clear_minimum_is_an_onset_with_an_interval_around_it():
    rng = np.random.default_rng(3)
    s = series_of(v_shape(40, 15, 0.5, 1.0, rng).tolist())
    ev = assess_onset(s, ci=0.95, seed=0)
    assert ev.detected and ev.no_onset is None and ev.p_value < 0.01
    assert ev.onset_lo <= ev.minimum_task <= ev.onset_hi and ev.onset_lo <= 15 <= ev.onset_hi
    assert ev.onset_hi - ev.onset_lo < 10
    assert sum(ev.onset_mass.values()) == pytest.approx(1.0)
    assert ev.rise_sd > 5 and ev.offsets == []  # one probe position: one intercept
    narrow = assess_onset(s, ci=0.5, seed=0)
    assert narrow.onset_hi - narrow.onset_lo <= ev.onset_hi - ev.onset_lo


def test_too_few_probes_for_the_noise_model():
    with pytest.raises(PlcError, match="has 4 probes; .* one intercept.* needs at least 5"):
        assess_onset(series_of([3.0, 1.0, 2.0, 4.0]))
    with pytest.raises(PlcError, match="has 6 probes; .*3 per-language offsets.* at least 7"):
        assess_onset(dense_series([3.0, 1.0, 2.0, 4.0, 5.0, 6.0]))


def test_rate_of_loss_is_the_ols_slope_after_the_minimum():
    rng = np.random.default_rng(5)
    values = np.r_[np.linspace(6.0, 0.0, 7), 0.8 * np.arange(1, 14) + rng.normal(0, 0.3, 13)]
    s = series_of(values.tolist())
    ev = assess_onset(s)
    i = s.task_index.index(ev.minimum_task)
    ref = linregress(s.task_index[i:], values[i:])
    assert ev.rate == pytest.approx(ref.slope) and ev.rate_se == pytest.approx(ref.stderr)
    assert ev.rate == pytest.approx(0.8, abs=0.1)


# ----------------------------------------------------------------- probe repeats, AUC from


def write_repeats(folder, run_id, tasks, values, spread):
    """One probe file per checkpoint holding two repeats (probe_seed 0 and 1) of its curve."""
    for t, v in zip(tasks, values, strict=True):
        rows = [
            {
                "kind": "probe",
                "run_id": run_id,
                "size": "5M",
                "n_params": 4_932_480,
                "task_index": t,
                "cycle": cycle_of(t),
                "lang": lang_of(t),
                "probe_lang": "vi",
                "probe_seed": seed,
                "step": step,
                "val_loss": 4.0 - step / 10,
                "auc": v + (spread if seed else -spread),
                "tokens_seen": t * 1000,
                "from_scratch": False,
            }
            for seed in (0, 1)
            for step in (0, 5, 10)
        ]
        write_metrics(metric_path(folder, "probe", run_id, t, lang_of(t)), rows)


def test_probe_repeats_are_averaged_and_resampled(tmp_path):
    tasks = list(range(1, 25))
    values = (3.0 + 0.004 * np.abs(np.arange(1, 25) - 10)).tolist()
    write_repeats(tmp_path / "tight", "r", tasks, values, 1e-5)
    write_repeats(tmp_path / "loose", "r", tasks, values, 0.02)
    tight, loose = (
        probe_series(read_probes(sorted((tmp_path / n).glob("*.parquet"))), "first", None)[0]
        for n in ("tight", "loose")
    )
    assert tight.n_repeats == loose.n_repeats == 2
    assert loose.auc == pytest.approx(values) and loose.value == pytest.approx(tight.value)
    assert loose.repeats[0] == pytest.approx(
        [100 * ((values[0] + d) / values[7] - 1) for d in (-0.02, 0.02)]
    )
    # The spread of a checkpoint's mean over its repeats is part of the noise the model draws.
    assert _repeat_var(loose.repeats) == pytest.approx(
        np.var(loose.repeats[0], ddof=1) / 2, rel=1e-6
    )
    assert _repeat_var(tight.repeats) < 1e-6 and _repeat_var([[1.0]] * 3) == 0.0
    res = fit_onset([str(tmp_path / "loose" / "*.parquet")], models=[], probe_after=None)
    assert res.runs[0].probe_repeats == 2


def test_auc_from_first_drops_the_step_zero_evaluation(tmp_path):
    curves = {}
    for t in (8, 16, 24, 32, 40):
        steps = [0, 4, 8, 12]
        losses = [5.0 + t / 10, 3.0 + (t - 24) ** 2 / 500, 2.5 + t / 200, 2.0]
        curves[t] = (steps, losses)
        rows = [
            {
                "kind": "probe",
                "run_id": "r",
                "size": "5M",
                "n_params": 5,
                "task_index": t,
                "cycle": cycle_of(t),
                "lang": "ru",
                "step": s,
                "val_loss": v,
                "auc": auc(steps, losses),
                "tokens_seen": t,
                "from_scratch": False,
            }
            for s, v in zip(steps, losses, strict=True)
        ]
        write_metrics(metric_path(tmp_path, "probe", "r", t, "ru"), rows)
    probes = read_probes(sorted(tmp_path.glob("*.parquet")))
    whole = probe_series(probes, "first", None, auc_from="0")[0]
    after = probe_series(probes, "first", None, auc_from="first")[0]
    assert whole.auc == pytest.approx([auc(*curves[t]) for t in whole.task_index])
    assert after.auc == pytest.approx([auc(s[1:], v[1:]) for s, v in curves.values()])
    with pytest.raises(PlcError, match="--auc-from must be 0 or first"):
        probe_series(probes, "first", None, auc_from="1")
    short = probes.filter(pl.col("step") <= 4)
    with pytest.raises(PlcError, match="fewer than two evaluations after step 0"):
        probe_series(short, "first", None, auc_from="first")
    with pytest.raises(PlcError, match="lack"):
        probe_series(probes.drop("val_loss"), "first", None, auc_from="first")


# --------------------------------------------------------------------- fit-onset with runs


@pytest.fixture
def mixed(tmp_path):
    """Three runs with an onset and one whose AUC is still falling at its last probe."""
    folder = tmp_path / "metrics"
    write_run(folder, "a-s0", "5M", 4_932_480, onset=14)
    write_run(folder, "b-s0", "27M", 27_922_752, onset=22)
    write_run(folder, "c-s0", "106M", 106_101_632, onset=40)
    write_run(folder, "d-s0", "314M", 314_841_600, onset=90)
    return folder


def test_runs_without_onset_are_reported_and_left_out_of_the_fits(mixed, tmp_path):
    res = fit_onset([str(mixed / "*.parquet")], models=["loglog"], out=tmp_path / "o.parquet")
    assert [r.onset for r in res.runs] == [14, 22, 40, None]
    d = res.runs[-1]
    assert not d.detected and not d.fitted and "still falling" in d.no_onset
    assert d.minimum_task == 64 and d.onset_tokens is None
    assert res.excluded == ["d-s0"] and res.fits[0].n_points == 3
    kept = fit_onset([str(mixed / "*.parquet")], models=["loglog"], keep_no_onset=True)
    assert kept.excluded == [] and kept.fits[0].n_points == 4
    # The table keeps the run with its reason and reads back the same way.
    table = pl.read_parquet(tmp_path / "o.parquet")
    assert table["detected"].to_list() == [True, True, True, False]
    assert table["onset"].to_list()[3] is None and table["minimum_task"].to_list()[3] == 64
    again = fit_onset([tmp_path / "o.parquet"], models=["loglog"])
    assert again.excluded == ["d-s0"] and again.fits[0].b == pytest.approx(res.fits[0].b)
    # Too few points left after the exclusions: the onsets are still reported, without a fit.
    few = fit_onset([str(mixed / "*.parquet")], models=["loglog"], alpha=0.001)
    assert few.fits == [] and "at least 3" in few.fits_skipped and len(few.excluded) >= 2


def test_a_study_without_a_fit_still_gets_its_onsets(mixed, tmp_path):
    from plc.study import fit_onset_or_runs

    # Two runs, every one detected: fit-onset refuses (bad input); a study shows the onsets.
    two = tmp_path / "two.csv"
    pl.DataFrame({"n_params": [4_932_480, 27_922_752], "onset": [14, 22]}).write_csv(two)
    with pytest.raises(PlcError, match="at least 3") as refused:
        fit_onset([two], models=["loglog"], bootstrap=200)
    res = fit_onset_or_runs([two], models=["loglog"], bootstrap=200)
    assert [r.onset for r in res.runs] == [14, 22]
    assert res.fits == [] and res.bootstrap is None and res.fits_skipped == str(refused.value)
    # Where the fit can be made, it is fit_onset itself.
    files = [str(mixed / "*.parquet")]
    fitted = fit_onset_or_runs(files, models=["loglog"])
    assert fitted.fits[0].b == fit_onset(files, models=["loglog"]).fits[0].b


def test_rate_of_loss_is_in_the_table_and_json(mixed):
    proc = run_plc("fit-onset", str(mixed / "*.parquet"), "--model", "none", "--json")
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)["runs"]
    assert all(r["rate"] > 0 and r["rate_se"] > 0 for r in runs[:3])
    assert runs[3]["detected"] is False and runs[3]["onset"] is None
    text = run_plc("fit-onset", str(mixed / "*.parquet"), "--model", "none").stdout
    assert "rate (%/task)" in text and "d-s0: no onset detected (no onset yet: still" in text
    assert "AR(1) residuals" in text and "leave out 1 run(s) with no onset detected: d-s0" in text


def test_suggest_dense_gives_the_cycles_around_each_minimum(mixed):
    res = fit_onset([str(mixed / "*.parquet")], models=[], suggest=1)
    got = [(d.run_id, d.minimum_task, d.cycle, d.first_cycle, d.last_cycle) for d in res.dense]
    # Minima at tasks 14, 22, 40, 64 are in cycles 2, 3, 5, 8; the runs' probes end in cycle 8.
    assert got == [
        ("a-s0", 14, 2, 1, 3),
        ("b-s0", 22, 3, 2, 4),
        ("c-s0", 40, 5, 4, 6),
        ("d-s0", 64, 8, 7, 8),
    ]
    assert res.dense_cycles == "1-8"
    assert [d.first_cycle for d in fit_onset([str(mixed / "*.parquet")], suggest=0).dense] == [
        2,
        3,
        5,
        8,
    ]
    text = run_plc("fit-onset", str(mixed / "*.parquet"), "--model", "none", "--suggest-dense", "2")
    assert "--dense-cycles 1-8" in text.stdout
    with pytest.raises(PlcError, match="≥ 0"):
        fit_onset([str(mixed / "*.parquet")], suggest=-1)


# ----------------------------------------------------------------- bootstrap of the fits


def test_bootstrap_intervals_of_table_v_and_eq_2(tmp_path):
    table = write_table_iv(tmp_path / "t4.csv")
    res = fit_onset([table], predict=[1e9], bootstrap=200, seed=1)
    for f in res.fits:
        assert f.a_ci[0] < f.a < f.a_ci[1] or f.model == "exp"
        assert f.b_ci[0] < f.b < f.b_ci[1]
    loglog = next(f for f in res.fits if f.model == "loglog")
    assert res.exponent == f"b = 0.83 [{loglog.b_ci[0]:.2f}, {loglog.b_ci[1]:.2f}]"
    # Same seed, same resamples (whichever models are fitted to them), same intervals.
    again = fit_onset([table], models=["loglog"], bootstrap=200, seed=1)
    assert again.fits[0].b_ci == loglog.b_ci
    assert fit_onset([table], models=["loglog"], bootstrap=200, seed=2).fits[0].b_ci != loglog.b_ci
    # The prediction's interval surrounds the 360 tasks of §V-A.
    pred = next(p for p in res.predictions if p.model == "loglog")
    assert pred.onset_tasks_ci[0] < 360 < pred.onset_tasks_ci[1]
    assert pred.onset_tokens_ci == pytest.approx([v * 5e9 for v in pred.onset_tasks_ci])
    assert res.bootstrap.used <= 200 and res.bootstrap.resample == "cases"
    proc = run_plc("fit-onset", table, "--model", "loglog", "--bootstrap", "200", "--json")
    got = json.loads(proc.stdout)
    assert got["exponent"].startswith("b = 0.83 [") and len(got["fits"][0]["b_ci"]) == 2
    text = run_plc("fit-onset", table, "--model", "loglog", "--bootstrap", "200").stdout
    assert "log-log exponent: b = 0.83 [" in text and "95 % interval" in text


def test_within_size_resampling_of_several_seeds(tmp_path):
    rows = [(s, p, t * f) for s, p, t in TABLE_IV for f in (0.8, 1.25)]
    table = tmp_path / "seeds.csv"
    pl.DataFrame(
        {
            "size": [r[0] for r in rows],
            "n_params": [r[1] for r in rows],
            "onset": [r[2] for r in rows],
            "seed": [0, 1] * len(TABLE_IV),
        }
    ).write_csv(table)
    res = fit_onset([table], models=["loglog"], bootstrap=300, resample="within-size")
    assert res.fits[0].n_points == 16 and res.bootstrap.used == 300
    assert res.fits[0].b_ci[0] < res.fits[0].b < res.fits[0].b_ci[1]
    assert [r.seed for r in res.runs[:2]] == ["0", "1"]


def test_bootstrap_draws_each_runs_onset_from_its_distribution():
    runs = [
        RunOnset("a", "s", 10, None, 5.0, None, onset_mass={4: 0.5, 6: 0.5}),
        RunOnset("b", "m", 100, None, 10.0, None, onset_mass={10: 1.0}),
        RunOnset("c", "l", 1000, None, 20.0, None),
    ]
    # Fixed sizes, one run each: only run a's onset varies, so b moves and stays in its range.
    ci, summary = bootstrap_fits(runs, ["loglog"], 2000, resample="within-size", seed=3)
    x = np.log([10, 100, 1000])
    slopes = [linregress(x, np.log([t, 10, 20])).slope for t in (4, 6)]
    assert ci["loglog"]["b"] == pytest.approx(sorted(slopes))
    assert summary.failed == {"loglog": 0} and summary.used == 2000


def test_bad_interval_input_is_one_line(tmp_path, mixed):
    table = write_table_iv(tmp_path / "t4.csv")
    assert_bad_input(run_plc("fit-onset", table, "--bootstrap", "50"), "at least 100", "resamples")
    assert_bad_input(run_plc("fit-onset", table, "--ci", "95"), "--ci", "between 0 and 1")
    assert_bad_input(
        run_plc("fit-onset", table, "--bootstrap", "100", "--resample", "within-size"),
        "every size here has one run",
    )
    for kwargs, message in (
        ({"ci": 0.0}, "--ci"),
        ({"ci": 1.0}, "--ci"),
        ({"resample": "jackknife"}, "--resample"),
        ({"bootstrap": 100, "models": []}, "--model none fits nothing"),
        ({"suggest": 1}, "probe metric files"),
        ({"alpha": 0.0}, "--alpha"),
        ({"alpha": 1.0}, "--alpha"),
    ):
        with pytest.raises(PlcError, match=message):
            fit_onset([table], **kwargs)
    with pytest.raises(PlcError, match="--auc-from"):
        fit_onset([str(mixed / "*.parquet")], auc_from="5")


@pytest.mark.slow
def test_coverage_of_the_exponents_interval_on_simulated_studies():
    """Studies of 8 sizes, one run each, with a known law T = 6·(P/P_0)^0.8, seed-to-seed scatter
    of the onset (30 % SD in log) and noise around a fall-then-rise of the AUC. Each run goes
    through the onset test (no-onset runs left out) and the fit through bootstrap_fits, as
    fit-onset does: the 95 % interval of b must contain 0.8 in 88–99 % of the studies, and be no
    wider than 1.5 times the ideal width (±1.96 SD of the fitted b over the studies)."""
    rng = np.random.default_rng(2024)
    b_true, studies, probes = 0.8, 100, 60
    p = np.geomspace(5e6, 5e6 * 6 ** (1 / b_true), 8)
    law = 6 * (p / p[0]) ** b_true  # 6 to 36 tasks
    tasks = np.arange(1, probes + 1, dtype=float)
    design = Design(tasks, np.zeros(probes, dtype=int))
    hits, widths, fitted = 0, [], []
    for k in range(studies):
        onset = law * np.exp(rng.normal(0.0, 0.3, p.size))
        runs = []
        for size, t in zip(p, onset, strict=True):
            v = judge_onset(design, v_shape(probes, t, 0.3, 1.0, rng), rng, 0.05, 0.0, 100, 200, 20)
            if v.detected:
                at, count = np.unique(tasks[v.knots], return_counts=True)
                mass = dict(zip(at.tolist(), (count / count.sum()).tolist(), strict=True))
                runs.append(RunOnset("r", "", size, probes, tasks[v.knot], None, onset_mass=mass))
        ci, _ = bootstrap_fits(runs, ["loglog"], 300, seed=k)
        lo, hi = ci["loglog"]["b"]
        hits += lo <= b_true <= hi
        widths.append(hi - lo)
        fitted.append(
            np.polyfit(np.log([r.n_params for r in runs]), np.log([r.onset for r in runs]), 1)[0]
        )
    assert 0.88 <= hits / studies <= 0.99
    assert np.mean(widths) < 1.5 * 2 * 1.96 * np.std(fitted)


# ------------------------------------------------------------------ seeds of one size


def test_one_size_is_no_error_and_its_seeds_are_pooled(tmp_path):
    folder = tmp_path / "metrics"
    for seed, onset in enumerate((14, 22, 30)):
        write_run(folder, f"nano-s{seed}", "nano", 50_112, onset=onset, en_probes=False)
    res = fit_onset([str(folder / "*.parquet")], bootstrap=200)
    assert [r.onset for r in res.runs] == [14, 22, 30] and res.fits == []
    assert res.fits_skipped.startswith("no law: one model size")
    (size,) = res.sizes
    assert (size.size, size.seeds, size.detected, size.onset) == ("nano", 3, 3, 22.0)
    assert 14 <= size.onset_lo < 22 < size.onset_hi <= 30
    text = run_plc("fit-onset", str(folder / "*.parquet")).stdout
    assert "Onset per size, pooled over its seeds" in text and "no law: one model size" in text
    assert "nano-s0: onset at task 14" in text


def test_pooled_interval_of_a_size_carries_the_seeds_and_their_intervals():
    runs = [
        RunOnset("a", "s", 10, None, 10.0, None, onset_mass={9: 0.5, 11: 0.5}),
        RunOnset("b", "s", 10, None, 20.0, None, onset_mass={20: 1.0}),
        RunOnset("c", "s", 10, None, None, None, detected=False),
        RunOnset("d", "m", 100, None, 5.0, None),
    ]
    (pooled,) = pool_seeds(runs, ci=0.95, seed=1)
    assert (pooled.seeds, pooled.detected, pooled.onset) == (3, 2, 15.0)
    assert pooled.onset_lo == pytest.approx(9.0) and pooled.onset_hi == pytest.approx(20.0)
