"""Serving the version an alias holds. Each process loads a base model once per adapter kind
(peft holds adapters of one type on a model: LoRA, IA3, LoHa...) and keeps the adapters of
the versions it served on it (peft multi-adapter); promotion and rollback change which
adapter answers on the next request, with no restart."""

import threading
import time

import torch

from datasets_app.formats import chat_prompt
from finetune_hub.model_files import WEIGHT_SUFFIX, adapter_type
from inference import base_models, generation
from registry.export import verified_folder
from registry.models import ModelVersion


def _key(version: ModelVersion) -> str:
    """The version and the hash of its weights: a cached model is never the wrong one."""
    weights = next(
        (h for n, h in sorted(version.artifacts.items()) if n.endswith(WEIGHT_SUFFIX)), ""
    )
    return f"v{version.pk}-{weights[:12]}"


class ModelServer:
    def __init__(self):
        self.lock = threading.Lock()
        # (base path, peft type) -> [peft model or base, tokenizer, adapter names]
        self.bases: dict[tuple[str, str], list] = {}
        self.full: dict[str, tuple] = {}  # version key -> (model, tokenizer)

    def _base(self, ref: str, peft_type: str):
        key = (base_models.resolve(ref), peft_type)
        if key not in self.bases:
            model, tokenizer = generation.load(ref)
            self.bases[key] = [model, tokenizer, set()]
        return self.bases[key]

    def _model_for(self, version: ModelVersion):
        """Files are checked against their recorded hashes (and for pickles) when a version is
        first loaded in this process, not on every request."""
        key = _key(version)
        if version.kind == "full":
            if key not in self.full:
                verified_folder(version)
                self.full[key] = generation.load(version.base_model, version.artifact_path)
            return self.full[key]
        name = key
        entry = next((e for e in self.bases.values() if name in e[2]), None)
        if entry is None:
            from peft import PeftModel

            folder = verified_folder(version)
            peft_type = adapter_type(folder)
            entry = self._base(version.base_model, peft_type)
            if entry[2]:
                entry[0].load_adapter(str(folder), adapter_name=name)
            else:
                entry[0] = PeftModel.from_pretrained(entry[0], str(folder), adapter_name=name)
                entry[0].eval()
            entry[2].add(name)
        entry[0].set_adapter(name)
        return entry[0], entry[1]

    def generate(
        self, version: ModelVersion, messages: list[dict], max_new_tokens: int
    ) -> tuple[str, float]:
        started = time.perf_counter()
        with self.lock, torch.no_grad():
            model, tokenizer = self._model_for(version)
            prompt = chat_prompt(messages, tokenizer)
            answers, _, _ = generation.generate(
                model, tokenizer, [prompt], max_new_tokens=max_new_tokens, batch_size=1
            )
        return answers[0], (time.perf_counter() - started) * 1000


server = ModelServer()
