"""Onset of plasticity loss and its scaling law (§V-A, Appendix B, Tables IV–V, eq. 1–2): the
statistics, below the study (plc.study, which judges a study's runs with them, once).

From `probe` metric rows, per run (series): one AUC per probe, normalised by eq. 1 or by the AUC of
training the probe language alone from scratch, optionally only the probes after some languages
(App. B: zh, de, ru). Per run, an estimator behind one interface (estimators): the default, a
noise model estimated from the series itself (noise, detect) — per-language offsets, a
broken-stick or curved trend, AR(1) residuals — with a test of "no rise after the minimum" at a stated
false-alarm rate, the onset (the fitted trend's minimum, possibly the first probe) and its
interval; or the paper's moving-average minimum. Across runs (fit, bootstrap, table): the four
fits of Table V, their bootstrap intervals and backtests, the log-log law and each size's onset
pooled over its seeds with the runs showing no onset censored (censored), the onset table. How it all reads (view) and how well an estimator works on synthetic studies with a known
truth (calibrate). docs/estimators.md has the why and the numbers.
"""

from plc.onset.bootstrap import (
    MIN_BOOTSTRAP,
    RESAMPLE,
    BootstrapSummary,
    SizeOnset,
    bootstrap_fits,
    check_interval_options,
    pool_seeds,
)
from plc.onset.censored import CensoredLaw, censored_law
from plc.onset.detect import ALPHA, OnsetEvidence, assess_onset, check_alpha, judge_onset
from plc.onset.estimators import (
    ESTIMATORS,
    NO_RISE,
    ONSET,
    STILL_FALLING,
    TOO_FEW,
    VERDICTS,
    Estimator,
    get_estimator,
    verdict_of,
)
from plc.onset.fit import (
    FORMULAS,
    LOSSES,
    MODELS,
    Backtest,
    Fit,
    NoLaw,
    backtest,
    check_points,
    fit_model,
    parse_models,
    parse_numbers,
)
from plc.onset.inputs import (
    BASELINE,
    BY,
    TABLE_COLUMNS,
    check_by,
    expand_inputs,
    method_order,
    read_finite,
    read_probes,
    run_methods,
    split_inputs,
)
from plc.onset.series import (
    AUC_FROM,
    END_OF_CYCLE,
    NORMALIZE,
    ProbeSeries,
    find_onset,
    jitter,
    moving_average,
    onset_position,
    parse_probe_after,
    probe_series,
)
from plc.onset.table import (
    ONE_SIZE,
    PAPER_TASK_TOKENS,
    DenseSuggestion,
    GroupFits,
    OnsetResult,
    Prediction,
    RunOnset,
    fit_groups,
    split_by_method,
    suggest_dense,
    table_runs,
    write_onset_table,
)
from plc.onset.view import format_count, format_onset
from plc.protocol import PAPER_PROBE_AFTER

__all__ = [
    "ALPHA",
    "LOSSES",
    "NO_RISE",
    "ONSET",
    "STILL_FALLING",
    "TOO_FEW",
    "Backtest",
    "CensoredLaw",
    "NoLaw",
    "backtest",
    "censored_law",
    "AUC_FROM",
    "BASELINE",
    "ESTIMATORS",
    "BY",
    "END_OF_CYCLE",
    "FORMULAS",
    "MIN_BOOTSTRAP",
    "MODELS",
    "NORMALIZE",
    "ONE_SIZE",
    "PAPER_PROBE_AFTER",
    "PAPER_TASK_TOKENS",
    "RESAMPLE",
    "TABLE_COLUMNS",
    "VERDICTS",
    "BootstrapSummary",
    "DenseSuggestion",
    "Estimator",
    "Fit",
    "GroupFits",
    "OnsetEvidence",
    "OnsetResult",
    "Prediction",
    "ProbeSeries",
    "RunOnset",
    "SizeOnset",
    "assess_onset",
    "bootstrap_fits",
    "check_alpha",
    "check_by",
    "check_interval_options",
    "check_points",
    "expand_inputs",
    "find_onset",
    "fit_groups",
    "fit_model",
    "format_count",
    "format_onset",
    "get_estimator",
    "jitter",
    "judge_onset",
    "method_order",
    "moving_average",
    "onset_position",
    "parse_models",
    "parse_numbers",
    "parse_probe_after",
    "pool_seeds",
    "probe_series",
    "read_finite",
    "read_probes",
    "run_methods",
    "split_by_method",
    "split_inputs",
    "suggest_dense",
    "table_runs",
    "verdict_of",
    "write_onset_table",
]
