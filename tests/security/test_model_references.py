"""Cross-team weight theft and server file probing through model references.

A base model is named in requests (experiments, the estimate, evaluation subjects, the tokenizer
of an upload). The attack class: naming a path, absolute or relative, with '..', '~' or a
symlink, that reaches another team's trained weights under the artifact root or any folder
outside the operator's model roots; and learning what exists on the server from the errors.
Also: a hub id must never hold a request for longer than the hub timeout."""

import os
import shutil
import socket
import threading
import time

import pytest

from finetune_hub.errors import ServiceError
from inference import base_models
from tests.support.training_helpers import FAST, make_version

SERVER_WORDS = ("/tmp", "/work", "/var", "/root", "artifact", "model-root", "exists", "No such")


@pytest.fixture
def version(team, owner):
    return make_version(team, owner)


@pytest.fixture
def stolen(settings, tiny_model):
    """Another team's fully fine-tuned model, as a run leaves it under the artifact root."""
    folder = settings.ARTIFACT_ROOT / "runs" / "7" / "output"
    shutil.copytree(tiny_model, folder)
    return folder


def references(stolen, model_root, tmp_path):
    artifacts = stolen.parents[2]
    (model_root / "link").symlink_to(stolen, target_is_directory=True)
    outside = tmp_path / "outside"
    shutil.copytree(stolen, outside)
    relative_up = os.path.relpath(stolen, model_root)
    return [
        str(stolen),  # absolute, inside the artifact root
        relative_up,  # relative to a model root, climbing out with '..'
        f"var/{'../' * 12}{str(stolen).lstrip('/')}",
        f"{model_root}/../{model_root.name}/{relative_up}",
        "link",  # a symlink in a model root pointing into the artifact root
        str(model_root / "link"),
        str(outside),  # a readable model folder outside every root
        str(artifacts),
        "~/model",
        "./model",
        "runs/7/output",  # relative to the artifact root
        str(tmp_path / "missing"),  # a path that does not exist at all
        "a\\..\\b",
        "org/name/../../x",
    ]


def _refusals(api, version, stolen, model_root, tmp_path, tiny_model):
    for ref in references(stolen, model_root, tmp_path):
        experiment = {
            "team": version.dataset.team_id,
            "name": "x",
            "dataset_version": version.pk,
            "base_model": ref,
            "technique": "full",
            "hyperparameters": dict(FAST),
        }
        yield ref, api.post("/api/experiments", experiment)
        yield (
            ref,
            api.post(
                "/api/experiments/estimate",
                {"base_model": ref, "technique": "full", "hyperparameters": dict(FAST)},
            ),
        )
        yield (
            ref,
            api.upload(
                f"/api/datasets/{version.dataset_id}/versions",
                '{"instruction": "a", "output": "b"}\n',
                base_model=ref,
            ),
        )
        yield (
            ref,
            api.post(
                "/api/evaluations",
                {
                    "subject": {"base_model": ref},
                    "dataset_version": version.pk,
                    "metrics": ["loss"],
                },
            ),
        )


def _control(ref: str) -> str:
    """A reference of the same shape that names nothing at all."""
    return "no-such-model-xyz" if base_models.is_hub_id(ref) else "/no/such/folder"


def test_paths_outside_the_model_roots_are_refused_alike_and_name_no_server_path(
    api, version, stolen, model_root, tmp_path, tiny_model, settings
):
    settings.HF_HUB_OFFLINE = True
    settings.HF_HUB_CACHE = tmp_path / "hub"
    answers = {}
    refusals = list(_refusals(api, version, stolen, model_root, tmp_path, tiny_model))
    controls = [(_control(ref), ref) for ref, _ in refusals]
    for ref, response in refusals:
        assert response.status_code == 400, (ref, response.content)
        body = response.json()
        assert body["errors"][0]["field"] in ("base_model", "subject.base_model"), body
        detail = body["detail"].replace(repr(ref[:200]), "<ref>")
        assert not any(word in detail for word in SERVER_WORDS), (ref, detail)
        answers.setdefault(_control(ref), set()).add(detail)
    # Missing, outside, inside the artifact root, a symlink: the answer a reference of the
    # same shape naming nothing gets, so nothing about the server leaks.
    for control, _ in controls:
        assert len(answers[control]) == 1, answers


def test_no_reference_resolves_to_a_folder_outside_the_model_roots(stolen, model_root, tmp_path):
    for ref in references(stolen, model_root, tmp_path):
        try:
            parsed = base_models.parse(ref)
        except ServiceError:
            continue
        # Only a bare name survives, as a hub id: never a local folder.
        assert parsed.kind == "hub" and parsed.path is None and "/" not in ref, ref


def test_model_roots_never_include_the_artifact_root(settings, tmp_path):
    from inference.checks import model_roots_exclude_artifacts

    assert model_roots_exclude_artifacts() == []
    for overlapping in (settings.ARTIFACT_ROOT, settings.ARTIFACT_ROOT.parent):
        settings.BASE_MODEL_DIRS = [overlapping]
        assert [e.id for e in model_roots_exclude_artifacts()] == ["finetune_hub.E001"]


def test_a_folder_under_a_model_root_is_a_base_model_by_name_or_path(model_root, tiny_model):
    shutil.copytree(tiny_model, model_root / "llama-tiny")
    by_name = base_models.parse("llama-tiny")
    by_path = base_models.parse(str(model_root / "llama-tiny"))
    assert by_name.kind == by_path.kind == "local"
    assert by_name.path == by_path.path == model_root / "llama-tiny"


def test_hub_ids_are_syntax_checked_and_never_read_as_local_paths(model_root, settings):
    # "var/models" exists relative to the project folder; as a reference it is a hub id and
    # transformers must not be handed the relative path.
    settings.HF_HUB_OFFLINE = True
    ref = base_models.parse("var/models")
    assert ref.kind == "hub" and ref.path is None
    for bad in ("org/name/extra", "org--name", "-lead", "name.", "a b"):
        with pytest.raises(ServiceError):
            base_models.parse(bad)


def _cached_hub_model(cache, repo, tiny_model):
    revision = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    shutil.copytree(tiny_model, folder / "snapshots" / revision)
    return folder / "snapshots" / revision


def test_a_cached_hub_model_loads_offline(settings, tmp_path, tiny_model, api, version):
    settings.HF_HUB_OFFLINE = True
    settings.HF_HUB_CACHE = tmp_path / "hub"
    snapshot = _cached_hub_model(settings.HF_HUB_CACHE, "acme/tiny", tiny_model)
    assert base_models.resolve("acme/tiny") == str(snapshot)
    r = api.post(
        "/api/experiments/estimate",
        {"base_model": "acme/tiny", "technique": "lora", "hyperparameters": dict(FAST)},
    )
    assert r.status_code == 200, r.content


def test_an_uncached_hub_id_is_refused_at_once_when_the_hub_is_off(settings, tmp_path, api):
    settings.HF_HUB_OFFLINE = True
    settings.HF_HUB_CACHE = tmp_path / "hub"
    started = time.monotonic()
    r = api.post(
        "/api/experiments/estimate",
        {"base_model": "acme/not-cached", "technique": "lora", "hyperparameters": dict(FAST)},
    )
    assert r.status_code == 400 and "switched off" in r.json()["detail"]
    assert time.monotonic() - started < 2


@pytest.fixture
def silent_hub(monkeypatch):
    """A hub endpoint that accepts connections and never answers."""
    from huggingface_hub import constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    yield accepted
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_an_unreachable_hub_holds_a_request_no_longer_than_the_timeout(
    settings, tmp_path, api, version, silent_hub
):
    settings.HF_HUB_OFFLINE = False
    settings.HF_HUB_CACHE = tmp_path / "hub"
    settings.HUB_TIMEOUT = 1.0
    started = time.monotonic()
    r = api.post(
        "/api/experiments/estimate",
        {"base_model": "acme/slow", "technique": "lora", "hyperparameters": dict(FAST)},
    )
    elapsed = time.monotonic() - started
    assert r.status_code == 400 and "within 1 s" in r.json()["detail"], r.content
    assert silent_hub, "the hub was asked (offline-first found nothing cached)"
    assert elapsed < 2.5, elapsed
