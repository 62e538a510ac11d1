"""A version as an archive: its adapter folder (plain `peft.PeftModel.from_pretrained` loads
it) or the merged model (merge_and_unload, plain `transformers` loads it), safetensors only,
with a manifest of SHA-256 hashes. Files are checked against the hashes recorded at
registration before anything is packed."""

import json
import zipfile
from pathlib import Path

from finetune_hub.errors import Conflict, invalid
from finetune_hub.storage import (
    artifact_path,
    assert_no_pickles,
    file_sha256,
    incoming,
    move_into_place,
)
from registry.models import ModelVersion

KINDS = ("adapter", "merged")


def safetensors_only(folder: Path) -> Path:
    """Refuses (409) a folder holding a pickle file: it is never loaded."""
    try:
        assert_no_pickles(folder)
    except ValueError as exc:
        raise Conflict(f"Refusing to load: {exc}") from None
    return folder


def servable_only(version: ModelVersion) -> None:
    """Refuses a version without files here (registered through MLflow from a source
    elsewhere): its empty artifact_path would name the artifact root itself."""
    if not version.servable:
        raise Conflict(
            f"{version} has no files here (registered from {version.source or 'elsewhere'}): "
            "not servable"
        )


def verified_folder(version: ModelVersion) -> Path:
    servable_only(version)
    folder = safetensors_only(artifact_path(version.artifact_path))
    for name, expected in version.artifacts.items():
        if file_sha256(folder / name) != expected:
            raise Conflict(f"{name} of {version} does not match its recorded SHA-256")
    return folder


def _merged_folder(version: ModelVersion) -> Path:
    relative = f"registry/{version.registered_model_id}/v{version.number}/merged"
    target = artifact_path(relative)
    if (target / "model.safetensors").exists() or (
        target / "model.safetensors.index.json"
    ).exists():
        return target
    from transformers import AutoTokenizer

    from inference import generation

    model, _ = generation.load(version.base_model, version.artifact_path)
    if version.kind == "adapter":
        model = model.merge_and_unload()
    with incoming() as partial:
        model.save_pretrained(partial, safe_serialization=True)
        AutoTokenizer.from_pretrained(verified_folder(version)).save_pretrained(partial)
        safetensors_only(partial)
        return move_into_place(partial, relative)


def archive(version: ModelVersion, kind: str) -> Path:
    servable_only(version)
    if kind not in KINDS:
        raise invalid("kind is adapter or merged", field="kind", status=422)
    if kind == "adapter" and version.kind != "adapter":
        raise Conflict(f"{version} is a full model; export it as merged")
    folder = verified_folder(version) if kind == "adapter" else _merged_folder(version)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    manifest = {
        "model": version.registered_model.name,
        "version": version.number,
        "kind": kind,
        "base_model": version.base_model,
        "base_model_info": version.base_model_info,
        "files": {p.name: file_sha256(p) for p in files},
    }
    with incoming() as partial:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as zf:
            root = f"{version.registered_model.name}-v{version.number}-{kind}"
            for path in files:
                zf.write(path, f"{root}/{path.name}")
            zf.writestr(f"{root}/manifest.json", json.dumps(manifest, indent=2))
        return move_into_place(
            partial, f"registry/{version.registered_model_id}/v{version.number}/{kind}.zip"
        )
