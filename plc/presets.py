"""Named protocol presets shared by train-task, probe, plan and demo (torch-free).

`paper` is §IV-A/B as published. The small presets keep the protocol's shape (the 8-language cycle,
optimizer reset and warm-up restarted every task, 5 % warm-up, probe cadence of about a percent of
a probe's steps where that leaves enough points, the entropy query window as a fraction of the
context) and shrink only tokens, batch, context and model size. Explicit flags override a preset.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from plc.errors import PlcError
from plc.sizes import PAPER_SIZES


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    task_tokens: int  # tokens per task instance
    probe_tokens: int  # tokens per probe (§IV-A: as many as a task)
    batch_tokens: int  # global batch, in tokens
    seq_len: int  # training sequence length
    context: int  # model context for `plc init`
    warmup: float  # fraction of a task's steps with linear warm-up, restarted every task
    weight_decay: float  # AdamW's, on matrices and embeddings (§IV-B: 0.1)
    micro_batch: int | None  # sequences per forward/backward per rank; None = the whole share
    probe_eval_every: int  # probe steps between validation evaluations
    probe_eval_seqs: int  # fixed validation sequences of the probe language
    dormant_seqs: int  # probe-language validation sequences for dormant units (eq. 3–4)
    entropy_seqs: int  # ru validation sequences for attention entropy (eq. 5)
    entropy_query_start: (
        float  # first query position of the entropy window, as a fraction of seq_len
    )
    sizes: tuple[str, ...]  # model sizes a plan of this preset trains
    tokenizer: str
    cycles: int  # cycles of 8 tasks a plan of this preset runs
    # (train, val) tokens `plc shard` writes per training language and for the probe language;
    # None: the whole source (train) and ~10 % of its documents (val), or a markov source's own.
    shard_tokens: tuple[int | None, int | None] = (None, None)
    probe_shard_tokens: tuple[int | None, int | None] = (None, None)

    @property
    def batch_size(self) -> int:
        """Sequences per global batch."""
        return self.batch_tokens // self.seq_len

    @property
    def steps(self) -> int:
        """Optimizer steps per task: the token budget rounded up to whole batches (5B → 9,537)."""
        return steps_for(self.task_tokens, self.batch_tokens)

    @property
    def probe_steps(self) -> int:
        return steps_for(self.probe_tokens, self.batch_tokens)

    def probe_eval_every_for(self, steps: int) -> int:
        """The probe cadence for a probe of `steps`: the preset's fraction of its own probe's steps
        (paper: 95 of 9,537), so a shorter probe still gets a curve, not two points."""
        return max(1, round(steps * self.probe_eval_every / self.probe_steps))

    @property
    def warmup_steps(self) -> int:
        return warmup_steps(self.warmup, self.steps)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "steps": self.steps,
            "probe_steps": self.probe_steps,
            "warmup_steps": self.warmup_steps,
        }


def steps_for(tokens: int, batch_tokens: int) -> int:
    return math.ceil(tokens / batch_tokens)


def warmup_steps(fraction: float, steps: int) -> int:
    """Steps of linear warm-up: the fraction of the task's steps, at least one when positive."""
    return 0 if fraction <= 0 else max(1, round(fraction * steps))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="paper",
            description="§IV-A/B: 5B tokens per task, 0.5M-token batches of 2,048-token sequences",
            task_tokens=5_000_000_000,
            probe_tokens=5_000_000_000,
            batch_tokens=524_288,
            seq_len=2048,
            context=2048,
            warmup=0.05,
            weight_decay=0.1,
            micro_batch=16,
            probe_eval_every=95,
            probe_eval_seqs=1280,
            dormant_seqs=256,
            entropy_seqs=512,
            entropy_query_start=256 / 2048,
            sizes=tuple(PAPER_SIZES),
            tokenizer="qwen3",
            cycles=48,
            # §IV-A: a pool of 100B training and 1B evaluation tokens per training language, 20B
            # + 1B for Vietnamese; each task samples its 5B tokens from the pool.
            shard_tokens=(100_000_000_000, 1_000_000_000),
            probe_shard_tokens=(20_000_000_000, 1_000_000_000),
        ),
        Preset(
            name="cpu",
            description="laptop CPU: byte vocabulary, nano/micro/mini models, a task in seconds",
            task_tokens=32_768,
            probe_tokens=32_768,
            batch_tokens=1024,
            seq_len=64,
            context=64,
            warmup=0.05,
            weight_decay=0.1,
            micro_batch=None,
            probe_eval_every=4,
            probe_eval_seqs=30,  # the embedded vi corpus holds 31 validation windows of 65 bytes
            dormant_seqs=30,
            entropy_seqs=28,  # and ru 29
            entropy_query_start=256 / 2048,
            sizes=("nano", "micro", "mini"),
            tokenizer="byte",
            cycles=3,
        ),
        Preset(
            name="tiny",
            description="tests: the nano model, a task in well under a second of compute",
            task_tokens=2048,
            probe_tokens=2048,
            batch_tokens=256,
            seq_len=32,
            context=32,
            warmup=0.05,
            weight_decay=0.1,
            micro_batch=None,
            probe_eval_every=2,
            probe_eval_seqs=4,
            dormant_seqs=4,
            entropy_seqs=4,
            entropy_query_start=256 / 2048,
            sizes=("nano",),
            tokenizer="byte",
            cycles=2,
        ),
        Preset(
            name="control",
            description="positive control: a new Markov chain per task, loss of plasticity in minutes",
            task_tokens=128 * 1024,
            probe_tokens=96 * 1024,
            batch_tokens=1024,
            seq_len=64,
            context=64,
            warmup=0.05,
            weight_decay=0.0,  # weight decay 0.1 is the remedy the control shows working
            micro_batch=None,
            probe_eval_every=4,
            probe_eval_seqs=28,
            dormant_seqs=28,
            entropy_seqs=28,
            entropy_query_start=256 / 2048,
            sizes=("nano", "micro"),
            tokenizer="byte",
            cycles=6,  # 48 tasks: `plc plan control` gives each its own chain (m01…m48)
        ),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise PlcError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
