"""MLflow artifacts as a directory tree: the real mlflow client logs a folder, lists it by
directory and downloads it; a pickle is refused naming the file; every path stays under the
run's folder (no '..', no absolute path, no symlink out); another team's run is not found and
a call without a token is 401."""

import os

import pytest
from django.test import Client

from experiments import tracked
from experiments.models import TrainingRun
from finetune_hub.auth import token_create
from finetune_hub.storage import artifact_path

ART = "/mlflow/api/2.0/mlflow-artifacts/artifacts"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("mlflow_env")
def test_the_mlflow_client_logs_lists_and_downloads_a_folder(tmp_path):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from requests import HTTPError

    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "MLmodel").write_text("flavors: {}\n")
    (src / "requirements.txt").write_text("torch\n")
    (src / "sub" / "config.json").write_text("{}")
    (src / "sub" / "deeper" / "notes.md").write_text("# hi")
    (tmp_path / "weights.pt").write_bytes(b"pickle")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(src), artifact_path="model")
        with pytest.raises((HTTPError, MlflowException), match="weights.pt"):
            mlflow.log_artifact(str(tmp_path / "weights.pt"), artifact_path="model")
    client = MlflowClient()
    run_id = run.info.run_id
    assert [a.path for a in client.list_artifacts(run_id)] == ["model"]
    listed = client.list_artifacts(run_id, "model")
    assert [(a.path, a.is_dir) for a in listed] == [
        ("model/MLmodel", False),
        ("model/requirements.txt", False),
        ("model/sub", True),
    ]
    assert [a.file_size for a in listed if not a.is_dir] == [12, 6]
    assert [a.path for a in client.list_artifacts(run_id, "model/sub/deeper")] == [
        "model/sub/deeper/notes.md"
    ]
    out = client.download_artifacts(run_id, "model", str(tmp_path / "down"))
    assert open(os.path.join(out, "sub", "deeper", "notes.md")).read() == "# hi"
    assert open(os.path.join(out, "MLmodel")).read() == "flavors: {}\n"
    stored = TrainingRun.objects.get(pk=int(run_id))
    assert sorted(stored.output_files) == [
        "model/MLmodel",
        "model/requirements.txt",
        "model/sub/config.json",
        "model/sub/deeper/notes.md",
    ]


@pytest.fixture
def run(team, owner):
    experiment = tracked.project_for(team=team, name="arts", by=owner)
    return tracked.run_start(experiment=experiment, by=owner, name="r")


@pytest.fixture
def bearer(owner):
    return {"HTTP_AUTHORIZATION": f"Bearer {token_create(user=owner, name='t')[1]}"}


def _put(client, run, rest, body=b"x", **headers):
    where = f"{ART}/{run.experiment_id}/{run.pk}/artifacts/{rest}"
    return client.put(where, body, content_type="application/octet-stream", **headers)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "rest",
    [
        "../escape.txt",
        "a/../../escape.txt",
        "%2e%2e/escape.txt",
        "/etc/passwd",
        "a//b.txt",
        ".hidden",
    ],
)
def test_a_path_that_leaves_the_run_folder_is_refused(run, bearer, rest):
    response = _put(Client(), run, rest, **bearer)
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    run.refresh_from_db()
    assert run.output_files == {}


@pytest.mark.django_db
def test_a_pickle_is_refused_with_its_name(run, bearer):
    response = _put(Client(), run, "ckpt/optimizer.pth", **bearer)
    assert response.status_code == 400
    assert "ckpt/optimizer.pth is refused: pickle files" in response.json()["message"]


@pytest.mark.django_db
def test_a_file_and_a_folder_of_one_name_collide(run, bearer):
    client = Client()
    assert _put(client, run, "a/b.txt", **bearer).status_code == 200
    assert _put(client, run, "a", **bearer).status_code == 400  # a is a folder
    assert _put(client, run, "a/b.txt/c.txt", **bearer).status_code == 400  # a/b.txt is a file
    assert _put(client, run, "a/b.txt", **bearer).status_code == 400  # written once
    listed = client.get(ART, {"path": f"{run.experiment_id}/{run.pk}/artifacts/a"}, **bearer)
    assert listed.json() == {"files": [{"path": "b.txt", "is_dir": False, "file_size": 1}]}
    bad = client.get(ART, {"path": f"{run.experiment_id}/{run.pk}/artifacts/../x"}, **bearer)
    assert bad.status_code == 400


@pytest.mark.django_db
def test_a_symlink_out_of_the_root_is_never_served(run, bearer, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    folder = artifact_path(f"{run.folder}/output")
    folder.mkdir(parents=True)
    os.symlink(tmp_path / "secret.txt", folder / "link.txt")
    TrainingRun.objects.filter(pk=run.pk).update(output_files={"link.txt": "0" * 64})
    got = Client().get(f"{ART}/{run.experiment_id}/{run.pk}/artifacts/link.txt", **bearer)
    assert got.status_code == 404
    # A folder linked to another place under the root is not written through either.
    elsewhere = artifact_path("elsewhere")
    elsewhere.mkdir()
    os.symlink(elsewhere, folder / "linked")
    assert _put(Client(), run, "linked/a.txt", **bearer).status_code == 404
    assert not (elsewhere / "a.txt").exists()


@pytest.mark.django_db
def test_the_ui_upload_and_download(run, bearer):
    client = Client()
    up = "/mlflow/ajax-api/2.0/mlflow/upload-artifact"
    where = f"?run_uuid={run.pk}&path=notes/a.txt"
    assert client.post(up + where, b"hello", content_type="text/plain", **bearer).status_code == 200
    got = client.get("/mlflow/get-artifact", {"run_uuid": run.pk, "path": "notes/a.txt"}, **bearer)
    assert b"".join(got.streaming_content) == b"hello"
    bad = client.post(
        up + f"?run_uuid={run.pk}&path=../a.txt", b"x", content_type="text/plain", **bearer
    )
    assert bad.status_code == 400 and "Invalid path" in bad.json()["message"]
    empty = client.post(
        up + f"?run_uuid={run.pk}&path=b.txt", b"", content_type="text/plain", **bearer
    )
    assert empty.json()["message"] == "Request must specify data."


@pytest.mark.django_db
def test_another_teams_run_is_not_found_and_no_token_is_401(run, outsider):
    other = {"HTTP_AUTHORIZATION": f"Bearer {token_create(user=outsider, name='o')[1]}"}
    client = Client()
    assert _put(client, run, "a.txt", **other).status_code == 404
    listed = client.get(ART, {"path": f"{run.experiment_id}/{run.pk}/artifacts"}, **other)
    assert listed.status_code == 404
    assert _put(client, run, "a.txt").status_code == 401


def test_a_model_logged_under_an_artifact_path_registers_from_its_folder(owner, team, tiny_model):
    """mlflow.log_artifacts(adapter_dir, "adapter") keeps the tree: the registry, the
    evaluation and export take the model from the folder that holds its config."""
    import json

    from evaluation.subjects import Subject
    from experiments import run_files
    from registry import services as registry
    from tests.support.tracked import weights

    project = tracked.project_for(team=team, name="mlflow-tree", by=owner)
    run = tracked.run_start(experiment=project, by=owner, base_model=tiny_model)
    config = {"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}
    files = {
        "adapter/adapter_config.json": json.dumps(config).encode(),
        "adapter/adapter_model.safetensors": weights(),
        "notes.txt": b"trained elsewhere",
    }
    for name, data in files.items():
        run_files.artifact_put(run=run, name=name, chunks=iter([data]), by=owner, tree=True)
    run = tracked.run_end(run=run, status=TrainingRun.Status.SUCCEEDED, by=owner)
    assert run.model_dir == "adapter"
    model = registry.model_create(team=team, name="tree-model", by=owner)
    version = registry.version_register(model=model, run=run, by=owner)
    assert version.kind == "adapter"
    assert version.artifact_path == f"{run.output_path}/adapter"
    assert set(version.artifacts) == {"adapter_config.json", "adapter_model.safetensors"}
    assert Subject.from_form(f"run:{run.pk}").output_path() == version.artifact_path
    assert Subject.of_version(version).output_path() == version.artifact_path
