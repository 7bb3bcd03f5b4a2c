"""The settings of one training run, from the flags to the loop: `TrainOptions`.

One frozen object carries every setting that train-task, probe and the loop share. Each field
declares its own command-line flag and help (`cli` metadata), so `plc.cli` builds the flags of
every training command from this class alone: a new training setting is one field here and the
code that uses it in plc.train.

Fields left at None take the protocol preset's value when the options are resolved
(`TrainOptions.resolve`), and the preset itself defaults to the one the checkpoint was
initialised with. Validation of a field alone happens at construction, of combinations at
resolution, so Python callers get the same one-line errors (PlcError) as the command line.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from plc.errors import PlcError
from plc.memory import STRATEGIES
from plc.presets import get_preset, steps_for, warmup_steps
from plc.protocol import ENTROPY_LANG, NO_STORE_LANGS, PROBE_LANG
from plc.sizes import paper_lr


def _flag(
    default: Any, flag: str, help: str, cli_type: type, panel: str | None = "Training"
) -> Any:
    """A field with its command-line flag: `cli_type` is what the flag parses, `panel` the group of
    flags it is listed in by --help."""
    return field(
        default=default,
        metadata={"flag": flag, "help": help, "cli_type": cli_type, "panel": panel},
    )


def _remedy(default: Any, flag: str, help: str, cli_type: type) -> Any:
    """A field of MitigationOptions: a remedy's setting, listed under Mitigations by --help."""
    return _flag(default, flag, help, cli_type, "Mitigations (plc.mitigations; default off)")


def _recipe(default: Any, flag: str, help: str, cli_type: type) -> Any:
    """A field of MitigationOptions: a continual-pretraining recipe's setting (a learning-rate
    schedule, replay, a gradual transition; docs/recipes.md), listed under Recipes by --help."""
    return _flag(default, flag, help, cli_type, "Recipes (docs/recipes.md; default the paper's)")


SHRINK_AT = ("task", "step")
SWR_EVERY = 128  # collas_2025_swr_paper's ViT config: reinit_freq 128
SCHEDULES = ("constant", "cosine", "wsd", "rsqrt")
# A schedule's floor (a fraction of the peak) and decay fraction when not given: Ibrahim et al.
# 2024 re-decay cosine to 0.1 of the peak; OLMo-core's WSD decays over the last 10 % to 0.
SCHEDULE_FLOOR = {"cosine": 0.1, "wsd": 0.0, "rsqrt": 0.0}
SCHEDULE_DECAY = {"wsd": 0.1}
PERTURB_SIGMA = 1.0  # diagnose's perturbation: one init std of each layer (plc.measures)


def _positive(name: str, v: float) -> None:
    if not (math.isfinite(v) and v > 0):
        raise PlcError(f"{name} must be a positive number, got {v}")


@dataclass(frozen=True)
class MitigationOptions:
    """Which remedies and recipes a task trains with (None = off): declared here once, inherited by
    TrainOptions (so each is one flag of every training command), read by plc.mitigations (whose
    docstring defines each remedy), plc.schedule (the learning-rate schedules), plc.task (replay
    and gradual transitions), `plc plan --mitigation` (`parse_mitigation`) and `plc intervene`.
    Together they are a task's study arm: `label` names it in run ids and metric rows."""

    schedule: str = _recipe(
        "constant",
        "--schedule",
        "Learning rate within a task: constant (the paper's), cosine (re-warm, re-decay to the "
        "floor every task), wsd (warm-up, stable, decay over the task's last --lr-decay), rsqrt "
        "(one warm-up per run, then 1/√step; a cool-down only with --lr-decay).",
        str,
    )
    lr_floor: float | None = _recipe(
        None,
        "--lr-floor",
        "The schedule's floor as a fraction of the peak (cosine 0.1, wsd and rsqrt 0).",
        float,
    )
    lr_decay: float | None = _recipe(
        None,
        "--lr-decay",
        "wsd, rsqrt: the fraction of the task's steps that decay to the floor (wsd 0.1; rsqrt: "
        "none — give it on a task whose checkpoint is kept).",
        float,
    )
    replay: float | None = _recipe(
        None,
        "--replay",
        "r: a fraction r of every batch from the languages of earlier tasks (0 = off).",
        float,
    )
    replay_last: int | None = _recipe(
        None, "--replay-last", "Replay only the last K earlier languages (default: all).", int
    )
    transition: int | None = _recipe(
        None,
        "--transition",
        "K: the batches move from the previous task's language to this one over its first K "
        "steps (0 = the abrupt switch).",
        int,
    )

    clip_weights: float | None = _remedy(
        None,
        "--clip-weights",
        "κ: clamp Linear weights and biases to ±κ·7·(the layer's init std) after every step.",
        float,
    )
    l2_init: float | None = _remedy(
        None,
        "--l2-init",
        "λ: θ ← θ − lr·λ·(θ − θ₀) after every step, instead of weight decay towards 0 (0 = off).",
        float,
    )
    shrink_perturb: tuple[float, float] | str | None = _remedy(
        None, "--shrink-perturb", "λ,σ: θ ← λθ + σ·ε (ε like the initialisation).", str
    )
    shrink_perturb_at: str = _remedy(
        "task", "--shrink-perturb-at", "task (at its start) or step (after every step).", str
    )
    cbp: float | None = _remedy(
        None, "--cbp", "ρ: continual backprop's replacement rate per step (1e-4).", float
    )
    cbp_maturity: int = _remedy(100, "--cbp-maturity", "CBP: steps before a unit is eligible.", int)
    cbp_decay: float = _remedy(0.99, "--cbp-decay", "CBP: utility decay η.", float)
    redo: float | None = _remedy(
        None, "--redo", "τ: ReDo resets MLP units whose dormancy score is ≤ τ (0.025).", float
    )
    redo_every: int | None = _remedy(
        None, "--redo-every", "ReDo every K steps too (default: at task start only).", int
    )
    swr: float | None = _remedy(
        None,
        "--swr",
        "ζ: selective weight reinitialisation re-draws the weights whose utility |θ·∇θ| is ≤ ζ × "
        "their tensor's mean (0.0005).",
        float,
    )
    swr_every: int = _remedy(SWR_EVERY, "--swr-every", "SWR: every N steps of the run.", int)
    embed_reset: int | None = _remedy(
        None,
        "--embed-reset",
        "N: re-draw the token embeddings every N steps of the run (active forgetting: 1000).",
        int,
    )
    spectral: float | None = _remedy(
        None,
        "--spectral",
        "λ: spectral regularisation, loss + λ·Σ (σ_max(W)² − 1)² over the Linear layers (1e-4).",
        float,
    )

    def __post_init__(self) -> None:
        self._check_recipes()
        if isinstance(self.shrink_perturb, str):  # the flag's text, "λ,σ"
            object.__setattr__(self, "shrink_perturb", parse_shrink_perturb(self.shrink_perturb))
        elif self.shrink_perturb is not None:
            object.__setattr__(self, "shrink_perturb", tuple(self.shrink_perturb))
        if self.clip_weights is not None:
            _positive("--clip-weights κ", self.clip_weights)
        if self.l2_init is not None:
            if not (math.isfinite(self.l2_init) and self.l2_init >= 0):
                raise PlcError(f"--l2-init λ must be 0 (off) or more, got {self.l2_init}")
            if self.l2_init == 0:  # as --weight-decay 0: sweeps write `for l in 0 1e-3 1e-2`
                object.__setattr__(self, "l2_init", None)
        if self.shrink_perturb is not None:
            if len(self.shrink_perturb) != 2:
                raise PlcError(f"--shrink-perturb needs λ,σ, got {self.shrink_perturb!r}")
            shrink, sigma = self.shrink_perturb
            if not 0 < shrink <= 1:
                raise PlcError(f"--shrink-perturb λ must be in (0, 1], got {shrink}")
            if not (math.isfinite(sigma) and sigma >= 0):
                raise PlcError(f"--shrink-perturb σ must be 0 or more, got {sigma}")
        if self.shrink_perturb_at not in SHRINK_AT:
            raise PlcError(
                f"--shrink-perturb-at must be task or step, got {self.shrink_perturb_at!r}"
            )
        if self.cbp is not None and not 0 < self.cbp <= 1:
            raise PlcError(f"--cbp ρ must be in (0, 1], got {self.cbp}")
        if self.cbp_maturity < 0:
            raise PlcError(f"--cbp-maturity must be 0 or more, got {self.cbp_maturity}")
        if not 0 <= self.cbp_decay < 1:
            raise PlcError(f"--cbp-decay η must be in [0, 1), got {self.cbp_decay}")
        if self.redo is not None and not 0 <= self.redo < 1:
            raise PlcError(f"--redo τ must be in [0, 1), got {self.redo}")
        if self.redo_every is not None:
            if self.redo is None:
                raise PlcError("--redo-every goes with --redo τ")
            if self.redo_every <= 0:
                raise PlcError(f"--redo-every must be positive, got {self.redo_every}")
        if self.swr is not None:
            _positive("--swr ζ", self.swr)
        if self.swr_every <= 0:
            raise PlcError(f"--swr-every must be positive, got {self.swr_every}")
        if self.embed_reset is not None and self.embed_reset <= 0:
            raise PlcError(f"--embed-reset N must be positive, got {self.embed_reset}")
        if self.spectral is not None:
            _positive("--spectral λ", self.spectral)

    def _check_recipes(self) -> None:
        """The recipes' fields alone; a schedule's defaults filled in, so that a task's label
        (`--schedule cosine` and `--mitigation cosine` alike: cosine0.1) names what it ran."""
        if self.schedule not in SCHEDULES:
            raise PlcError(
                f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if self.lr_floor is not None:
            if self.schedule == "constant":
                raise PlcError("--lr-floor goes with --schedule cosine, wsd or rsqrt")
            if not (math.isfinite(self.lr_floor) and 0 <= self.lr_floor <= 1):
                where = "above the peak" if self.lr_floor > 1 else "below 0"
                raise PlcError(
                    f"--lr-floor is a fraction of the peak learning rate in [0, 1]; "
                    f"{self.lr_floor:g} is {where}"
                )
        elif self.schedule in SCHEDULE_FLOOR:
            object.__setattr__(self, "lr_floor", SCHEDULE_FLOOR[self.schedule])
        if self.lr_decay is not None:
            if self.schedule not in ("wsd", "rsqrt"):
                raise PlcError("--lr-decay goes with --schedule wsd or rsqrt")
            if not 0 < self.lr_decay <= 1:
                raise PlcError(
                    f"--lr-decay is a fraction of the task's steps in (0, 1], got {self.lr_decay:g}"
                )
        elif self.schedule in SCHEDULE_DECAY:
            object.__setattr__(self, "lr_decay", SCHEDULE_DECAY[self.schedule])
        if self.replay is not None:
            if not (math.isfinite(self.replay) and 0 <= self.replay < 1):
                raise PlcError(
                    f"--replay r is a fraction of the batch in [0, 1), got {self.replay:g}"
                )
            if self.replay == 0:  # as --l2-init 0: a sweep writes `for r in 0 0.05 0.25`
                object.__setattr__(self, "replay", None)
        if self.replay_last is not None:
            if self.replay is None:
                raise PlcError("--replay-last goes with --replay r")
            if self.replay_last <= 0:
                raise PlcError(f"--replay-last must be positive, got {self.replay_last}")
        if self.transition is not None:
            if self.transition < 0:
                raise PlcError(f"--transition K must be 0 or more steps, got {self.transition}")
            if self.transition == 0:  # the protocol's abrupt switch
                object.__setattr__(self, "transition", None)
        if self.replay is not None and self.transition is not None:
            raise PlcError("--replay and --transition do not combine: give one of them")

    @classmethod
    def of(cls, options: Any) -> MitigationOptions:
        """The mitigation fields of any object that has them by the same names (TrainOptions)."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls)})

    @property
    def active(self) -> bool:
        """A remedy acts on the model (plc.mitigations builds its hooks); the recipes act on the
        learning rate and the batches instead."""
        remedies = (self.clip_weights, self.l2_init, self.shrink_perturb, self.cbp, self.redo)
        return any(v is not None for v in (*remedies, self.swr, self.embed_reset, self.spectral))

    @property
    def recipe_label(self) -> str:
        """The recipes' part of `label` ('' for the paper's protocol)."""
        parts = []
        if self.schedule == "cosine":
            parts.append(f"cosine{self.lr_floor:g}")
        elif self.schedule != "constant":
            decay = f"{self.lr_decay:g}" if self.lr_decay is not None else ""
            floor = f",f{self.lr_floor:g}" if self.lr_floor else ""
            parts.append(f"{self.schedule}{decay}{floor}")
        if self.replay is not None:
            parts.append(
                f"replay{self.replay:g}" + (f"@{self.replay_last}" if self.replay_last else "")
            )
        if self.transition is not None:
            parts.append(f"transition{self.transition}")
        return "+".join(parts)

    @property
    def label(self) -> str:
        """A short name of the enabled methods, for run ids and metric rows ('none' if none)."""
        parts = [self.recipe_label] if self.recipe_label else []
        if self.clip_weights is not None:
            parts.append(f"clip{self.clip_weights:g}")
        if self.l2_init is not None:
            parts.append(f"l2init{self.l2_init:g}")
        if self.shrink_perturb is not None:
            shrink, sigma = self.shrink_perturb
            parts.append(f"sp{shrink:g},{sigma:g}@{self.shrink_perturb_at}")
        if self.cbp is not None:
            parts.append(f"cbp{self.cbp:g}")
        if self.redo is not None:
            parts.append(f"redo{self.redo:g}" + (f"@{self.redo_every}" if self.redo_every else ""))
        if self.swr is not None:
            every = f"@{self.swr_every}" if self.swr_every != SWR_EVERY else ""
            parts.append(f"swr{self.swr:g}{every}")
        if self.embed_reset is not None:
            parts.append(f"embreset{self.embed_reset}")
        if self.spectral is not None:
            parts.append(f"spectral{self.spectral:g}")
        return "+".join(parts) or "none"

    def record(self) -> dict[str, Any]:
        """The enabled methods and their settings (plain values) for a checkpoint's history."""
        rec: dict[str, Any] = {"label": self.label}
        if self.clip_weights is not None:
            rec["clip_weights"] = self.clip_weights
        if self.l2_init is not None:
            rec["l2_init"] = self.l2_init
        if self.shrink_perturb is not None:
            rec["shrink_perturb"] = list(self.shrink_perturb)
            rec["shrink_perturb_at"] = self.shrink_perturb_at
        if self.cbp is not None:
            rec.update(cbp=self.cbp, cbp_maturity=self.cbp_maturity, cbp_decay=self.cbp_decay)
        if self.redo is not None:
            rec.update(redo=self.redo, redo_every=self.redo_every)
        if self.schedule != "constant":
            rec.update(schedule=self.schedule, lr_floor=self.lr_floor, lr_decay=self.lr_decay)
        if self.replay is not None:
            rec.update(replay=self.replay, replay_last=self.replay_last)
        if self.transition is not None:
            rec["transition"] = self.transition
        if self.swr is not None:
            rec.update(swr=self.swr, swr_every=self.swr_every)
        if self.embed_reset is not None:
            rec["embed_reset"] = self.embed_reset
        if self.spectral is not None:
            rec["spectral"] = self.spectral
        return rec


def parse_shrink_perturb(text: str) -> tuple[float, float]:
    """'λ,σ' (the --shrink-perturb flag) → (λ, σ); the values are checked by MitigationOptions."""
    try:
        shrink, sigma = (float(x) for x in text.split(","))
    except ValueError as e:
        raise PlcError(f"--shrink-perturb takes λ,σ (e.g. 0.8,0.01), got {text!r}") from e
    return shrink, sigma


@dataclass(frozen=True)
class TrainOptions(MitigationOptions):
    """Every setting of a training run; the remedies' fields are MitigationOptions'."""

    preset: str | None = _flag(
        None,
        "--preset",
        "Protocol preset: paper, cpu, control, tiny (default: the checkpoint's).",
        str,
    )
    tokens: int | None = _flag(None, "--tokens", "Tokens of the task (rounded up to batches).", int)
    steps: int | None = _flag(None, "--steps", "Optimizer steps (instead of --tokens).", int)
    batch_tokens: int | None = _flag(None, "--batch-tokens", "Global batch in tokens.", int)
    micro_batch: int | None = _flag(
        None, "--micro-batch", "Sequences per forward per rank (default: fits the batch).", int
    )
    seq_len: int | None = _flag(None, "--seq-len", "Training sequence length (≤ context).", int)
    lr: float | None = _flag(None, "--lr", "auto (the paper's rule from d_model) or a number.", str)
    warmup: float | None = _flag(
        None, "--warmup", "Warm-up fraction of the steps (paper 0.05).", float
    )
    grad_clip: float | None = _flag(None, "--grad-clip", "Max gradient norm (default none).", float)
    weight_decay: float | None = _flag(
        None, "--weight-decay", "AdamW weight decay on matrices and embeddings (paper 0.1).", float
    )
    beta1: float = _flag(0.9, "--beta1", "AdamW β1.", float)
    beta2: float = _flag(0.95, "--beta2", "AdamW β2.", float)
    adam_eps: float = _flag(1e-8, "--adam-eps", "AdamW ε.", float)
    seed: int | None = _flag(None, "--seed", "Sampling seed (default: the checkpoint's).", int)
    save_every: int | None = _flag(None, "--save-every", "Steps between resumable saves.", int)
    save_every_minutes: float | None = _flag(
        None,
        "--save-every-minutes",
        "Minutes between resumable saves (SIGTERM or SIGUSR1 save at once, then exit).",
        float,
    )
    device: str = _flag("auto", "--device", "auto (CUDA if present), cpu or cuda.", str)
    compile: bool = _flag(False, "--compile", "torch.compile the model (CUDA).", bool)
    strategy: str = _flag(
        "auto",
        "--strategy",
        "Under torchrun: ddp (every rank holds the whole model), fsdp (weights, gradients and "
        "AdamW state sharded over the ranks) or auto (CUDA: DDP where it fits, by plc.memory; "
        "CPU: DDP).",
        str,
    )
    activation_checkpointing: bool = _flag(
        False,
        "--activation-checkpointing",
        "Keep only each block's input for the backward pass, recompute the rest (≈ 1/3 more "
        "compute; CUDA: switched on where nothing else fits).",
        bool,
    )
    tensorboard: str | None = _flag(
        None,
        "--tensorboard",
        "Live TensorBoard scalars in this folder (default $PLC_TENSORBOARD; plc[track]).",
        str,
    )

    def __post_init__(self) -> None:
        if isinstance(self.lr, str):
            object.__setattr__(self, "lr", _parse_lr(self.lr))
        elif self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise PlcError(f"--lr must be positive, got {self.lr}")
        if self.tokens is not None and self.steps is not None:
            raise PlcError("give --tokens or --steps, not both")
        for name in ("tokens", "steps", "batch_tokens", "micro_batch", "seq_len", "save_every"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise PlcError(f"{flag_of(name)} must be positive, got {v}")
        if self.save_every_minutes is not None:
            _positive("--save-every-minutes", self.save_every_minutes)
        if self.warmup is not None and not 0 <= self.warmup < 1:
            raise PlcError(f"--warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise PlcError(f"--grad-clip must be positive, got {self.grad_clip}")
        if self.weight_decay is not None and not (
            self.weight_decay >= 0 and math.isfinite(self.weight_decay)
        ):
            raise PlcError(f"--weight-decay must be ≥ 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise PlcError(f"{flag_of(name)} must be in [0, 1), got {getattr(self, name)}")
        if not self.adam_eps > 0:
            raise PlcError(f"--adam-eps must be positive, got {self.adam_eps}")
        if self.strategy not in STRATEGIES:
            raise PlcError(
                f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )
        super().__post_init__()

    @property
    def mitigations(self) -> MitigationOptions:
        """The remedies' settings alone, as plc.mitigations takes them."""
        return MitigationOptions.of(self)

    # ------------------------------------------------------------------------ resolved values

    @property
    def resolved(self) -> bool:
        """Every number the loop needs is set (see `resolve`)."""
        return None not in (
            self.preset,
            self.steps,
            self.batch_tokens,
            self.seq_len,
            self.lr,
            self.warmup,
            self.weight_decay,
        )

    @property
    def batch_size(self) -> int:
        """Sequences per global batch."""
        return self.batch_tokens // self.seq_len

    @property
    def total_tokens(self) -> int:
        return self.steps * self.batch_tokens

    @property
    def warmup_steps(self) -> int:
        return warmup_steps(self.warmup, self.steps)

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    def resolve(
        self,
        *,
        preset: str | None = None,
        probe: bool = False,
        d_model: int | None = None,
        context: int | None = None,
        world_size: int | None = None,
    ) -> TrainOptions:
        """Every None filled in from the preset (self.preset, else `preset`, else paper).

        - steps from --tokens (or the preset's tokens per task, or per probe if `probe`), rounded
          up to whole batches;
        - lr None: the paper's rule from `d_model` (Table II);
        - weight_decay None: the preset's, or 0 with --l2-init (its decay towards θ₀ replaces the
          decay towards 0; `default_weight_decay`);
        - micro_batch None: the preset's, lowered to the largest divisor of the sequences each of
          `world_size` ranks holds (a preset's 16 must not break `--batch-tokens 2048
          --seq-len 256`); an explicit --micro-batch that does not divide is an error;
        - checks: batch a multiple of the sequence length, batch split over ranks, sequence
          length within `context`.
        """
        p = get_preset(self.preset or preset or "paper")
        seq_len = p.seq_len if self.seq_len is None else self.seq_len
        batch_tokens = p.batch_tokens if self.batch_tokens is None else self.batch_tokens
        if batch_tokens % seq_len:
            raise PlcError(
                f"--batch-tokens {batch_tokens} is not a multiple of --seq-len {seq_len}"
            )
        if context is not None and seq_len > context:
            raise PlcError(f"--seq-len {seq_len} exceeds the checkpoint's context {context}")
        world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
        if (batch_tokens // seq_len) % world:
            raise PlcError(
                f"a batch of {batch_tokens // seq_len} sequences does not split over {world} ranks"
            )
        share = batch_tokens // seq_len // world
        micro = self.micro_batch
        if micro is None and p.micro_batch is not None:
            micro = max(d for d in range(1, min(p.micro_batch, share) + 1) if share % d == 0)
        elif micro is not None and share % micro:
            raise PlcError(
                f"--micro-batch {micro} does not divide the {share} sequences per rank of a batch"
            )
        if self.steps is not None:
            steps = self.steps
        else:
            default = p.probe_tokens if probe else p.task_tokens
            steps = steps_for(default if self.tokens is None else self.tokens, batch_tokens)
        if self.transition is not None and self.transition > steps:
            raise PlcError(
                f"--transition {self.transition} is longer than the task's {steps} steps"
            )
        lr = self.lr
        if lr is None:
            if d_model is None:
                raise PlcError("--lr auto needs the model's d_model")

            lr = paper_lr(d_model)
        return replace(
            self,
            preset=p.name,
            tokens=None,
            steps=steps,
            batch_tokens=batch_tokens,
            micro_batch=micro,
            seq_len=seq_len,
            lr=lr,
            warmup=p.warmup if self.warmup is None else self.warmup,
            weight_decay=self.default_weight_decay(p.weight_decay)
            if self.weight_decay is None
            else self.weight_decay,
        )

    def default_weight_decay(self, preset_decay: float) -> float:
        """AdamW's decay towards 0 when --weight-decay is not given: the preset's, except with
        L2-init, which replaces it (Kumar et al.: decay towards θ₀ instead of towards 0)."""
        return 0.0 if self.l2_init is not None else preset_decay

    def record(self) -> dict[str, Any]:
        """The resolved settings as a checkpoint's task history and a resume signature hold them."""
        # How, not what: a run resumed or saved on another cadence trains the same model.
        skip = (
            "tokens",
            "device",
            "compile",
            "strategy",
            "activation_checkpointing",
            "save_every",
            "save_every_minutes",
            "tensorboard",
        )
        rec = {k: v for k, v in asdict(self).items() if k not in skip}
        rec.update(tokens=self.total_tokens, warmup_steps=self.warmup_steps)
        return rec


@dataclass(frozen=True)
class DiagnoseOptions:
    """Every setting of `plc diagnose`: which correlates, on which windows, on which device. Each
    field is one flag of the command (plc.cli.measure builds them from this class); None takes
    the preset's or the checkpoint's value at `resolve`."""

    preset: str | None = _flag(
        None, "--preset", "Protocol preset for the defaults (default: the checkpoint's).", str, None
    )
    params: bool = _flag(True, "--params/--no-params", "Mean |θ| (non-embedding).", bool, None)
    dormant: bool = _flag(True, "--dormant/--no-dormant", "Dormant MLP units.", bool, None)
    entropy: bool = _flag(True, "--entropy/--no-entropy", "Attention entropy.", bool, None)
    ranks: bool = _flag(
        True, "--ranks/--no-ranks", "Effective/stable rank and norm of MLP features.", bool, None
    )
    features: bool = _flag(
        True,
        "--features/--no-features",
        "Norm and variance of the last hidden state (on the dormant language's windows).",
        bool,
        None,
    )
    distance: bool = _flag(
        True, "--distance/--no-distance", "L2 distance from the initial weights θ₀.", bool, None
    )
    perturb: bool = _flag(
        True,
        "--perturb/--no-perturb",
        "Loss increase under a Gaussian parameter perturbation (Springer et al.).",
        bool,
        None,
    )
    perturb_sigma: float = _flag(
        PERTURB_SIGMA,
        "--perturb-sigma",
        "σ: θ + σ·ε, ε drawn like the initialisation (σ in init stds).",
        float,
        None,
    )
    perturb_draws: int = _flag(
        2, "--perturb-draws", "Perturbations averaged (each one pass over the windows).", int, None
    )
    perturb_lang: str | None = _flag(
        None,
        "--perturb-lang",
        "Data for the perturbation: --dormant-seqs windows (default: the last task's language).",
        str,
        None,
    )
    dormant_lang: str = _flag(PROBE_LANG, "--dormant-lang", "Data for dormant units.", str, None)
    dormant_seqs: int | None = _flag(None, "--dormant-seqs", "Windows (paper: 256).", int, None)
    eps: float = _flag(0.01, "--eps", "Dormancy threshold on the normalised score.", float, None)
    entropy_lang: str = _flag(
        ENTROPY_LANG, "--entropy-lang", "Data for attention entropy.", str, None
    )
    entropy_seqs: int | None = _flag(None, "--entropy-seqs", "Windows (paper: 512).", int, None)
    seq_len: int | None = _flag(
        None, "--seq-len", "Window length (default: the context).", int, None
    )
    query_from: int | None = _flag(
        None, "--query-from", "First query position, 1-based (default: seq len / 8).", int, None
    )
    eval_seed: int | None = _flag(
        None,
        "--eval-seed",
        "Seed of the random evaluation windows (default: the run's).",
        int,
        None,
    )
    batch_size: int | None = _flag(None, "--batch-size", "Windows per forward pass.", int, None)
    device: str = _flag("auto", "--device", "auto (CUDA if present), cpu or cuda.", str, None)
    tensorboard: str | None = _flag(
        None, "--tensorboard", "Also write the correlates to this TensorBoard folder.", str, None
    )

    def __post_init__(self) -> None:
        parts = (self.params, self.dormant, self.entropy, self.ranks, self.features)
        if not any((*parts, self.distance, self.perturb)):
            raise PlcError("nothing to measure: every part is switched off")
        if not (math.isfinite(self.perturb_sigma) and self.perturb_sigma > 0):
            raise PlcError(f"--perturb-sigma must be positive, got {self.perturb_sigma}")
        if self.perturb_draws < 1:
            raise PlcError(f"--perturb-draws must be at least 1, got {self.perturb_draws}")
        for name in ("dormant_seqs", "entropy_seqs", "seq_len", "batch_size"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise PlcError(f"{_diagnose_flag(name)} must be positive, got {v}")
        if not 0 <= self.eps < 1:
            raise PlcError(f"--eps must be in [0, 1), got {self.eps}")

    @property
    def units(self) -> bool:
        """The pass reads the MLP hidden units (for dormancy or ranks)."""
        return self.dormant or self.ranks

    @property
    def dormant_windows(self) -> bool:
        """Some part reads the dormant language's windows."""
        return self.units or self.features

    def resolve(self, *, preset: str | None, context: int, last_lang: str = "") -> DiagnoseOptions:
        """Window counts from the preset (self.preset, else `preset`, else paper), the window
        length from the checkpoint's `context`, the first entropy query from the preset's fraction
        of it (the paper's 256 of 2,048); checked against the context. The perturbation reads the
        language the model last trained on (`last_lang`; the dormant language for a fresh init or
        a mixture): the loss it raises is one the model has fitted (Springer et al. perturb
        around the pretraining loss)."""
        p = get_preset(self.preset or preset or "paper")
        L = context if self.seq_len is None else self.seq_len
        if L > context:
            raise PlcError(
                f"query window up to position {L} is longer than the checkpoint's context {context}"
            )
        q_from = self.query_from
        if q_from is None:
            q_from = max(1, round(p.entropy_query_start * L))
        if self.entropy and not 1 <= q_from <= L:
            raise PlcError(
                f"--query-from must be between 1 and the sequence length {L}, got {q_from}"
            )
        return replace(
            self,
            preset=p.name,
            dormant_seqs=p.dormant_seqs if self.dormant_seqs is None else self.dormant_seqs,
            entropy_seqs=p.entropy_seqs if self.entropy_seqs is None else self.entropy_seqs,
            seq_len=L,
            query_from=q_from,
            perturb_lang=self.perturb_lang
            or (last_lang if last_lang not in NO_STORE_LANGS else self.dormant_lang),
        )


def _diagnose_flag(name: str) -> str:
    return next(f.metadata["flag"] for f in fields(DiagnoseOptions) if f.name == name)


def flag_of(name: str) -> str:
    """The command-line flag of a TrainOptions field."""
    return next(f.metadata["flag"] for f in fields(TrainOptions) if f.name == name)


def _parse_lr(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError as e:
        raise PlcError(f"--lr must be 'auto' or a number, got {text!r}") from e
    if not (value > 0 and math.isfinite(value)):
        raise PlcError(f"--lr must be positive, got {text}")
    return value


# ------------------------------------------------------------------- plc plan --mitigation

# A study arm by name: the fields its ARGS fill (in order; one field takes the whole text, as
# `sp:λ,σ`), ARGS as --help spells them, their default (the reference code's; None = required),
# and fixed fields.
ARMS: dict[str, tuple[tuple[str, ...], str, str | None, dict[str, Any]]] = {
    "none": ((), "", None, {}),
    "wd": (("weight_decay",), "λ", None, {}),
    "clip": (("clip_weights",), "κ", "1", {}),
    # The paper's AdamW decay 0.1 in the same decoupled form, aimed at θ₀: comparable to wd:0.1.
    "l2init": (("l2_init",), "λ", "0.1", {}),
    "sp": (("shrink_perturb",), "λ,σ", None, {}),
    "sp-step": (("shrink_perturb",), "λ,σ", None, {"shrink_perturb_at": "step"}),
    "cbp": (("cbp",), "ρ", "0.0001", {}),
    "redo": (("redo", "redo_every"), "τ[,K]", "0.025", {}),
    # The recipes (docs/recipes.md): schedules with their defaults (options.SCHEDULE_FLOOR, …),
    # replay and gradual transitions.
    "cosine": (("lr_floor",), "floor", str(SCHEDULE_FLOOR["cosine"]), {"schedule": "cosine"}),
    "wsd": (("lr_decay",), "decay", str(SCHEDULE_DECAY["wsd"]), {"schedule": "wsd"}),
    "rsqrt": ((), "", None, {"schedule": "rsqrt"}),
    "replay": (("replay", "replay_last"), "r[,K]", None, {}),
    "transition": (("transition",), "K", None, {}),
    # collas_2025_swr_paper's ViT setting (threshold, gradient utility, resample, every 128);
    # language-model-plasticity's forgetting every 1000 updates; Lewandowski et al.'s regulariser.
    "swr": (("swr", "swr_every"), "ζ[,N]", "0.0005", {}),
    "embreset": (("embed_reset",), "N", "1000", {}),
    "spectral": (("spectral",), "λ", "0.0001", {}),
}


def arm_help() -> str:
    """The arms as `--mitigation`'s help lists them: none, wd:λ, clip[:κ], …"""
    spelt = []
    for name, (_, args, default, _) in ARMS.items():
        spelt.append(name if not args else f"{name}[:{args}]" if default else f"{name}:{args}")
    return ", ".join(spelt)


def parse_mitigation(spec: str) -> dict[str, Any]:
    """`plc plan --mitigation NAME[:ARGS]` → the TrainOptions fields of that arm, checked as the
    flags would be: `cbp:1e-4` → {'cbp': 0.0001}, `sp-step:0.8,0.01`, `redo:0.025,100` (τ, every
    K steps), `cosine` → {'schedule': 'cosine', 'lr_floor': 0.1}, `none` → {}. One-line PlcError
    on anything else."""
    name, _, args = spec.partition(":")
    if name not in ARMS:
        raise PlcError(f"unknown --mitigation {name!r}; choose one of {', '.join(ARMS)}")
    names, _, default, fixed = ARMS[name]
    if not names:
        if args:
            raise PlcError(f"--mitigation {name} takes no arguments")
        return dict(fixed)
    args = args or default
    if args is None:
        raise PlcError(f"--mitigation {name} needs its value, e.g. {name}:0.1")
    texts = [args] if len(names) == 1 else args.split(",")
    if len(texts) > len(names):
        raise PlcError(f"--mitigation {spec!r}: {name} takes at most {len(names)} values")
    kinds = {f.name: f.metadata["cli_type"] for f in fields(TrainOptions)}
    values = dict(fixed)
    for field_name, text in zip(names, texts, strict=False):  # redo: K may be left out
        try:
            values[field_name] = kinds[field_name](text)
        except ValueError as e:
            raise PlcError(f"--mitigation {spec!r}: {text!r} is not a number") from e
    TrainOptions(**values)  # the flags' own checks
    return values


def arm_label(values: dict[str, Any]) -> str:
    """The method label (as metric rows carry it: plc.store.method_label) of an arm's fields."""
    remedies = MitigationOptions(**{k: v for k, v in values.items() if k != "weight_decay"})
    parts = [] if "weight_decay" not in values else [f"wd{values['weight_decay']:g}"]
    parts += [] if remedies.label == "none" else [remedies.label]
    return "+".join(parts) or "none"


def option_argv(values: dict[str, Any]) -> list[str]:
    """TrainOptions fields → the training commands' flags that set them."""
    argv = []
    for name, value in values.items():
        argv += [flag_of(name), _text(value)]
    return argv


def number(value: float) -> str:
    """A number as a flag value and run id tag: `0.1`, `0.0001`, `1e-05`, `0`; the full repr where
    six digits would round it."""
    text = f"{value:g}"
    return text if float(text) == value else repr(value)


def _text(value: Any) -> str:
    return number(value) if isinstance(value, float) else str(value)
