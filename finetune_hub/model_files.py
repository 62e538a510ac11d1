"""What a model folder may hold and what its files say: the one home of these rules for the
server (storage, tracked runs, the registry, serving, training) and for the client
(finetune_hub.client uploads only what the server accepts). Standard library only: the client
runs without Django."""

import json
from pathlib import Path

# Weights travel as safetensors only; with them go small text files (configs, tokenizers, a
# chat template, a model card, a sentencepiece or tiktoken vocabulary).
WEIGHT_SUFFIX = ".safetensors"
TEXT_SUFFIXES = (".json", ".txt", ".jinja", ".md", ".model", ".tiktoken")
ARTIFACT_SUFFIXES = (WEIGHT_SUFFIX, *TEXT_SUFFIXES)
# Files that execute code when loaded (torch.load / pickle): never accepted, never loaded.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})
# The hub download patterns of a base model: the same set, as globs.
HUB_PATTERNS = [f"*{suffix}" for suffix in ARTIFACT_SUFFIXES]

ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


def is_artifact_name(name: str) -> bool:
    """A file name a run's output may hold (the suffix rule; the name's characters are
    checked where the name arrives)."""
    return name.endswith(ARTIFACT_SUFFIXES)


def is_pickle(name: str) -> bool:
    return Path(name).suffix.lower() in PICKLE_SUFFIXES


def is_adapter(folder: Path) -> bool:
    """A PEFT adapter folder (to be put on its base model), not a full model."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def adapter_type(folder: Path) -> str:
    """The PEFT type an adapter folder declares (LORA, IA3, LOHA, PREFIX_TUNING, ...)."""
    return json.loads((Path(folder) / ADAPTER_CONFIG).read_text())["peft_type"]


def tokenizer_source(folder: Path | None, base):
    """Where a trained model's tokenizer comes from: its own folder when it saved one, else
    its base model."""
    if folder is not None and (Path(folder) / TOKENIZER_CONFIG).is_file():
        return folder
    return base
