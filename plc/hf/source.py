"""Where a Hugging Face model comes from: `hf:ID_OR_PATH[@REVISION]` → a local folder.

- A local folder: the model itself, or with `@REVISION` its subfolder REVISION (a suite's
  revisions saved as folders: `models/pythia-70m/step1000/`).
- A Hub id (`EleutherAI/pythia-70m@step1000`): the snapshot in the Hugging Face cache
  (HF_HUB_CACHE, HF_HOME), found offline through the cache's refs as `from_pretrained` would;
  fetched only when it is not there and the Hub may be reached (HF_HUB_OFFLINE unset). The
  snapshot's commit is recorded, so a branch that moves later is still known exactly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from plc.errors import PlcError

PREFIX = "hf:"
# What a model folder needs from the Hub: config, weights, tokenizer (not the other frameworks'
# weights a repository may also hold); pytorch_model.bin only where no safetensors exist.
TOKENIZER_FILES = ["*.json", "*.txt", "*.model", "*.tiktoken"]
HUB_FILES = [*TOKENIZER_FILES, "*.safetensors"]
# A revision's pretraining step: Pythia's `step1000`, OLMo's `step1000-tokens4B`.
STEP = re.compile(r"(?:^|[^a-z])step(\d+)(?![0-9])", re.IGNORECASE)
TOKENS_IN_NAME = re.compile(r"tokens(\d+(?:\.\d+)?)([KMBT])", re.IGNORECASE)
_SCALE = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


# Pretraining tokens per step of known suites, by the Hub id's prefix: Pythia's 1,024 sequences
# of 2,048 tokens (its model cards; OLMo's revisions name their tokens instead).
SUITE_TOKENS_PER_STEP = {"EleutherAI/pythia-": 2_097_152}


def tokens_per_step_of(name: str) -> int | None:
    """The known pretraining tokens per step of a suite's model, if any."""
    for prefix, tokens in SUITE_TOKENS_PER_STEP.items():
        if name.startswith(prefix):
            return tokens
    return None


@dataclass(frozen=True)
class Source:
    """`hf:NAME[@REVISION]` as given."""

    name: str  # a Hub id or a local path
    revision: str | None = None

    @property
    def spec(self) -> str:
        return PREFIX + self.name + (f"@{self.revision}" if self.revision else "")

    @property
    def is_local(self) -> bool:
        return (
            self.name.startswith(("/", "./", "../", "~")) or Path(self.name).expanduser().is_dir()
        )

    @property
    def model_name(self) -> str:
        """The model's short name: the last part of the id or path (`pythia-70m`)."""
        return Path(self.name.rstrip("/")).name or self.name

    @property
    def step(self) -> int | None:
        """The pretraining step the revision names (`step1000`, `step1000-tokens4B`), if any."""
        m = STEP.search(self.revision or "")
        return int(m.group(1)) if m else None

    @property
    def tokens_in_name(self) -> int | None:
        """The pretraining tokens the revision names (OLMo's `…-tokens4B`), if any."""
        m = TOKENS_IN_NAME.search(self.revision or "")
        return round(float(m.group(1)) * _SCALE[m.group(2).upper()]) if m else None


def parse_source(spec: str) -> Source:
    """`hf:ID_OR_PATH[@REVISION]` (the `hf:` prefix optional) → Source."""
    text = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    name, revision = text, None
    # The last @ starts a revision unless what follows it is a path (a folder may hold an @).
    head, at, tail = text.rpartition("@")
    if at and head and tail and "/" not in tail:
        name, revision = head, tail
    if not name.strip():
        raise PlcError(
            f"{spec!r} names no model: write hf:ID (a Hub id) or hf:PATH, @REVISION optional"
        )
    return Source(name, revision)


@dataclass(frozen=True)
class Resolved:
    """A model folder on this machine and where it came from."""

    folder: Path
    source: Source
    commit: str | None = None  # the Hub snapshot's commit (None for a local folder)


def offline() -> bool:
    """Whether the Hub may not be reached (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set)."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or any(
        os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def resolve(source: Source | str, weights: bool = True) -> Resolved:
    """The local folder of a model (and revision): a folder, or the Hub cache's snapshot (with
    `weights` False, of its tokenizer files only)."""
    source = parse_source(source) if isinstance(source, str) else source
    if source.is_local:
        folder = local_folder(source)
        if weights and not (folder / "config.json").is_file():
            raise PlcError(
                f"{source.spec}: {folder} has no config.json (not a Hugging Face model folder)"
            )
        return Resolved(folder, source)
    return _from_hub(source, HUB_FILES if weights else TOKENIZER_FILES)


def local_folder(source: Source) -> Path:
    """The folder of a local source: its path, or with a revision its subfolder of that name."""
    base = Path(source.name).expanduser()
    folder = base / source.revision if source.revision else base
    if not base.is_dir():
        raise PlcError(f"{source.spec}: the folder {base} does not exist")
    if not folder.is_dir():
        raise PlcError(
            f"{source.spec}: {base} has no revision folder {source.revision!r} (a local "
            f"model's revisions are its subfolders: {base}/<revision>)"
        )
    return folder


def _from_hub(source: Source, files: list[str]) -> Resolved:
    from huggingface_hub import constants, snapshot_download

    revision = source.revision or "main"
    try:
        folder = snapshot_download(
            source.name, revision=revision, local_files_only=True, allow_patterns=files
        )
    except Exception as e:  # not in the cache (or an id the cache cannot hold)
        if offline():
            raise PlcError(
                f"{source.spec} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}: "
                f"no revision {revision!r} of {source.name}) and HF_HUB_OFFLINE is set: download "
                "it where the Hub can be reached, or name a local folder"
            ) from e
        folder = _download(source, revision, files)
    path = Path(folder)
    commit = path.name if path.parent.name == "snapshots" else None
    if files is HUB_FILES and not (path / "config.json").is_file():
        raise PlcError(f"{source.spec}: the cached snapshot {path} has no config.json")
    return Resolved(path, source, commit)


def _download(source: Source, revision: str, files: list[str]) -> str:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(source.name, revision=revision, allow_patterns=files)
        if files is HUB_FILES and not any(Path(folder).glob("*.safetensors")):
            folder = snapshot_download(
                source.name, revision=revision, allow_patterns=[*files, "*.bin"]
            )
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PlcError(
            f"{source.spec}: revision {revision!r} of {source.name} is neither in the local "
            f"Hugging Face cache nor reachable on the Hub ({first})"
        ) from e
    return folder
