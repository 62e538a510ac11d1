"""Runs trained anywhere, reported over HTTP to a live server started by the test: the Python
client (finetune_hub.client), the TrainerCallback, and the MLflow-compatible API driven by the
real mlflow client and by a Hugging Face Trainer with report_to="mlflow"."""

import pytest
import torch
from safetensors.torch import save_file

from experiments.models import Experiment, MetricPoint, TrainingRun
from finetune_hub.auth import token_create
from finetune_hub.models import Membership, Role, Team
from tests.support.clients import ApiClient, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def _tiny_trainer(tiny_model, tmp_path, *, lora: bool, report_to, callbacks=()):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        )
    ids = tokenizer("the quick brown fox jumps over the lazy dog")["input_ids"]
    rows = [{"input_ids": ids, "labels": ids, "attention_mask": [1] * len(ids)}] * 8
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        logging_steps=1,
        per_device_train_batch_size=2,
        save_strategy="no",
        report_to=report_to,
        use_cpu=True,
        run_name="tiny",
        disable_tqdm=True,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )


# ---------------------------------------------------------------------- the Python client


def test_the_client_reports_a_run_in_batches_and_ends_it(hub, team, tmp_path):
    from finetune_hub.client import Client

    url, token = hub
    client = Client(url, token)
    with client.start_run(team=team.pk, project="scripts", name="s1", params={"lr": 3e-4}) as run:
        for step in range(2500):
            run.log({"loss": 5.0 - step / 1000, "bad": float("nan")}, step=step)
        run.set_tags({"host": "node-3"})
        save_file({"w": torch.zeros(3)}, tmp_path / "model.safetensors")
        (tmp_path / "config.json").write_text("{}")
        (tmp_path / "optimizer.pt").write_bytes(b"pickle")
        assert run.upload_folder(tmp_path) == ["config.json", "model.safetensors"]
    stored = TrainingRun.objects.get(pk=run.id)
    assert stored.status == "succeeded" and stored.source == "tracked" and stored.step == 2499
    assert stored.params == {"lr": 3e-4} and stored.tags == {"host": "node-3"}
    assert set(stored.output_files) == {"config.json", "model.safetensors"}
    assert MetricPoint.objects.filter(run=stored, key="loss").count() == 2500
    assert not MetricPoint.objects.filter(run=stored, key="bad").exists()
    curve = client.metrics(run.id, keys=["loss"])["loss"]
    assert curve["steps"][0] == 0 and curve["steps"][-1] == 2499 and len(curve["steps"]) <= 1000


def test_the_client_marks_a_crashed_run_failed_and_raises_the_servers_errors(hub, team):
    from finetune_hub.client import Client, FinetuneHubError

    client = Client(*hub)
    with pytest.raises(ZeroDivisionError):
        with client.start_run(team=team.pk, project="scripts") as run:
            run.log({"loss": 1.0}, step=1)
            1 / 0  # noqa: B018
    stored = TrainingRun.objects.get(pk=run.id)
    assert stored.status == "failed" and "ZeroDivisionError" in stored.error
    assert MetricPoint.objects.filter(run=stored).count() == 1
    with pytest.raises(FinetuneHubError) as refused:
        client.start_run(team=team.pk, project="x" * 101)
    assert refused.value.status == 422
    other = Team.objects.create(name="Elsewhere")
    with pytest.raises(FinetuneHubError) as hidden:
        client.start_run(team=other.pk, project="p")
    assert hidden.value.status == 404


def test_the_trainer_callback_reports_and_uploads_a_registrable_adapter(
    hub, team, owner, tiny_model, tmp_path
):
    from finetune_hub.callback import FinetuneHubCallback

    url, token = hub
    callback = FinetuneHubCallback(
        team=team.pk, project="hf-callback", base_model=tiny_model, url=url, token=token
    )
    _tiny_trainer(tiny_model, tmp_path, lora=True, report_to=[], callbacks=[callback]).train()
    run = TrainingRun.objects.get(pk=callback.run.id)
    assert run.status == "succeeded" and run.name == "tiny" and run.step == 3
    assert run.params["max_steps"] == 3 and run.params["technique"] == "lora"
    assert list(MetricPoint.objects.filter(run=run, key="loss").values_list("step", flat=True)) == [
        1,
        2,
        3,
    ]
    assert MetricPoint.objects.filter(run=run, key="system/peak_rss_gib").exists()
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= set(
        run.output_files
    )
    api = ApiClient(owner)
    api.post("/api/registry/models", {"team": team.pk, "name": "from-trainer"})
    registered = api.post("/api/registry/models/from-trainer/versions", {"run": run.pk})
    assert registered.status_code == 201, registered.content


# ---------------------------------------------------------------------- MLflow


def test_the_mlflow_client_reports_into_the_hub(mlflow_env, team, tmp_path):
    mlflow = mlflow_env
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from requests import HTTPError

    experiment = mlflow.set_experiment("mlflow-project")
    assert mlflow.set_experiment("mlflow-project").experiment_id == experiment.experiment_id
    with mlflow.start_run(run_name="m1") as active:
        run_id = active.info.run_id
        mlflow.log_params({"lr": "0.001", "optim": "adamw_torch"})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"eval_loss": 0.7, "accuracy": 0.5}, step=4)
        mlflow.set_tag("gpu", "h200")
        save_file({"lora_A": torch.ones(2, 2)}, tmp_path / "adapter_model.safetensors")
        mlflow.log_artifact(str(tmp_path / "adapter_model.safetensors"), artifact_path="adapter")
        (tmp_path / "optimizer.pt").write_bytes(b"pickle")
        with pytest.raises(HTTPError, match="400"):  # pickles are refused
            mlflow.log_artifact(str(tmp_path / "optimizer.pt"))
        with pytest.raises(MlflowException):  # a parameter is written once
            mlflow.log_param("lr", "0.1")
    client = MlflowClient()
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "m1"
    assert got.data.params["lr"] == "0.001" and got.data.params["optim"] == "adamw_torch"
    assert got.data.metrics == {"loss": 0.2, "eval_loss": 0.7, "accuracy": 0.5}
    assert got.data.tags["gpu"] == "h200"
    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4] and history[-1].value == 0.2
    # Kept under the artifact_path it was logged with (a directory tree, as MLflow keeps it).
    assert [a.path for a in client.list_artifacts(run_id)] == ["adapter"]
    assert [a.path for a in client.list_artifacts(run_id, "adapter")] == [
        "adapter/adapter_model.safetensors"
    ]
    found = client.search_runs(
        [experiment.experiment_id], filter_string="metrics.loss < 0.5 and params.lr = '0.001'"
    )
    assert [r.info.run_id for r in found] == [run_id]
    assert client.search_runs([experiment.experiment_id], "metrics.loss > 0.5") == []
    stored = TrainingRun.objects.get(pk=int(run_id))
    assert stored.source == "tracked" and stored.status == "succeeded"
    assert stored.experiment.name == "mlflow-project" and stored.experiment.team == team
    assert list(stored.output_files) == ["adapter/adapter_model.safetensors"]


def test_a_trainer_with_report_to_mlflow_reports_into_the_hub(
    mlflow_env, team, tiny_model, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hf-mlflow")
    _tiny_trainer(tiny_model, tmp_path, lora=False, report_to=["mlflow"]).train()
    run = TrainingRun.objects.get(experiment__name="hf-mlflow")
    assert run.status == "succeeded" and run.source == "tracked" and run.name == "tiny"
    assert run.params["max_steps"] == 3 and run.params["learning_rate"] == 5e-05
    assert list(MetricPoint.objects.filter(run=run, key="loss").values_list("step", flat=True)) == [
        1,
        2,
        3,
    ]
    assert MetricPoint.objects.filter(run=run, key="train_loss").exists()


# ---------------------------------------------------------------------- MLflow's edges


def _mlflow_get(client, path, token=None, **params):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.get(f"/mlflow/api/2.0/mlflow/{path}", params, **headers)


def test_the_mlflow_api_scopes_every_call_to_a_team(client, owner, outsider, team):
    token = token_create(user=owner, name="t")[1]
    stranger = token_create(user=outsider, name="t")[1]
    made = client.post(
        "/mlflow/api/2.0/mlflow/runs/create",
        {"experiment_id": "0"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert made.status_code == 200, made.content
    run_id = made.json()["run"]["info"]["run_id"]
    assert Experiment.objects.get(team=team, name="Default").tracked
    assert _mlflow_get(client, "runs/get", token, run_id=run_id).status_code == 200
    hidden = _mlflow_get(client, "runs/get", stranger, run_id=run_id)
    assert hidden.status_code == 404 and hidden.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    anonymous = _mlflow_get(client, "runs/get", None, run_id=run_id)
    assert anonymous.status_code == 401 and anonymous.json()["error_code"] == "UNAUTHENTICATED"
    wrong = _mlflow_get(client, "runs/get", "fth_not-a-token", run_id=run_id)
    assert wrong.status_code == 401
    for bad in ("abc", "-1", "0", "99999999999999999999999"):
        assert _mlflow_get(client, "runs/get", token, run_id=bad).status_code == 404
    artifact = client.get(
        f"/mlflow/api/2.0/mlflow-artifacts/artifacts?path=1/{run_id}/artifacts",
        HTTP_AUTHORIZATION=f"Bearer {stranger}",
    )
    assert artifact.status_code == 404
    unknown = _mlflow_get(client, "scorers/list", token)
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_a_user_of_several_teams_names_one_in_the_tracking_uri(client, owner, team):
    second = Team.objects.create(name="Second")
    Membership.objects.create(team=second, user=owner, role=Role.MEMBER)
    token = token_create(user=owner, name="t")[1]
    ambiguous = _mlflow_get(client, "experiments/get-by-name", token, experiment_name="x")
    assert ambiguous.status_code == 400 and "/mlflow/teams/" in ambiguous.json()["message"]
    made = client.post(
        f"/mlflow/teams/{second.pk}/api/2.0/mlflow/experiments/create",
        {"name": "in-second"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert made.status_code == 200
    assert Experiment.objects.get(pk=int(made.json()["experiment_id"])).team == second
    again = client.post(
        f"/mlflow/teams/{second.pk}/api/2.0/mlflow/experiments/create",
        {"name": "in-second"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    elsewhere = Team.objects.create(name="Not mine")
    outside = client.get(
        f"/mlflow/teams/{elsewhere.pk}/api/2.0/mlflow/experiments/get",
        {"experiment_id": "1"},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert outside.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"run_id": "%d", "metrics": [{"key": "bad\\nkey", "value": 1, "step": 0}]}',
        b'{"run_id": "%d", "metrics": [{"key": "loss", "value": "abc", "step": 0}]}',
        b'{"run_id": "%d", "metrics": [{"key": "loss", "value": 1, "step": "x"}]}',
        b'{"run_id": "%d", "metrics": [{"key": "loss", "value": 1, "step": 9223372036854775808}]}',
        b'{"run_id": "%d", "params": [{"key": "", "value": "x"}]}',
        b'{"run_id": "%d", "tags": "nope"}',
        b'{"run_id": "%d", "metrics": 5}',
    ],
)
def test_a_bad_mlflow_batch_is_a_400_and_writes_nothing(client, owner, team, body):
    token = token_create(user=owner, name="t")[1]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    made = client.post(
        "/mlflow/api/2.0/mlflow/runs/create", {}, content_type="application/json", **headers
    )
    run_id = int(made.json()["run"]["info"]["run_id"])
    data = body.replace(b"%d", str(run_id).encode())
    r = client.post(
        "/mlflow/api/2.0/mlflow/runs/log-batch", data, content_type="application/json", **headers
    )
    assert r.status_code == 400, r.content
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert not MetricPoint.objects.exists()
    assert TrainingRun.objects.get(pk=run_id).params == {}


def test_a_member_of_another_team_cannot_write_through_mlflow(client, team, owner):
    viewer = make_user("viewer")
    Membership.objects.create(team=team, user=viewer, role=Role.VIEWER)
    token = token_create(user=viewer, name="t")[1]
    r = client.post(
        "/mlflow/api/2.0/mlflow/runs/create",
        {},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"
