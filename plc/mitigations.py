"""Remedies for plasticity loss (§V-B's open question) as hooks the one training loop calls.

Each method is a field of `MitigationOptions`; any mix may be on. `Mitigations` applies them to a
model and its AdamW: the loop builds one per task only when `options.active` (so a run without
them executes no extra code), calls `at_task_start` once before the first step of a fresh task and
`after_step` right after every `optimizer.step()`. All work is in place under no_grad.

- clip_weights κ (Elsayed et al. 2024): after every step (and at task start) every nn.Linear weight
  and bias is clamped to ±κ·7·σ, σ the std of the layer's weight initialisation (GPT.init_stds:
  0.02, residual projections 0.02/√(2L)). Elsayed et al. clip at κ times the bound of the
  initialisation itself — for their uniform init U(−b, b), ±κ·b, so that κ = 1 clips nothing at
  initialisation. A normal init has no bound; 7σ is where it effectively ends: a draw lies beyond
  with probability 2.6e-12, 8e-4 expected weights in all of the paper's 314M (CLIP_STDS), so κ = 1
  clips nothing at initialisation at any size and the bound scales with the init as theirs does.
  (The PyTorch-default bound 1/√fan_in, used before, is no bound of this model's init: at κ = 1 it
  already clipped 0.5 % of the fresh weights at 5M and 16 % at 314M, a remedy that grew with
  size.) A bias, initialised at 0, shares its weight's bound. Not clipped: the token embedding,
  which is also the tied output head (bounding it would bound the logit scale), the position table
  and sink vectors (lookup tables), and LayerNorm gains and biases (initialised at 1 and 0, not on
  the weights' scale: κ = 1 would pin every gain near its initial value). Applied last in
  `after_step`, so the bound holds after every step whatever else ran.
- l2_init λ (Kumar et al. 2024, regenerative regularisation), decoupled: after every step
  θ ← θ − η_t·λ·(θ − θ₀) for every parameter, η_t the step's learning rate, θ₀ the run's initial
  weights (`initial_state`). This is AdamW's decoupled weight decay θ ← θ − η_t·λ·θ with its
  target moved from 0 to θ₀ — the same λ means the same strength of pull (λ = 0.1 is the paper's
  decay aimed at θ₀) — and the SGD step of the penalty (λ/2)‖θ − θ₀‖² applied outside Adam's
  normalisation, as mohmdelsayed/weight-clipping's `l2_init.py` applies it. It *replaces* the decay
  towards 0: with --l2-init the weight decay defaults to 0 (TrainOptions.default_weight_decay), so
  θ₀ is the fixed point of the regulariser; `--weight-decay` set explicitly adds a decay towards 0
  on top. `plc plan --mitigation l2init` takes λ = 0.1, comparable to the `wd:0.1` arm (Kumar et
  al.'s best λ = 1e-2 is for the coupled penalty under Adam, another scale). --l2-init 0 is off.
- shrink_perturb (λ, σ) (Ash & Adams 2020), at "task" start (default) or after every "step":
  θ ← λθ + σ·ε, ε a fresh draw of the initialisation (GPT.init_stds: N(0, 0.02), residual
  projections N(0, 0.02/√(2L)); zero for Linear biases, which are initialised at 0 and so only
  shrink). LayerNorm gains and biases are left alone: their initialisation is a constant, and
  shrinking a gain scales its whole branch rather than its weights.
- cbp ρ (continual backprop, Dohare et al. 2024, lop/algos/gnt.py) on the MLP hidden units: per
  step, every unit's age += 1 and its utility u ← η·u + (1−η)·mean|h|·mean|w_out| (h the post-GeLU
  activation, mean over the step's real tokens; w_out its column of mlp.c_proj), bias-corrected by
  1 − η^age; units older than the maturity m are eligible, ρ·(eligible) units per layer are
  replaced per step (fractions carried over), those of least corrected utility. A replaced unit
  gets new incoming weights from the initialisation, bias 0, outgoing weights 0, age and utility 0.
  As in the reference code, the next layer's bias is not touched: gnt.py's
  correction of mlp.c_proj's bias by the removed unit's mean contribution reads
  `mean_feature_act` after `test_features` has zeroed it, so it adds 0, and cbp_linear.py has none
  (adding the contribution, as plc did before, accumulates in a bias that gets no weight decay).
- redo τ (ReDo, Sokar et al. 2023): at task start (on the task's first batch) and, with redo_every
  K, after every K-th step (on that step's batch), the MLP units whose dormancy score — the same
  `plc.measures.unit_mean_abs` and `dormant_scores` as `plc diagnose` — is ≤ τ get new incoming
  weights from the initialisation, incoming bias 0 and outgoing weights 0.

- swr ζ (selective weight reinitialisation, Hernandez-Garcia et al. 2025; JFernando4/
  collas_2025_swr_paper `src/swr_functions/selective_weight_reinitialization.py`, called after
  every `optim.step()` in `experiments/vit_incremental_cifar/vit_experiment.py`, with its ViT
  configuration `config/incremental_cifar/swr_with_regular_ln.json`: pruning_method threshold,
  utility_function gradient, reinit_strat resample, reinit_freq 128, reinit_factor 0.0005,
  decay_rate 0): every N = swr_every steps of the run, right after the optimizer step, each
  parameter tensor's weights with utility |θ·∇θ| ≤ ζ·(the tensor's mean utility) — the
  reference's `prune_weights` "threshold", ≤ included, on the step's utility (decay_rate 0: no
  running average) — are drawn afresh from their initialisation: N(0, σ²) with σ from
  GPT.init_stds for weights, tables and sink vectors; the constant for the rest (Linear and
  LayerNorm biases 0, LayerNorm gains 1: `get_vit_network_init_parameters` resamples those to
  their mean too; its ViT's MLP biases, initialised uniformly there, are 0 at init here). Every
  parameter takes part, as in the reference (its optimizer holds them all). ∇θ is the step's
  gradient (after clipping, which scales a tensor's utilities alike and so selects the same
  weights). As the reference, the optimizer state of a re-drawn weight is kept (its SGD momentum
  is not touched there). Counted in the run's steps (the reference's `current_step`, never
  reset), so the cadence runs across tasks.
- embed_reset N (active forgetting, Chen et al. 2023; facebookresearch/language-model-plasticity:
  `language/fairseq_cli/train.py` after every `train_step` with num_updates % K == 0, K =
  `--clear_embed_every_K_updates`, 1000 in its pretraining sweep, 0 = off by default;
  `emb_reinit` "roberta": N(0, 0.02²), the padding row 0; `AdamEF` zeroes the embedding's
  exp_avg and exp_avg_sq and restarts its bias correction `step_emb`): after every N-th step of
  the run the token embedding is re-drawn from its initialisation N(0, 0.02²) and its AdamW
  moments and step count are zeroed (plc's vocabularies have no padding row). plc ties the
  embedding to the output head, as RoBERTa does there, so the head is re-drawn with it.
  AdamEF's separate learning rate for the embeddings (lr_emb) and its `stop_after` are not
  reproduced: they train at the task's rate, and the resets go on for the whole run. The
  position table is kept (the reference resets only the token embedding). `plc intervene
  embed-reset` is the same re-draw once, on a checkpoint: the reference's README resets the
  embedding before adapting to a new language (`fb_sweep/manual_reset_emb.py`).
- spectral λ (spectral regularisation, Lewandowski et al. 2025, "Learning Continually by Spectral
  Regularization", ICLR; no reference code in the stored sources, the definition is the paper's):
  the loss gains λ·Σ_l (σ₁(W_l)^k − 1)² with k = SPECTRAL_POWER = 2, over every nn.Linear, its bias
  taken as one more column of W (σ₁ of [W | b]); σ₁ by one power iteration a step on a persistent
  vector (SPECTRAL_WARMUP iterations when a task starts). Its gradient
  λ·2(σ₁^k − 1)·k·σ₁^(k−1)·u vᵀ is added to the step's gradient before clipping and the optimizer
  (`before_step`), so AdamW normalises it as it would the penalty's autograd gradient. The
  token/position tables (lookup tables, one of them the tied head) and LayerNorm are left out.
  λ = 1e-4 (the plan's spectral arm) is plc's choice: the paper tunes λ per problem.

Optimizer state of a reset unit (CBP, ReDo): the AdamW first and second moments of its row of
mlp.c_fc.weight, its entry of mlp.c_fc.bias and its column of mlp.c_proj.weight are zeroed. AdamW
keeps one `step` count per parameter tensor, not per unit, so the step is kept (as dopamine's
ReDo does): the first update of a reset unit is then about (1−β₁)/√(1−β₂) ≈ 0.45 of a full one
(β = 0.9, 0.95), reaching full size after about 7 steps of a steady gradient. gnt.py's AdamGnT keeps a step per
element and resets it, so there a new unit's first update is full-sized; matching that would need
a per-element step in the optimizer, which the one training loop's AdamW does not have.

Randomness (new weights, perturbations) comes from generators seeded by (seed, task index, step,
method), never the global RNG: every DDP rank draws the same numbers, a resumed task draws what the
uninterrupted one did, and the data order is untouched. Under DDP the activation statistics of
CBP and ReDo are summed over ranks, so every rank resets the same units.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc import __version__
from plc.errors import PlcError
from plc.hf.config import HFConfig
from plc.init import build_model, state_digest
from plc.measures import dormant_scores, seam, unit_mean_abs
from plc.options import ARMS, MitigationOptions
from plc.runtime import setup
from plc.store import Checkpoint, check_output, load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    import torch

    from plc.model import LanguageModel
    from plc.store import Checkpoint

# Weight clipping's bound in init stds: κ = 1 clamps at 7σ of the layer's normal init, beyond
# which a draw falls with probability 2.6e-12 — 8e-4 expected weights of the paper's 314M
# (3.1e8 Linear weights): κ = 1 clips no weight at initialisation at any size of the paper.
CLIP_STDS = 7.0
DEFAULT_REDO_TAU = float(ARMS["redo"][2])  # Plasticine's threshold, the plan's redo arm's
INTERVENE_METHODS = ("shrink-perturb", "redo", "embed-reset")
TOKEN_EMBEDDING = "transformer.wte.weight"  # plc's GPT's, tied to the head: embed_reset's
SPECTRAL_POWER = 2  # k of (σ₁^k − 1)²
SPECTRAL_WARMUP = 20  # power iterations before a task's first step: σ₁ starts converged
# Generator streams: one per method, so enabling one never changes another's draws.
_SHRINK, _CBP, _REDO, _SWR, _EMBED, _SPECTRAL = 1, 2, 3, 4, 5, 6


# ----------------------------------------------------------------------------------------- θ₀


@dataclass
class InitialState:
    """θ₀ of a run (parameter name → tensor) and where it came from, for the record."""

    state: dict[str, torch.Tensor]
    source: str


def initial_state(ckpt: Checkpoint, init_path: str | os.PathLike | None = None) -> InitialState:
    """The initial weights θ₀ of `ckpt`'s run.

    Without `init_path` they are rebuilt from the checkpoint's config and seed (plc.init.build_model
    is deterministic) and checked against the digest `plc init` recorded; with it, they are read
    from that file (the run's c0.pt), which must have the same config, run id and task index 0.
    A run started from a pretrained model (`plc init --from`) has those weights as θ₀
    (`_pretrained_start`).
    """
    digest = ckpt.meta.get("init_digest")
    if isinstance(ckpt.config, HFConfig) and init_path is None:
        return _pretrained_start(ckpt, digest)
    if init_path is not None:
        init = load_checkpoint(init_path)
        if init.config != ckpt.config:
            raise PlcError(f"{init_path} has another architecture than the checkpoint; not its θ₀")
        if init.task_index != 0 or init.run_id != ckpt.run_id:
            raise PlcError(
                f"{init_path} is not the initial checkpoint of run {ckpt.run_id!r} "
                f"(run {init.run_id!r}, task {init.task_index})"
            )
        if digest is not None and state_digest(init.model) != digest:
            raise PlcError(f"{init_path} does not hold the weights this run was initialised with")
        return InitialState(dict(init.model), f"{init_path}")
    seed = ckpt.meta.get("seed")
    if seed is None:
        raise PlcError("cannot rebuild θ₀: the checkpoint records no seed; pass the run's c0.pt")
    state = build_model(ckpt.config, int(seed)).state_dict()
    if digest is None:
        return InitialState(state, f"rebuilt from seed {seed} (no init digest to check)")
    if state_digest(state) != digest:
        raise PlcError(
            f"θ₀ rebuilt from seed {seed} differs from the weights `plc init` wrote "
            "(another plc or torch version?); pass the run's c0.pt"
        )
    return InitialState(state, f"rebuilt from seed {seed}, digest {digest}")


def _pretrained_start(ckpt: Checkpoint, digest: str | None) -> InitialState:
    """θ₀ of a run started from a pretrained model: the weights `plc init --from` wrote (their
    digest recorded), found in the checkpoint itself (the start, or a pretraining point), in the
    start checkpoint where init wrote it, or in the source model (a local folder or the Hugging
    Face cache, offline)."""
    from plc.hf.adapter import import_model
    from plc.hf.source import Source, resolve

    if digest is None:
        raise PlcError("cannot tell θ₀: the checkpoint records no digest of its starting weights")
    if state_digest(ckpt.model) == digest:
        return InitialState(dict(ckpt.model), f"the checkpoint's own weights, digest {digest}")
    start = ckpt.meta.get("init_path")
    if start and Path(start).is_file():
        init = load_checkpoint(start)
        if state_digest(init.model) == digest:
            return InitialState(dict(init.model), f"{start}, digest {digest}")
    hf = ckpt.meta.get("hf") or {}
    # A Hub model by its commit; a local one by the folder it was read from.
    if hf.get("commit"):
        source = Source(hf.get("name", ""), hf["commit"])
    else:
        source = Source(hf.get("folder") or hf.get("name", ""))
    try:
        state = import_model(resolve(source))[1]
    except PlcError:
        state = None
    if state is not None and state_digest(state) == digest:
        return InitialState(
            state, f"{hf.get('source')} (commit {hf.get('commit')}), digest {digest}"
        )
    raise PlcError(
        f"θ₀ of run {ckpt.run_id!r} is the model it started from, {hf.get('source')}: neither "
        f"its start checkpoint {start} nor that model (with the same weights) is on this machine"
    )


# ---------------------------------------------------------------------------------------- hooks


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


class Mitigations:
    """The enabled methods of `options`, bound to one model and optimizer by `attach`.

    Counters (`counters`) and the CBP statistics (`state_dict`) are what a task's record and a
    resumable state need; `load_state_dict` continues them (CBP ages and utilities may be carried
    from task to task, so units stay mature across a task boundary).
    """

    def __init__(
        self,
        options: MitigationOptions,
        *,
        seed: int = 0,
        task_index: int = 0,
        run_step: int = 0,
    ):
        """`run_step`: the run's steps before this task (SWR's and the embedding reset's cadence
        counts the run's steps)."""
        self.options, self.seed, self.task_index = options, seed, task_index
        self.run_step = run_step
        self.counters = {
            "cbp_replaced": 0,
            "redo_reset": 0,
            "shrink_perturb": 0,
            "swr_reset": 0,
            "embed_resets": 0,
        }
        self.init_source: str | None = None
        self.model: LanguageModel | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._unwatch: list[Callable[[], None]] = []

    @property
    def active(self) -> bool:
        return self.options.active

    # -------------------------------------------------------------------------------- binding

    def attach(
        self,
        model: LanguageModel,
        optimizer: torch.optim.Optimizer | None,
        *,
        init: InitialState | None = None,
        micro_batch: int | None = None,
    ) -> Mitigations:
        """Bind to `model` (the plain model, not a DDP or compiled wrapper) and its optimizer.

        `init` (θ₀) is required with l2_init. `micro_batch` bounds the rows of one ReDo forward.
        """
        o = self.options
        self.model, self.optimizer, self.micro_batch = model, optimizer, micro_batch
        self.view = seam(model)
        self.params = params = dict(model.named_parameters())
        self.stds = self.view.init_stds()
        self._clip: list[tuple[torch.Tensor, float]] = []
        self._shrink: list[tuple[torch.Tensor, float | None]] = []
        # Each parameter's initial distribution for SWR: (tensor, mean, std or None for the
        # constant: LayerNorm gains 1, biases 0).
        self._init: list[tuple[torch.Tensor, float, float | None]] = []
        for name, kind in self.view.param_kinds().items():
            p = params[name]
            if kind in ("weight", "bias"):  # the bias shares its weight's bound
                std = self.stds[name if kind == "weight" else name[: -len("bias")] + "weight"]
                self._clip.append((p, CLIP_STDS * std))
            if kind != "norm":
                self._shrink.append((p, self.stds[name]))
            gain = kind == "norm" and name.endswith("weight")
            self._init.append((p, 1.0 if gain else 0.0, self.stds[name]))
        self._theta0: list[tuple[torch.Tensor, torch.Tensor]] = []
        if o.l2_init is not None:
            if init is None:
                raise PlcError("--l2-init needs the run's initial weights θ₀ (initial_state)")
            if not set(params) <= set(init.state):
                raise PlcError("θ₀ does not have this model's parameters")
            self._theta0 = [
                (p, init.state[n].to(device=p.device, dtype=p.dtype)) for n, p in params.items()
            ]
            self.init_source = init.source
        if o.cbp is not None:
            self._init_cbp()
        if o.spectral is not None:
            self._init_spectral()
        return self

    def detach(self) -> None:
        """Remove the activation hooks (the model trains on without the methods)."""
        for stop in self._unwatch:
            stop()
        self._unwatch = []

    # ---------------------------------------------------------------------------- loop calls

    def at_task_start(self, batch_x: torch.Tensor | None = None) -> None:
        """Once before step 0 of a fresh task (not on resume: the state already has it).

        batch_x: this rank's input tokens of step 0 (B, T), needed by ReDo.
        """
        import torch

        o = self.options
        with torch.no_grad():
            if o.shrink_perturb is not None and o.shrink_perturb_at == "task":
                self.shrink_perturb(step=0)
            if o.redo is not None:
                if batch_x is None:
                    raise PlcError("ReDo at task start needs the task's first batch")
                self.redo(self._chunks(batch_x), step=0)
            if o.clip_weights is not None:
                self.clip()

    def before_step(self) -> None:
        """On the step's gradients, before clipping and `optimizer.step()`: spectral
        regularisation adds its penalty's gradient."""
        if self.options.spectral is not None:
            import torch

            with torch.no_grad():
                self.spectral_grad()

    def after_step(self, step: int, batch_x: torch.Tensor | None = None) -> None:
        """Right after `optimizer.step()` of 0-based step `step`; batch_x: this rank's inputs of
        that step (B, T), used by ReDo every redo_every steps."""
        import torch

        o = self.options
        done = self.run_step + step + 1  # the run's steps after this one
        with torch.no_grad():
            if o.l2_init is not None:
                self.l2_init_step()
            if o.shrink_perturb is not None and o.shrink_perturb_at == "step":
                self.shrink_perturb(step=step + 1)
            if o.cbp is not None:
                self.cbp_step(step + 1)
            if o.redo_every is not None and (step + 1) % o.redo_every == 0:
                if batch_x is None:
                    raise PlcError("ReDo needs the step's batch")
                self.redo(self._chunks(batch_x), step=step + 1)
            if o.swr is not None and done % o.swr_every == 0:
                self.swr_step(done)
            if o.embed_reset is not None and done % o.embed_reset == 0:
                self.reset_embedding(done)
            if o.clip_weights is not None:
                self.clip()

    def record(self) -> dict[str, Any]:
        """Settings and what they did this task: for the checkpoint history's task entry."""
        rec = {**self.options.record(), **self.counters}
        if self.init_source is not None:
            rec["theta0"] = self.init_source
        return rec

    # ------------------------------------------------------------------------------- methods

    def clip(self) -> None:
        kappa = self.options.clip_weights
        for p, bound in self._clip:
            p.clamp_(-kappa * bound, kappa * bound)

    def l2_init_step(self) -> None:
        # Every group shares the schedule's learning rate (plc.train sets them all).
        weight = self.optimizer.param_groups[0]["lr"] * self.options.l2_init
        for p, p0 in self._theta0:
            p.lerp_(p0, weight)

    def shrink_perturb(self, step: int) -> None:
        """θ ← λθ + σ·ε on every weight, bias and table (LayerNorm parameters excluded)."""
        import torch

        shrink, sigma = self.options.shrink_perturb
        gen = None
        for p, std in self._shrink:
            p.mul_(shrink)
            if sigma and std:
                gen = gen or self._generator(p.device, _SHRINK, step)
                eps = torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
                p.add_(eps, alpha=sigma * std)
        self.counters["shrink_perturb"] += 1

    def redo(self, batches: Iterable[torch.Tensor], step: int) -> list[list[int]]:
        """Reset the units with dormancy score ≤ τ on `batches`; the reset units of each layer."""
        import torch

        mean_abs = unit_mean_abs(self.model, batches)
        if _distributed():
            import torch.distributed as dist

            # Every rank scores the same number of tokens: the mean of the means is the mean.
            dist.all_reduce(mean_abs)
            mean_abs /= dist.get_world_size()
        dormant = dormant_scores(mean_abs) <= self.options.redo
        reset = []
        gen = self._generator(self.view.device(), _REDO, step)
        for layer in range(dormant.shape[0]):
            idx = torch.nonzero(dormant[layer]).flatten()
            if idx.numel():
                self._reinit_units(layer, idx, gen)
            reset.append(idx.tolist())
        self.counters["redo_reset"] += sum(len(r) for r in reset)
        return reset

    def swr_step(self, run_step: int) -> int:
        """Re-draw every weight whose utility |θ·∇θ| is at most ζ × its tensor's mean utility;
        the number re-drawn."""
        import torch

        zeta, gen, total = self.options.swr, None, 0
        for p, mean, std in self._init:
            if p.grad is None:
                continue
            utility = (p * p.grad).abs()
            picked = utility <= zeta * utility.mean()
            n = int(picked.sum())
            if n == 0:
                continue
            if std:
                gen = gen or self._generator(p.device, _SWR, run_step)
                new = torch.randn(n, generator=gen, device=p.device) * std + mean
                p[picked] = new.to(p.dtype)
            else:
                p[picked] = mean
            total += n
        self.counters["swr_reset"] += total
        return total

    def reset_embedding(self, run_step: int) -> None:
        """The token embedding (the tied head) drawn afresh; its AdamW moments and step zeroed."""
        import torch

        if TOKEN_EMBEDDING not in self.params:
            raise PlcError(f"--embed-reset needs a token embedding named {TOKEN_EMBEDDING}")
        wte, std = self.params[TOKEN_EMBEDDING], self.stds[TOKEN_EMBEDDING]
        gen = self._generator(wte.device, _EMBED, run_step)
        wte.copy_(torch.randn(wte.shape, generator=gen, device=wte.device) * std)
        state = self.optimizer.state.get(wte) if self.optimizer is not None else None
        for value in (state or {}).values():
            if torch.is_tensor(value):
                value.zero_()
        self.counters["embed_resets"] += 1

    # ----------------------------------------------------------------------------- spectral

    def _spectral_layers(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        import torch.nn as nn

        return [(m.weight, m.bias) for m in self.model.modules() if isinstance(m, nn.Linear)]

    def _init_spectral(self) -> None:
        """A right singular vector estimate per layer, converged by SPECTRAL_WARMUP iterations."""
        import torch

        gen = self._generator(self.view.device(), _SPECTRAL, 0)
        self.spectral_v = []
        for w, b in self._spectral_layers():
            v = torch.randn(w.shape[1] + (b is not None), generator=gen, device=w.device)
            self.spectral_v.append(v / v.norm())
        with torch.no_grad():
            for _ in range(SPECTRAL_WARMUP):
                self._power_iteration()

    def _power_iteration(self) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
        """One iteration on every layer: (σ₁, u, v) with u, v the unit singular vectors."""
        import torch

        out = []
        for i, (w, b) in enumerate(self._spectral_layers()):
            m = w.float() if b is None else torch.cat([w.float(), b.float()[:, None]], dim=1)
            u = m @ self.spectral_v[i]
            u /= u.norm().clamp_min(1e-12)
            v = m.t() @ u
            sigma = v.norm()
            self.spectral_v[i] = v / sigma.clamp_min(1e-12)
            out.append((float(sigma), u, self.spectral_v[i]))
        return out

    def spectral_grad(self) -> list[float]:
        """Add λ·∇Σ(σ₁^k − 1)² to the gradients; σ₁ of each layer after this step's iteration."""
        lam, k = self.options.spectral, SPECTRAL_POWER
        sigmas = []
        for (w, b), (sigma, u, v) in zip(
            self._spectral_layers(), self._power_iteration(), strict=True
        ):
            scale = lam * 2 * (sigma**k - 1) * k * sigma ** (k - 1)
            g = scale * u[:, None] * v[None, :]  # ∂σ₁/∂M = u vᵀ
            for p, part in ((w, g[:, : w.shape[1]]), (b, g[:, w.shape[1]])):
                if p is None:
                    continue
                if p.grad is None:
                    p.grad = part.to(p.dtype).clone()
                else:
                    p.grad.add_(part.to(p.dtype))
            sigmas.append(sigma)
        return sigmas

    # ---------------------------------------------------------------------------------- CBP

    def _init_cbp(self) -> None:
        import torch

        view = self.view
        dev = view.device()
        shape = (view.n_layer, view.mlp_width)
        self.cbp_util = torch.zeros(shape, device=dev)
        self.cbp_ages = torch.zeros(shape, device=dev)
        self.cbp_acc = [0.0] * view.n_layer
        # This step's sums over its training forwards (all micro-batches).
        self._abs_sum = torch.zeros(shape, device=dev)
        self._tokens = torch.zeros((), device=dev)
        self._unwatch.append(view.watch_units(self._cbp_add))

    def _cbp_add(self, layer: int, out: torch.Tensor) -> None:
        import torch

        # Training forwards only: evaluations (eval mode) and ReDo (no_grad) are not the data.
        if not (self.model.training and torch.is_grad_enabled()):
            return
        h = out.detach()[:, self.view.n_sink :]
        self._abs_sum[layer] += h.abs().sum(dim=(0, 1), dtype=torch.float32)
        if layer == 0:
            self._tokens += h.shape[0] * h.shape[1]

    def cbp_step(self, step: int) -> None:
        """Update ages and utilities from the step's activations, then replace units."""
        import torch

        o = self.options
        if _distributed():
            import torch.distributed as dist

            for t in (self._abs_sum, self._tokens):
                dist.all_reduce(t)
        if not self._tokens:
            return
        eta = o.cbp_decay
        self.cbp_ages += 1
        w_out = torch.stack([self._outgoing_abs_mean(i) for i in range(self.view.n_layer)]).float()
        self.cbp_util.mul_(eta).add_(self._abs_sum / self._tokens * w_out, alpha=1 - eta)
        self._abs_sum.zero_()
        self._tokens.zero_()
        correction = 1 - eta**self.cbp_ages
        eligible = self.cbp_ages > o.cbp_maturity
        gen = None
        for layer, n_eligible in enumerate(eligible.sum(dim=1).tolist()):
            self.cbp_acc[layer] += o.cbp * n_eligible
            n = int(self.cbp_acc[layer])
            if n == 0:
                continue
            self.cbp_acc[layer] -= n
            candidates = torch.nonzero(eligible[layer]).flatten()
            utility = self.cbp_util[layer, candidates] / correction[layer, candidates]
            idx = candidates[torch.topk(-utility, n).indices]
            gen = gen or self._generator(candidates.device, _CBP, step)
            self._reinit_units(layer, idx, gen)
            self.counters["cbp_replaced"] += n

    # ------------------------------------------------------------------------------- shared

    def _outgoing_abs_mean(self, layer: int) -> torch.Tensor:
        """Mean |w_out| of each unit of `layer`: over its slice of the outgoing weight."""
        name, axis = self.view.unit_params(layer).outgoing
        return self.params[name].abs().mean(dim=1 - axis)

    def _reinit_units(self, layer: int, idx: torch.Tensor, gen: torch.Generator) -> None:
        """New incoming weights (the init), incoming bias 0, outgoing weights 0, moments 0 (the
        slices of the unit in every weight that computes or reads it: plc.measures.UnitParams)."""
        import torch

        where = self.view.unit_params(layer)
        for name, axis in where.incoming:
            p, std = self.params[name], self.stds[name]
            if std:  # a weight: drawn afresh from its initialisation, the units along dim 0
                rows = p.movedim(axis, 0)
                new = torch.randn((idx.numel(), *rows.shape[1:]), generator=gen, device=p.device)
                rows[idx] = (new * std).to(p.dtype)
            else:
                p.index_fill_(axis, idx, 0)
        self.params[where.outgoing[0]].index_fill_(where.outgoing[1], idx, 0)
        for name, axis in (*where.incoming, where.outgoing):
            p = self.params[name]
            state = self.optimizer.state.get(p) if self.optimizer is not None else None
            for key in ("exp_avg", "exp_avg_sq"):
                if state and key in state:
                    state[key].index_fill_(axis, idx, 0)
        if self.options.cbp is not None:
            for t in (self.cbp_util, self.cbp_ages):
                t[layer, idx] = 0

    def _chunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(x.split(self.micro_batch)) if self.micro_batch else [x]

    def _generator(self, device: torch.device, *key: int) -> torch.Generator:
        import numpy as np
        import torch

        words = np.random.SeedSequence([self.seed, self.task_index, *key]).generate_state(2)
        gen = torch.Generator(device=device)
        gen.manual_seed(int(words[0]) << 32 | int(words[1]))
        return gen

    # -------------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Counters and CBP statistics (tensors and plain values: weights_only-loadable)."""
        state: dict[str, Any] = {"counters": dict(self.counters)}
        if self.options.spectral is not None:
            state["spectral_v"] = [v.cpu() for v in self.spectral_v]
        if self.options.cbp is not None:
            state["cbp"] = {
                "util": self.cbp_util.cpu(),
                "ages": self.cbp_ages.cpu(),
                "acc": list(self.cbp_acc),
            }
        return state

    def load_state_dict(self, state: dict[str, Any], counters: bool = True) -> None:
        """Continue from `state_dict()`; counters=False carries only the CBP statistics (a new
        task continuing the previous one's unit ages and utilities)."""
        if counters:
            self.counters.update(state.get("counters", {}))
            if self.options.spectral is not None and "spectral_v" in state:
                device = self.view.device()
                self.spectral_v = [v.to(device) for v in state["spectral_v"]]
        cbp = state.get("cbp")
        if self.options.cbp is not None and cbp is not None:
            if tuple(cbp["util"].shape) != tuple(self.cbp_util.shape):
                raise PlcError("the carried CBP statistics are for another model shape")
            for name in ("util", "ages"):  # an older state's mean activations go unused
                getattr(self, f"cbp_{name}").copy_(cbp[name])
            self.cbp_acc = [float(a) for a in cbp["acc"]]


# ------------------------------------------------------------------------------ plc intervene


@dataclass
class InterveneResult:
    out: str
    method: str
    checkpoint: str
    run_id: str
    task_index: int
    record: dict[str, Any]  # the history entry written
    seconds: float
    units_per_layer: int  # MLP units of a layer
    reset_units: list[list[int]] | None  # redo: the indices reset, per layer


def intervene(
    method: str,
    ckpt: str | os.PathLike,
    *,
    out: str | os.PathLike,
    shrink_perturb: tuple[float, float] | str | None = None,
    tau: float = DEFAULT_REDO_TAU,
    data: str | os.PathLike | None = None,
    lang: str | None = None,
    seqs: int = 256,
    seq_len: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    run_id: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    force: bool = False,
) -> InterveneResult:
    """`plc intervene`: apply one method once to a checkpoint (between two tasks) and write it.

    - shrink-perturb: θ ← λθ + σ·ε with `shrink_perturb` = (λ, σ), as at a task start.
    - redo: the units with dormancy score ≤ `tau` on the first `seqs` evaluation windows of `lang`
      in `data` (the windows `plc diagnose --dormant-lang LANG --dormant-seqs SEQS` scores) are
      reset. No optimizer state is involved: the protocol's next task starts a fresh AdamW.
    - embed-reset: the token embedding (the tied head) re-drawn from its initialisation, as
      language-model-plasticity's `fb_sweep/manual_reset_emb.py` does before adapting to a new
      language.

    The output keeps the task index; its history gains an entry {"intervention": method, …} that
    repeats the last task's language (so `lang` columns of later metric rows stay right).
    `run_id` renames the run (a fork); by default the run continues under its id.
    """

    if method not in INTERVENE_METHODS:
        raise PlcError(f"unknown method {method!r}; choose one of {', '.join(INTERVENE_METHODS)}")
    out = Path(out)
    if out.resolve() == Path(ckpt).resolve():
        raise PlcError(f"--out {out} is the input checkpoint; write the result elsewhere")
    check_output(out, force)
    if method == "shrink-perturb":
        if shrink_perturb is None:
            raise PlcError("shrink-perturb needs --shrink-perturb λ,σ")
        options = MitigationOptions(shrink_perturb=shrink_perturb)
    elif method == "embed-reset":
        options = MitigationOptions(embed_reset=1)
    else:
        if not 0 <= tau < 1:
            raise PlcError(f"--tau must be in [0, 1), got {tau}")
        options = MitigationOptions(redo=tau)
        if lang is None or data is None:
            raise PlcError("redo needs --data and --lang: the batch whose dormant units it resets")
        if seqs <= 0:
            raise PlcError(f"--seqs must be positive, got {seqs}")
        if batch_size is not None and batch_size <= 0:
            raise PlcError(f"--batch-size must be positive, got {batch_size}")

    base = load_checkpoint(ckpt, finite=True)
    windows = None
    if method == "redo":
        from plc.evaluate import default_batch, load_eval_windows

        windows = load_eval_windows(base, data, lang, seqs, seq_len).windows
        batch_size = batch_size or default_batch(windows.shape[1] - 1)

    runtime = setup(device, threads)
    model = base.build_model(runtime.device)
    seed = int(base.meta.get("seed", 0)) if seed is None else seed
    mit = Mitigations(options, seed=seed, task_index=base.task_index).attach(model, None)
    t0 = time.perf_counter()
    import torch

    with torch.no_grad():
        if method == "shrink-perturb":
            mit.shrink_perturb(step=0)
            reset = None
        elif method == "embed-reset":
            mit.reset_embedding(0)
            reset = None
        else:
            L = windows.shape[1] - 1
            batches = (
                torch.from_numpy(windows[s : s + batch_size, :L]).to(runtime.device)
                for s in range(0, windows.shape[0], batch_size)
            )
            reset = mit.redo(batches, step=0)
    entry: dict[str, Any] = {
        "intervention": method,
        "lang": base.last_lang,
        "tokens": 0,
        "steps": 0,
        # A one-off reset has no cadence: the embed_reset field only switched it on.
        **{k: v for k, v in options.record().items() if k not in ("label", "embed_reset")},
        "seed": seed,
    }
    if reset is not None:
        entry.update(
            lang_scored=lang, seqs=int(windows.shape[0]), seq_len=int(windows.shape[1] - 1)
        )
        entry["units_reset"] = [len(r) for r in reset]

    meta = {**base.meta, "history": [*base.meta.get("history", []), entry]}
    meta["plc_version"] = __version__
    if run_id is not None:
        meta["run_id"] = run_id
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(out, Checkpoint(base.config, state, meta), force=force)
    return InterveneResult(
        out=str(out),
        method=method,
        checkpoint=str(ckpt),
        run_id=str(meta["run_id"]),
        task_index=base.task_index,
        record=entry,
        seconds=time.perf_counter() - t0,
        units_per_layer=base.config.mlp_width,
        reset_units=reset,
    )
