"""MLflow 3's logged models and a run's inputs and outputs over /mlflow: the real mlflow
client creates, finalizes, searches a model, logs its files and a metric against it, logs a
run's datasets; the run page lists them and the model has its own page. Another team's
model is not found (API and page), a call without a token is 401, bad values are 400."""

import pytest
from django.test import Client

from experiments import logged_models, tracked
from experiments.models import LoggedModel
from finetune_hub.auth import token_create

API = "/mlflow/api/2.0/mlflow"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("mlflow_env")
def test_the_mlflow_client_logs_a_model_its_metrics_and_the_runs_datasets(owner, tmp_path):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelOutput
    from mlflow.entities.logged_model_status import LoggedModelStatus

    client = MlflowClient()
    experiment_id = client.create_experiment("models")
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    model = client.create_logged_model(
        experiment_id, name="clf", source_run_id=run_id, params={"lr": "0.1"}, tags={"t": "1"}
    )
    assert model.model_id.startswith("m-") and len(model.model_id) == 34
    folder = tmp_path / "m"
    (folder / "sub").mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    (folder / "sub" / "config.json").write_text("{}")
    client.log_model_artifacts(model.model_id, str(folder))
    assert [(a.path, a.is_dir) for a in client.list_logged_model_artifacts(model.model_id)] == [
        ("MLmodel", False),
        ("sub", True),
    ]
    done = client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    assert done.status == LoggedModelStatus.READY
    client.log_metric(
        run_id,
        "acc",
        0.9,
        step=2,
        dataset_name="eval",
        dataset_digest="d1",
        model_id=model.model_id,
    )
    client.log_inputs(
        run_id,
        [
            DatasetInput(
                Dataset(name="eval", digest="d1", source_type="local", source='{"uri": "x"}'),
                tags=[InputTag("mlflow.data.context", "eval")],
            )
        ],
    )
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, 2)])
    got = client.get_logged_model(model.model_id)
    assert got.params == {"lr": "0.1"} and got.tags == {"t": "1"}
    assert [(m.key, m.value, m.step, m.dataset_name, m.run_id) for m in got.metrics] == [
        ("acc", 0.9, 2, "eval", run_id)
    ]
    found = client.search_logged_models([experiment_id], filter_string="name = 'clf'")
    assert [m.model_id for m in found] == [model.model_id]
    assert client.search_logged_models([experiment_id], filter_string="name = 'x'") == []
    full = client.get_run(run_id)
    assert [d.dataset.name for d in full.inputs.dataset_inputs] == ["eval"]
    assert full.outputs.model_outputs == [LoggedModelOutput(model.model_id, 2)]
    assert mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list")

    page = Client()
    page.force_login(owner)
    run_page = page.get(f"/runs/{run_id}/").content.decode()
    assert model.model_id in run_page and "clf" in run_page and "eval" in run_page
    model_page = page.get(f"/logged-models/{model.model_id}/").content.decode()
    assert "acc" in model_page and "sub/config.json" in model_page and "lr" in model_page


@pytest.fixture
def model(team, owner):
    experiment = tracked.project_for(team=team, name="lm", by=owner)
    return logged_models.model_create(experiment=experiment, by=owner, name="m1")


def _bearer(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token_create(user=user, name='t')[1]}"}


@pytest.mark.django_db
def test_another_teams_model_is_not_found_and_no_token_is_401(model, outsider):
    client, other = Client(), _bearer(outsider)
    got = client.get(f"{API}/logged-models/{model.pk}", **other)
    assert got.status_code == 404 and got.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    tags = client.patch(
        f"{API}/logged-models/{model.pk}/tags",
        {"tags": [{"key": "a", "value": "b"}]},
        content_type="application/json",
        **other,
    )
    assert tags.status_code == 404
    found = client.post(
        f"{API}/logged-models/search",
        {"experiment_ids": [str(model.experiment_id)]},
        content_type="application/json",
        **other,
    )
    assert found.json() == {"models": []}
    assert client.get(f"{API}/logged-models/{model.pk}").status_code == 401
    page = Client()
    page.force_login(outsider)
    assert page.get(f"/logged-models/{model.pk}/").status_code == 404


@pytest.mark.django_db
def test_bad_values_are_400_naming_the_parameter(model, owner):
    client, bearer = Client(), _bearer(owner)
    where = f"{API}/logged-models/{model.pk}"
    bad = client.patch(where, {"status": "DONE"}, content_type="application/json", **bearer)
    assert bad.status_code == 400 and "'status'" in bad.json()["message"]
    gone = client.delete(f"{where}/tags/nope", **bearer)
    assert gone.status_code == 404 and "No tag with key 'nope'" in gone.json()["message"]
    search = client.post(
        f"{API}/logged-models/search",
        {"experiment_ids": [str(model.experiment_id)], "filter": "name ~ 1"},
        content_type="application/json",
        **bearer,
    )
    assert search.status_code == 400 and "name ~ 1" in search.json()["message"]
    inputs = client.post(
        f"{API}/runs/log-inputs", {"datasets": []}, content_type="application/json", **bearer
    )
    assert inputs.json()["message"].startswith("Missing value for required parameter 'run_id'")
    datasets = client.post(
        "/mlflow/ajax-api/2.0/mlflow/experiments/search-datasets",
        {"experiment_ids": [str(i) for i in range(21)]},
        content_type="application/json",
        **bearer,
    )
    assert "cannot specify more than 20" in datasets.json()["message"]


@pytest.mark.django_db
def test_a_deleted_model_is_gone_but_readable_with_allow_deleted(model, owner):
    client, bearer = Client(), _bearer(owner)
    where = f"{API}/logged-models/{model.pk}"
    assert client.delete(where, **bearer).status_code == 200
    assert client.get(where, **bearer).status_code == 404
    kept = client.get(where, {"allow_deleted": "true"}, **bearer)
    assert kept.json()["model"]["info"]["model_id"] == model.pk
    assert LoggedModel.objects.get(pk=model.pk).deleted


@pytest.mark.django_db
def test_a_pickle_in_a_models_files_is_refused(model, owner):
    where = (
        f"/mlflow/api/2.0/mlflow-artifacts/artifacts/{model.experiment_id}/models/{model.pk}"
        "/artifacts/python_model.pkl"
    )
    got = Client().put(where, b"x", content_type="application/octet-stream", **_bearer(owner))
    assert got.status_code == 400 and "python_model.pkl is refused" in got.json()["message"]
