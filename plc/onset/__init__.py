"""Onset of plasticity loss and its scaling law (§V-A, Appendix B, Tables IV–V, eq. 1–2).

From `probe` metric rows, per run (series): one AUC per probe, normalised by eq. 1 or by the AUC of
training the probe language alone from scratch, optionally only the probes after some languages
(App. B: zh, de, ru). Per run (noise, detect): a noise model estimated from the series itself —
per-language offsets, a broken-stick trend, AR(1) residuals — a test of "no rise after the
minimum" with a stated false-alarm rate, the onset (the fitted trend's minimum, possibly the first
probe) and its interval. Across runs (fit, bootstrap, table): the four fits of Table V, their
bootstrap intervals, each size's onset pooled over its seeds, the onset table. How it all reads
(view) and how well it works on synthetic studies with a known truth (calibrate).
docs/estimators.md has the why and the numbers.
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
from plc.onset.detect import (
    ALPHA,
    NO_RISE,
    ONSET,
    STILL_FALLING,
    TOO_FEW,
    VERDICTS,
    OnsetEvidence,
    assess_onset,
    check_alpha,
    judge_onset,
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
    collect_onsets,
    fit_groups,
    fit_onset,
    fit_onset_or_runs,
    split_by_method,
    suggest_dense,
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
    "VERDICTS",
    "Backtest",
    "CensoredLaw",
    "NoLaw",
    "backtest",
    "censored_law",
    "AUC_FROM",
    "BASELINE",
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
    "BootstrapSummary",
    "DenseSuggestion",
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
    "collect_onsets",
    "expand_inputs",
    "find_onset",
    "fit_groups",
    "fit_model",
    "fit_onset",
    "fit_onset_or_runs",
    "format_count",
    "format_onset",
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
    "read_probes",
    "run_methods",
    "split_by_method",
    "split_inputs",
    "suggest_dense",
    "write_onset_table",
]
