"""The Hugging Face architectures plc studies, and what it must know of each (torch-free).

Everything else — attention, rotary or learned positions, parallel residuals, QK-norm — is the
family's own `transformers` code, run as it is. plc adds only where to look:

- `blocks`: the causal LM's list of decoder blocks; in each, `attention` (a module returning
  (output, probabilities) whose probabilities are computed under eager attention) and `mlp`;
- the MLP hidden units: the input of `unit_out` (c_proj / dense_4h_to_h / down_proj); for SwiGLU
  (`gated`) that is act(gate_proj(x)) · up_proj(x), the gated product. A unit is row i of each
  projection in `unit_in` (weight and bias) and column i of `unit_out`'s weight — transposed in
  GPT-2's Conv1D, which stores (in, out);
- the initialisation (`transformers`' `_init_weights` of the family): every Linear / Conv1D
  weight and every embedding N(0, initializer_range), biases 0, norms 1 and 0; GPT-2 draws its
  residual projections (`residual_init`) with initializer_range / √(2·n_layer).
"""

from __future__ import annotations

from dataclasses import dataclass

from plc.errors import PlcError


@dataclass(frozen=True)
class Family:
    model_type: str  # the Hugging Face config's model_type
    label: str
    blocks: str  # dotted path from the causal LM to its ModuleList of decoder blocks
    attention: str  # a block's attention module
    mlp: str  # a block's MLP
    unit_in: tuple[str, ...]  # the MLP's projections into its hidden units
    unit_out: str  # the MLP's projection out of them (its input is the hidden units)
    gated: bool = False  # SwiGLU: the units are act(gate) · up
    conv1d: bool = False  # weights stored (in, out): GPT-2's Conv1D
    residual_init: tuple[str, ...] = ()  # weights drawn with initializer_range / √(2·n_layer)
    position_table: str | None = None  # a learned position table (GPT-2's wpe)
    qk_norm: bool = False  # a norm on queries and keys (Qwen3, OLMo-2)


_SWIGLU = dict(
    blocks="model.layers",
    attention="self_attn",
    mlp="mlp",
    unit_in=("gate_proj", "up_proj"),
    unit_out="down_proj",
    gated=True,
)

FAMILIES: dict[str, Family] = {
    "gpt2": Family(
        "gpt2",
        "GPT-2",
        blocks="transformer.h",
        attention="attn",
        mlp="mlp",
        unit_in=("c_fc",),
        unit_out="c_proj",
        conv1d=True,
        residual_init=("attn.c_proj.weight", "mlp.c_proj.weight"),
        position_table="transformer.wpe",
    ),
    "gpt_neox": Family(
        "gpt_neox",
        "GPT-NeoX (Pythia)",
        blocks="gpt_neox.layers",
        attention="attention",
        mlp="mlp",
        unit_in=("dense_h_to_4h",),
        unit_out="dense_4h_to_h",
    ),
    "llama": Family("llama", "Llama", **_SWIGLU),
    "qwen2": Family("qwen2", "Qwen2", **_SWIGLU),
    "qwen3": Family("qwen3", "Qwen3", **_SWIGLU, qk_norm=True),
    "olmo": Family("olmo", "OLMo", **_SWIGLU),
    "olmo2": Family("olmo2", "OLMo-2", **_SWIGLU, qk_norm=True),
}
SUPPORTED = ", ".join(f.label for f in FAMILIES.values())


def family_of(model_type: str | None, where: str) -> Family:
    """The family of a config's model_type; one line naming what is missing otherwise."""
    family = FAMILIES.get(model_type or "")
    if family is None:
        raise PlcError(
            f"{where} is a {model_type or 'model without a model_type'} model, an architecture "
            f"plc has no adapter for (it knows where the MLP units and attention are, and how "
            f"weights are initialised, only for {SUPPORTED})"
        )
    return family
