"""A study: its files, its plan, and the per-run verdicts computed once (issue 27).

Below `plc status`, `report`, `plot`, `demo` and `fit-onset`, above the statistics (plc.onset)
and the plans (plc.plan):

- `files`: what a walk of a study's folder finds, and the plan its metric files belong to;
- `verdicts`: the study's verdict settings (VerdictOptions: estimator, α, window, probe positions)
  and `run_verdicts`, the one function that judges runs, with `judge` reading metric files for it;
- `onsets`: `plc fit-onset`, the fits of Table V to the verdicts (and to onset tables);
- `run`: `run_study`, a plan run end to end and read (the demo and the examples).
"""

from plc.study.files import MetricFile, StudyFiles, find_study_files, is_plc_plan, plan_of_metrics
from plc.study.onsets import fit_judged, fit_onset, fit_onset_or_runs, judge_inputs
from plc.study.verdicts import (
    FROM_PLAN,
    Judged,
    VerdictOptions,
    judge,
    judge_rows,
    judge_study,
    run_verdicts,
    verdict_options,
)

__all__ = [
    "FROM_PLAN",
    "Judged",
    "MetricFile",
    "StudyFiles",
    "VerdictOptions",
    "find_study_files",
    "fit_judged",
    "fit_onset",
    "fit_onset_or_runs",
    "is_plc_plan",
    "judge",
    "judge_inputs",
    "judge_rows",
    "judge_study",
    "plan_of_metrics",
    "run_verdicts",
    "verdict_options",
]
