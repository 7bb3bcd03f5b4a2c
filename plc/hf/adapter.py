"""`HFModel`: a Hugging Face causal LM behind plc's model interface, and the way in and out.

The adapter holds the `AutoModelForCausalLM`'s own submodules as its children, so its parameter
names and state dict are the Hugging Face model's (`gpt_neox.layers.0.mlp.dense_4h_to_h.weight`):
a plc checkpoint of it holds the same tensors `save_pretrained` writes. It is the model the one
training loop trains (`forward(idx, targets)`: the final hidden states through the family's own
code, then plc's chunked cross-entropy against the output head), and its own `ModelSeam`
(plc.measures): the MLP hidden units are the input of each block's output projection (a forward
pre-hook), the attention probabilities those the family's eager attention returns (a forward
hook on each attention module, the model switched to eager attention while watched).

- `import_model`: a model folder → (HFConfig, its weights as stored, what the checkpoint records);
  dropout is set to 0, as plc's GPT has none (the values are kept and written back on export).
- `build`: a checkpoint's config and weights → HFModel in fp32 (or a fresh initialisation of the
  same architecture from a seed: the family's own `_init_weights`).
- `export`: `save_pretrained` in the family's own format.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from plc.errors import PlcError
from plc.hf.config import HFConfig
from plc.hf.families import Family, family_of
from plc.measures import ProbsWatch, UnitParams, UnitsWatch
from plc.model import lm_loss

if TYPE_CHECKING:
    from plc.hf.source import Resolved

DROPOUT_KEYS = ("dropout", "pdrop")  # config keys holding a dropout probability end so


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' own warnings (config checks of tiny test models, loading reports) are not
    plc's output: errors still raise."""
    import transformers

    level = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)
        if bars:
            transformers.utils.logging.enable_progress_bar()


def _conv1d() -> type:
    from transformers.pytorch_utils import Conv1D

    return Conv1D


class HFModel(nn.Module):
    """A Hugging Face causal LM as plc's model under study (plc.model's interface)."""

    def __init__(self, hf: nn.Module, config: HFConfig):
        super().__init__()
        own = [n for n, _ in hf.named_parameters(recurse=False)]
        if own:
            raise PlcError(f"{type(hf).__name__} holds parameters outside its modules ({own[0]})")
        # Not a child: its children are ours, so names and state dict are the Hugging Face ones.
        object.__setattr__(self, "hf", hf)
        for name, child in hf.named_children():
            self.add_module(name, child)
        self.config = config
        self.family: Family = family_of(config.family, type(hf).__name__)
        self.n_layer, self.n_head = config.n_layer, config.n_head
        self.mlp_width, self.n_sink = config.mlp_width, 0
        self._kinds = _param_kinds(self)

    # ------------------------------------------------------------------- the model interface

    @property
    def blocks(self) -> nn.ModuleList:
        return self.get_submodule(self.family.blocks)

    def head(self) -> nn.Module:
        return self.hf.get_output_embeddings()

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states (B, T, C) for token ids (B, T), by the family's own code."""
        T = idx.size(1)
        if T > self.config.context:
            raise PlcError(f"sequence length {T} exceeds the model's context {self.config.context}")
        return self.hf.base_model(input_ids=idx, use_cache=False).last_hidden_state

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) without targets; the mean cross-entropy with them, chunked
        (plc.model.lm_loss): the (B·T, V) logits are never held whole."""
        h = self.hidden(idx)
        w = self.head().weight
        if targets is None:
            return h @ w.t()
        return lm_loss(h.flatten(0, 1), w, targets.flatten())

    def init_stds(self) -> dict[str, float | None]:
        """Per parameter, the std of the zero-mean normal the family's `_init_weights` draws it
        from (initializer_range; GPT-2's residual projections / √(2·n_layer)), or None for
        those it sets to a constant (biases 0, norm gains 1)."""
        std = float(self.config.hf.get("initializer_range") or 0.02)
        residual = std / math.sqrt(2 * self.n_layer)
        out: dict[str, float | None] = {}
        for name, kind in self._kinds.items():
            if kind in ("bias", "norm"):
                out[name] = None
            elif any(name.endswith(s) for s in self.family.residual_init):
                out[name] = residual
            else:
                out[name] = std
        return out

    def param_kinds(self) -> dict[str, str]:
        """Per parameter: 'table' (token and position tables, the output head), 'weight' and
        'bias' (of the Linear / Conv1D projections), 'norm' (norm gains and biases)."""
        return dict(self._kinds)

    # ------------------------------------------------------------ the seam (plc.measures)

    def run(self, idx: torch.Tensor) -> None:
        self.hidden(idx)

    def watch_units(self, fn: UnitsWatch) -> Callable[[], None]:
        f = self.family
        handles = [
            getattr(block.get_submodule(f.mlp), f.unit_out).register_forward_pre_hook(
                lambda mod, args, i=i: fn(i, args[0])
            )
            for i, block in enumerate(self.blocks)
        ]

        def stop() -> None:
            for h in handles:
                h.remove()

        return stop

    def watch_probs(self, fn: ProbsWatch) -> Callable[[], None]:
        before = self.hf.config._attn_implementation
        self.hf.set_attn_implementation("eager")

        def seen(layer: int, out: Any) -> None:
            probs = out[1] if isinstance(out, tuple) and len(out) > 1 else None
            if probs is None:
                raise PlcError(
                    f"{self.family.label}: layer {layer}'s attention returned no probabilities "
                    "under eager attention"
                )
            fn(layer, probs)

        handles = [
            block.get_submodule(self.family.attention).register_forward_hook(
                lambda mod, args, out, i=i: seen(i, out)
            )
            for i, block in enumerate(self.blocks)
        ]

        def stop() -> None:
            for h in handles:
                h.remove()
            self.hf.set_attn_implementation(before)

        return stop

    def core_parameters(self) -> Iterator[torch.Tensor]:
        """All but the tables: token and position tables and the output head."""
        params = dict(self.named_parameters())
        return (params[n] for n, kind in self._kinds.items() if kind != "table")

    def device(self) -> torch.device:
        return next(self.parameters()).device

    def unit_params(self, layer: int) -> UnitParams:
        f = self.family
        prefix = f"{f.blocks}.{layer}.{f.mlp}"
        incoming: list[tuple[str, int]] = []
        for proj in f.unit_in:
            incoming.append((f"{prefix}.{proj}.weight", 1 if f.conv1d else 0))
            if f"{prefix}.{proj}.bias" in self._kinds:
                incoming.append((f"{prefix}.{proj}.bias", 0))
        return UnitParams(tuple(incoming), (f"{prefix}.{f.unit_out}.weight", 0 if f.conv1d else 1))


def _param_kinds(model: HFModel) -> dict[str, str]:
    """Each parameter's kind (HFModel.param_kinds), under its first name (a tied head is the token
    table's); one line naming a parameter of a module plc does not know."""
    conv1d = _conv1d()
    names = {id(p): n for n, p in model.named_parameters()}
    head = model.hf.get_output_embeddings()
    kinds: dict[str, str] = {}
    for module in model.modules():
        for p_name, p in module.named_parameters(recurse=False):
            name = names[id(p)]
            if name in kinds:
                continue
            if isinstance(module, nn.Embedding) or module is head:
                kinds[name] = "table"
            elif isinstance(module, (nn.Linear, conv1d)):
                kinds[name] = p_name
            elif "Norm" in type(module).__name__:
                kinds[name] = "norm"
            else:
                raise PlcError(
                    f"{model.family.label}: parameter {name} belongs to a "
                    f"{type(module).__name__}, which plc does not know how to initialise"
                )
    if getattr(head, "bias", None) is not None:
        raise PlcError(
            f"{model.family.label}: the output head has a bias, which plc's chunked loss does not add"
        )
    return kinds


# ----------------------------------------------------------------------- in and out


def _hf_config(config: HFConfig):
    import transformers

    with _quiet():
        return transformers.AutoConfig.for_model(**config.hf)


def _instantiate(hf_config, *, init: bool) -> nn.Module:
    """The causal LM of `hf_config` in fp32; its weights drawn by the family's init, or left
    uninitialised for a state dict to fill (fast: no draws for a model about to be loaded)."""
    import transformers
    from transformers.initialization import no_init_weights

    with _quiet(), contextlib.nullcontext() if init else no_init_weights():
        model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    model.tie_weights()  # no_init_weights skips the tying post_init does
    return model


def build(config: HFConfig, state: dict[str, torch.Tensor] | None, seed: int = 0) -> HFModel:
    """The model of a checkpoint (its weights `state`, any dtype, loaded into fp32), or with
    `state` None a fresh initialisation of the same architecture drawn from `seed` alone."""
    hf_config = _hf_config(config)
    if state is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _instantiate(hf_config, init=True)
    else:
        model = _instantiate(hf_config, init=False)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1].strip()[:200]
            raise PlcError(
                f"the checkpoint's weights do not match its {config.architecture} config ({first})"
            ) from None
    return HFModel(model, config)


def _counts(model: HFModel) -> tuple[int, int]:
    """(non-embedding, total) parameters: tables (token, position, an untied head) apart."""
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    tables = sum(params[n].numel() for n, k in model.param_kinds().items() if k == "table")
    return total - tables, total


def config_of(hf: nn.Module, where: str) -> HFConfig:
    """The HFConfig of a loaded causal LM (its config with dropout already zeroed)."""
    c = hf.config
    family = family_of(getattr(c, "model_type", None), where)
    d = c.to_dict()
    d["model_type"] = c.model_type
    blocks = hf.get_submodule(family.blocks)
    out = getattr(blocks[0].get_submodule(family.mlp), family.unit_out)
    mlp_width = out.weight.shape[0] if family.conv1d else out.weight.shape[1]
    heads = int(c.num_attention_heads)
    provisional = HFConfig(
        family=family.model_type,
        hf=d,
        n_layer=len(blocks),
        d_model=int(c.hidden_size),
        n_head=heads,
        n_kv_head=int(getattr(c, "num_key_value_heads", None) or heads),
        mlp_width=int(mlp_width),
        vocab_size=int(hf.get_input_embeddings().weight.shape[0]),
        context=int(c.max_position_embeddings),
        n_params=0,
        n_params_total=0,
    )
    n_params, total = _counts(HFModel(hf, provisional))
    return HFConfig(**{**provisional.to_dict(), "n_params": n_params, "n_params_total": total})


def _zero_dropout(hf_config) -> dict[str, float]:
    """Set every dropout probability of the config to 0; the values it had."""
    before = {}
    for key, value in hf_config.to_dict().items():
        if key.endswith(DROPOUT_KEYS) and isinstance(value, float) and value > 0:
            before[key] = value
            setattr(hf_config, key, 0.0)
    return before


def import_model(resolved: Resolved) -> tuple[HFConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """A Hugging Face model folder → (its HFConfig, its weights in the dtype they are stored in,
    the record a plc checkpoint keeps of where it came from: `hf` of the meta)."""
    import transformers

    where = resolved.source.spec
    try:
        hf_config = transformers.AutoConfig.from_pretrained(resolved.folder)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PlcError(f"{where}: cannot read its config.json ({first})") from e
    family_of(getattr(hf_config, "model_type", None), where)
    dropout = _zero_dropout(hf_config)
    try:
        with _quiet():
            hf = transformers.AutoModelForCausalLM.from_pretrained(
                resolved.folder, config=hf_config, dtype="auto"
            )
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PlcError(f"{where}: cannot load the model in {resolved.folder} ({first})") from e
    config = config_of(hf, where)
    state = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    record = {
        "source": resolved.source.spec,
        "name": resolved.source.name,
        "revision": resolved.source.revision,
        "commit": resolved.commit,
        "folder": str(resolved.folder.resolve()),
        "architecture": config.architecture,
        "family": config.family,
        "dtype": ",".join(dtypes),
        "dropout": dropout,
        "step": resolved.source.step,
    }
    return config, state, record


def export(
    config: HFConfig, state: dict[str, torch.Tensor], meta: dict[str, Any], out: Path
) -> None:
    """`save_pretrained` of the checkpoint's model into the folder `out` (safetensors, fp32), its
    dropout back at the values the source had."""
    model = build(config, state)
    for key, value in ((meta.get("hf") or {}).get("dropout") or {}).items():
        setattr(model.hf.config, key, value)
    model.hf.config.plc = {k: meta.get(k) for k in ("run_id", "size", "task_index", "tokens_seen")}
    with _quiet():
        model.hf.save_pretrained(out)
    _save_tokenizer(meta, out)


def _save_tokenizer(meta: dict[str, Any], out: Path) -> None:
    """The run's tokenizer beside the model where it can be loaded here (from the folder the model
    came from, or by its name) and is the one the checkpoint records (same fingerprint)."""
    from plc.data.tokenizers import HFTokenizer

    want = meta.get("tokenizer") or {}
    folder = (meta.get("hf") or {}).get("folder")
    for spec in (folder, str(want.get("name", "")).removeprefix("hf:")):
        if not spec:
            continue
        try:
            tok = HFTokenizer(spec)
        except PlcError:
            continue
        if tok.identity()["fingerprint"] == want.get("fingerprint"):
            tok._tok.save_pretrained(out)
            return
