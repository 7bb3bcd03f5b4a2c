"""How sure an onset is: jitter, "no onset detected", per-run intervals, probe repeats, the rate of
loss, --auc-from, --suggest-dense, and bootstrap intervals of the fits (with a coverage study)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from conftest import assert_bad_input, run_plc
from scipy.stats import linregress
from test_onset import TABLE_IV, lang_of, write_run, write_table_iv
from test_onset import _series as series_of

from plc.errors import PlcError
from plc.onset import (
    RunOnset,
    assess_onset,
    bootstrap_fits,
    fit_onset,
    jitter,
    probe_series,
    read_probes,
    resample_minima,
    trend3,
)
from plc.probe import auc
from plc.store import cycle_of, metric_path, write_metrics


def v_shape(n: int, onset: float, slope: float, noise: float, rng) -> np.ndarray:
    """AUC change falling to `onset` and rising after it, plus independent noise."""
    t = np.arange(1, n + 1)
    return slope * np.abs(t - onset) + rng.normal(0.0, noise, n)


# ------------------------------------------------------------------------ the noise unit


def test_jitter_is_the_sd_around_the_three_point_moving_average():
    y = [0.0, 3.0, 1.0, 4.0, 2.0, 6.0]
    residuals = [y[i] - (y[i - 1] + y[i] + y[i + 1]) / 3 for i in range(1, len(y) - 1)]
    assert jitter(y) == pytest.approx(np.std(residuals, ddof=1))
    assert np.isnan(jitter([1.0, 2.0, 0.0]))  # one residual has no spread
    # Around a 3-point average, independent noise of SD σ leaves residuals of SD σ·sqrt(2/3).
    noise = np.random.default_rng(0).normal(0.0, 2.0, 20_000)
    assert jitter(noise) == pytest.approx(2.0 * np.sqrt(2 / 3), rel=0.02)


def test_trend_and_leverage_at_the_ends():
    trend, leverage = trend3([3.0, 1.0, 2.0, 6.0])
    assert trend.tolist() == pytest.approx([2.0, 2.0, 3.0, 4.0])
    assert leverage.tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 3, 1 / 2])


def test_resampled_series_carry_the_noise_not_the_shrunken_residuals():
    # On a flat series of pure noise, the minimum of each resampled (unsmoothed) series sits
    # anywhere; and the spread of the values drawn is the noise's, not sqrt(2/3) of it.
    rng = np.random.default_rng(1)
    y = rng.normal(0.0, 1.0, 400)
    picks = resample_minima(y, [], 1, 2000, np.random.default_rng(2))
    assert np.unique(picks).size > 200
    trend, leverage = trend3(y)
    adjusted = (y - trend) / np.sqrt(1 - leverage)
    assert np.std(adjusted) == pytest.approx(1.0, rel=0.1)
    assert np.std(y - trend) == pytest.approx(np.sqrt(2 / 3), rel=0.1)


# ------------------------------------------------------------------- is there an onset?


def test_a_clear_minimum_is_an_onset_with_an_interval_around_it():
    rng = np.random.default_rng(3)
    s = series_of(v_shape(40, 15, 0.5, 1.0, rng).tolist())
    ev = assess_onset(s, window=3, ci=0.95, seed=0)
    assert ev.detected and ev.no_onset is None
    assert ev.onset_lo <= ev.minimum_task <= ev.onset_hi and ev.onset_lo <= 15 <= ev.onset_hi
    assert ev.onset_hi - ev.onset_lo < 15
    assert sum(ev.onset_mass.values()) == pytest.approx(1.0)
    assert max(ev.onset_mass, key=ev.onset_mass.get) in range(11, 20)
    assert ev.rise_jitter > 10 and ev.jitter == pytest.approx(jitter(s.value))
    # The same seed gives the same interval; a lower level a narrower one.
    assert assess_onset(s, seed=0).onset_mass == ev.onset_mass
    narrow = assess_onset(s, ci=0.5, seed=0)
    assert narrow.onset_hi - narrow.onset_lo <= ev.onset_hi - ev.onset_lo


def test_edge_minima_are_not_onsets():
    rising = series_of([0.0, 1.0, 2.5, 2.9, 4.2, 5.0, 6.3, 6.8])
    ev = assess_onset(rising)
    assert not ev.detected and ev.minimum_task == 2  # the first smoothed point
    assert "edge minimum" in ev.no_onset and "first smoothed point (task 2)" in ev.no_onset
    falling = series_of([6.0, 5.0, 4.2, 3.1, 2.2, 1.0, 0.4, 0.0])
    ev = assess_onset(falling)
    assert not ev.detected and ev.minimum_task == 7 and "still falling" in ev.no_onset
    assert ev.rise == 0.0
    # Without smoothing the edges are the first and last probes.
    assert assess_onset(rising, window=1).minimum_task == 1
    assert "edge minimum" in assess_onset(rising, window=1).no_onset


def test_a_rise_within_noise_is_not_an_onset_unless_the_threshold_allows_it():
    rng = np.random.default_rng(4)
    flat = series_of(rng.normal(0.0, 1.0, 30).tolist())
    ev = assess_onset(flat)
    assert not ev.detected and "rise within noise" in ev.no_onset
    assert ev.rise_jitter < 3 and f"{ev.rise_jitter:.1f} jitter units" in ev.no_onset
    assert ev.rise == pytest.approx(
        [v for v in flat.smoothed if v is not None][-1] - min(v for v in flat.smoothed if v)
    )
    assert assess_onset(flat, min_rise=ev.rise_jitter * 0.99).detected


def test_too_few_probes_to_measure_the_jitter():
    ev = assess_onset(series_of([3.0, 1.0, 2.0]), window=1)
    assert not ev.detected and "too few probes (3)" in ev.no_onset and ev.onset_mass is None


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
    # Same series, same jitter; the loose repeats spread the onset's mass further.
    a, b = assess_onset(tight), assess_onset(loose)
    assert a.jitter == pytest.approx(b.jitter)
    assert max(b.onset_mass.values()) < max(a.onset_mass.values())
    assert b.onset_hi - b.onset_lo > a.onset_hi - a.onset_lo
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
    assert d.minimum_task == 62 and d.onset_tokens is None
    assert res.excluded == ["d-s0"] and res.fits[0].n_points == 3
    kept = fit_onset([str(mixed / "*.parquet")], models=["loglog"], keep_no_onset=True)
    assert kept.excluded == [] and kept.fits[0].n_points == 4
    # The table keeps the run with its reason and reads back the same way.
    table = pl.read_parquet(tmp_path / "o.parquet")
    assert table["detected"].to_list() == [True, True, True, False]
    assert table["onset"].to_list()[3] is None and table["minimum_task"].to_list()[3] == 62
    again = fit_onset([tmp_path / "o.parquet"], models=["loglog"])
    assert again.excluded == ["d-s0"] and again.fits[0].b == pytest.approx(res.fits[0].b)
    # Too few points left after the exclusions: the onsets are still reported, without a fit.
    few = fit_onset([str(mixed / "*.parquet")], models=["loglog"], min_rise=30)
    assert few.fits == [] and "at least 3" in few.fits_skipped and len(few.excluded) >= 2


def test_rate_of_loss_is_in_the_table_and_json(mixed):
    proc = run_plc("fit-onset", str(mixed / "*.parquet"), "--model", "none", "--json")
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)["runs"]
    assert all(r["rate"] > 0 and r["rate_se"] > 0 for r in runs[:3])
    assert runs[3]["detected"] is False and runs[3]["onset"] is None
    text = run_plc("fit-onset", str(mixed / "*.parquet"), "--model", "none").stdout
    assert "rate (%/task)" in text and "d-s0: no onset detected (edge minimum" in text
    assert (
        "Noise unit: jitter" in text and "leave out 1 run(s) with no onset detected: d-s0" in text
    )


def test_suggest_dense_gives_the_cycles_around_each_minimum(mixed):
    res = fit_onset([str(mixed / "*.parquet")], models=[], suggest=1)
    got = [(d.run_id, d.minimum_task, d.cycle, d.first_cycle, d.last_cycle) for d in res.dense]
    # Minima at tasks 14, 22, 40, 62 are in cycles 2, 3, 5, 8; the runs' probes end in cycle 8.
    assert got == [
        ("a-s0", 14, 2, 1, 3),
        ("b-s0", 22, 3, 2, 4),
        ("c-s0", 40, 5, 4, 6),
        ("d-s0", 62, 8, 7, 8),
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
    assert "log-log exponent: b = 0.83 [" in text and "95% interval" in text


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
        ({"min_rise": -1.0}, "--min-rise"),
    ):
        with pytest.raises(PlcError, match=message):
            fit_onset([table], **kwargs)
    with pytest.raises(PlcError, match="--auc-from"):
        fit_onset([str(mixed / "*.parquet")], auc_from="5")


def test_coverage_of_the_exponents_interval_on_simulated_studies():
    """Studies of 8 sizes, one run each, with a known law T = 6·(P/P_0)^0.8, seed-to-seed scatter
    of the onset (30 % SD in log) and checkpoint jitter around a fall-then-rise of the AUC. Each
    run goes through assess_onset (no-onset runs left out) and the fit through bootstrap_fits, as
    fit-onset does: the 95 % interval of b must contain 0.8 in 90–99 % of the studies, and be no
    wider than 1.5 times the ideal width (±1.96 SD of the fitted b over the studies)."""
    rng = np.random.default_rng(2024)
    b_true, studies, probes = 0.8, 200, 80
    p = np.geomspace(5e6, 5e6 * 6 ** (1 / b_true), 8)
    law = 6 * (p / p[0]) ** b_true  # 6 to 36 tasks
    hits, widths, fitted = 0, [], []
    for k in range(studies):
        onset = law * np.exp(rng.normal(0.0, 0.3, p.size))
        runs = []
        for j, (size, t) in enumerate(zip(p, onset, strict=True)):
            s = series_of(v_shape(probes, t, 0.3, 1.0, rng).tolist())
            s.run_id = f"{k}-{j}"
            ev = assess_onset(s, resamples=300, seed=k)
            if ev.detected:
                mass = ev.onset_mass
                runs.append(
                    RunOnset(s.run_id, "", size, probes, ev.minimum_task, None, onset_mass=mass)
                )
        ci, _ = bootstrap_fits(runs, ["loglog"], 300, seed=k)
        lo, hi = ci["loglog"]["b"]
        hits += lo <= b_true <= hi
        widths.append(hi - lo)
        fitted.append(
            np.polyfit(np.log([r.n_params for r in runs]), np.log([r.onset for r in runs]), 1)[0]
        )
    assert 0.90 <= hits / studies <= 0.99
    assert np.mean(widths) < 1.5 * 2 * 1.96 * np.std(fitted)
