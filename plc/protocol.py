"""The protocol's constants, in one place (§IV-A, App. B, Table V).

Torch-free and import-free so that every module, the CLI's help texts and the shell scripts'
documentation can name them without cost.
"""

from __future__ import annotations

# §IV-A: the continual-pretraining cycle, chosen so that consecutive languages differ, and the
# held-out probe language (the only austroasiatic one).
CYCLE = ("en", "zh", "fr", "ja", "es", "de", "pt", "ru")
PROBE_LANG = "vi"
# App. B: extended probing after the languages whose transfer to vi is like ru's (Table III).
PAPER_PROBE_AFTER = ("zh", "de", "ru")
# App. B: the onset is the minimum of a centred moving average of this many probes.
ONSET_WINDOW = 3
# A run's verdict: the estimator that judges its probe series (plc.onset.estimators) and the
# false-alarm rate of its test of a rise after the minimum (per run).
ONSET_ESTIMATOR = "noise-model"
ONSET_ALPHA = 0.05
# §V-B: entropy is measured on ru, dormant units on the probe language.
ENTROPY_LANG = "ru"
# The last task of a checkpoint that is a point of its suite's pretraining (`plc init
# --along-pretraining`, `plc plan checkpoints`): its metric files' language.
PRETRAIN_LANG = "pretrain"
# Last-task "languages" with no token store of their own (a mixture, a suite's pretraining): the
# measures that read the last task's language read the probe language's store instead.
NO_STORE_LANGS = ("", "mix", PRETRAIN_LANG)

# The figures `plc plot` draws (paper figure numbers in plc.plot).
PLOT_KINDS = ("auc", "probing", "onset", "correlates", "dormant-layers", "entropy")

# A fit of Table V has two coefficients; a third point leaves a degree of freedom for the STEs.
MIN_FIT_POINTS = 3


def default_probe_after(cycle: tuple[str, ...] = CYCLE) -> tuple[str, ...]:
    """Where a run probes unless told (plan, fit-onset, demo, bin/): App. B's zh, de and ru in the
    paper's cycle; in another cycle its last language (a probe after every cycle's end)."""
    return PAPER_PROBE_AFTER if tuple(cycle) == CYCLE else (cycle[-1],)


def cycle_of(task_index: int, cycle_len: int = len(CYCLE)) -> int:
    """Cycle number of the checkpoint after `task_index` tasks: tasks 1–8 are cycle 1, 0 is cycle 0."""
    return 0 if task_index <= 0 else (task_index - 1) // cycle_len + 1
