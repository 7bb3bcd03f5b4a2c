"""`HFConfig`: the architecture a plc checkpoint of a Hugging Face model records (torch-free).

It answers what plc asks of any model's config (plc.sizes.GPTConfig has the same names): layers,
width, heads, MLP width, embedding rows, context, parameter counts. The Hugging Face config itself
(`hf`, the plain dict of `config.to_dict()`) rebuilds the network; the counts are measured on the
built model when the checkpoint is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from plc.hf.families import Family, family_of

CONFIG_KEY = "hf"  # a checkpoint config holding this key is a Hugging Face model's


@dataclass(frozen=True)
class HFConfig:
    """- n_params: non-embedding parameters, as Table I counts them (and as Pythia's model cards
      do): all but the token table, a learned position table and an untied output head.
    - n_params_total: every distinct parameter (a tied head counted once)."""

    family: str  # the config's model_type (plc.hf.families.FAMILIES)
    hf: dict[str, Any] = field(compare=True)
    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    mlp_width: int  # hidden units of every MLP
    vocab_size: int  # embedding rows
    context: int  # max_position_embeddings
    n_params: int
    n_params_total: int
    sink_tokens: int = 0  # plc's own options do not apply to these architectures
    n_sink_params: int = 0

    @property
    def qk_norm(self) -> bool:
        return self.spec.qk_norm

    @property
    def spec(self) -> Family:
        return family_of(self.family, "this checkpoint")

    @property
    def head_dim(self) -> int:
        return int(self.hf.get("head_dim") or self.d_model // self.n_head)

    @property
    def architecture(self) -> str:
        return (self.hf.get("architectures") or [self.family])[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HFConfig:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})


def is_hf_config(d: dict[str, Any]) -> bool:
    return CONFIG_KEY in d
