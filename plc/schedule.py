"""The learning rate of every step of a task: the paper's schedule and the continual-pretraining
recipes (`--schedule`, one field of plc.options; docs/recipes.md).

Step s is 0-based within a task of S steps with W warm-up steps (`--warmup`), peak η (`--lr`) and
floor f·η (`--lr-floor` f, a fraction of the peak):

- constant (§IV-B, the default): η·(s+1)/W over the warm-up, then η. Every task re-warms from
  η/W: the protocol's reset (`lr_at`).
- cosine — re-warm and re-decay every task (Ibrahim et al. 2024, "Simple and Scalable Strategies
  to Continually Pre-train LLMs"; OLMo-core's CosWithWarmup): the warm-up, then
  f·η + (1 − f)·η·(1 + cos πp)/2 with p = (s − W)/(S − 1 − W), so the first step after the
  warm-up is at the peak and the last step of the task at the floor. Default f = 0.1 (their
  η_min = 0.1·η_max).
- wsd — warm-up, stable, decay (Hägele et al. 2024; OLMo-core's WSD): the warm-up, η, and over
  the task's last D = max(1, round(d·S)) steps (`--lr-decay` d, default 0.1 as OLMo-core) a
  linear decay from η to the floor, reached at the last step:
  min(warm-up or η, f·η + (1 − f)·η·(S − 1 − s)/D). Default f = 0 (OLMo-core's decay_min_lr).
- rsqrt — the "infinite" schedule (one warm-up for the whole run, no re-warming; Ibrahim et al.'s
  infinite schedules, gpt-neox #1375): with t the run's step (the steps of earlier tasks + s),
  η·(t+1)/W over the run's first W steps, then η·√(W/(t+1)) (W ≥ 1). No decay to a floor within
  a task unless `--lr-decay` d is given: then a cool-down over the task's last D steps, linear
  from the value where it starts to f·η (default 0) at the last step — for a task whose
  checkpoint is kept (the run continues from it, cooled down: plc writes one checkpoint a task).

Every schedule is a pure function of the step, so a resumed task follows it bit-exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plc.options import TrainOptions


def lr_at(step: int, lr: float, warmup_steps: int) -> float:
    """Learning rate of 0-based step `step`: lr·(step+1)/warmup over the warm-up, then lr."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr


def decay_steps(fraction: float, steps: int) -> int:
    """Steps of a decay over `fraction` of a task's steps: at least one."""
    return max(1, round(fraction * steps))


def learning_rate(
    options: TrainOptions, *, warmup: int, first: int = 0, run_step: int = 0
) -> Callable[[int], float]:
    """The learning rate of each of the loop's steps s = 0 … options.steps − 1.

    `warmup`: warm-up steps (the task's, or a continued run's one warm-up); `first`: the run step
    of the loop's step 0 in a continued run (the constant schedule's warm-up counts it);
    `run_step`: the run's steps before this task (rsqrt's one warm-up and its 1/√t count them)."""
    peak, steps, schedule = options.lr, options.steps, options.schedule
    if schedule == "constant":
        return lambda s: lr_at(first + s, peak, warmup)
    floor = peak * options.lr_floor

    if schedule == "cosine":

        def cosine(s: int) -> float:
            if s < warmup:
                return lr_at(s, peak, warmup)
            p = 1.0 if s >= steps - 1 else (s - warmup) / (steps - 1 - warmup)
            return floor + (peak - floor) * (1 + math.cos(math.pi * p)) / 2

        return cosine

    def rsqrt(s: int) -> float:
        t, w = run_step + s, max(1, warmup)
        return lr_at(t, peak, w) if t < w else peak * math.sqrt(w / (t + 1))

    base = rsqrt if schedule == "rsqrt" else (lambda s: lr_at(s, peak, warmup))
    if options.lr_decay is None:  # rsqrt without a cool-down
        return base
    n = decay_steps(options.lr_decay, steps)
    start = steps - n
    top = peak if schedule == "wsd" else base(start)

    def decayed(s: int) -> float:
        if s < start:
            return base(s)
        return min(base(s), floor + (top - floor) * (steps - 1 - s) / n)

    return decayed
