"""An MLflow user's whole model flow against finetune_hub, by changing only the tracking URI:
`mlflow.transformers.log_model` of a small model (a logged model whose files land in its
tree, safetensors only), `mlflow.register_model`, `set_registered_model_alias(...,
"production", ...)` through finetune_hub's promotion policy, and
`mlflow.pyfunc.load_model("models:/<name>@production")` answering a prompt; the version and
the alias move show in the dashboard's registry with their history."""

import pytest
from django.test import Client

from registry import services as registry
from registry.models import AliasEvent, RegisteredModel
from tests.support.mlflow_live import hub, mlflow_env  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)
NAME = "tiny-chat"


def _log_model(mlflow, tiny_model):
    import mlflow.transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    with mlflow.start_run(run_name="tiny") as run:
        mlflow.log_param("lr", "3e-4")
        info = mlflow.transformers.log_model(
            {"model": model, "tokenizer": tokenizer},
            name="model",
            task="text-generation",
            pip_requirements=["transformers", "torch"],  # not inferred: no hub, no torchvision
        )
    return run, info


def test_log_register_promote_and_load_by_alias(mlflow_env, owner, tiny_model, monkeypatch):  # noqa: F811
    mlflow = mlflow_env
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run, info = _log_model(mlflow, tiny_model)
    assert info.model_uri.startswith("models:/m-")

    version = mlflow.register_model(info.model_uri, NAME)
    assert version.version == "1"
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(NAME, "production", version.version)
    assert client.get_model_version_by_alias(NAME, "production").version == "1"

    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@production")
    answer = loaded.predict(["Hello"], params=None)
    assert isinstance(answer, list) and isinstance(answer[0], str) and answer[0]

    # finetune_hub's registry holds the version with its lineage and the move with its history
    model = RegisteredModel.objects.get(team__memberships__user=owner, name=NAME)
    held = model.versions.get(number=1)
    assert held.source.endswith(info.model_id + "/artifacts") or info.model_id in held.source
    assert held.logged_model_id == info.model_id
    event = AliasEvent.objects.get(registered_model=model, alias="production")
    assert event.to_version_id == held.pk and event.actor == owner

    page = Client()
    page.force_login(owner)
    detail = page.get(f"/registry/{NAME}/").content.decode()
    assert "production" in detail and info.model_id in detail


def test_a_policy_that_refuses_the_move_is_an_mlflow_error_naming_it(
    mlflow_env,  # noqa: F811
    owner,
    tiny_model,
    monkeypatch,
):
    mlflow = mlflow_env
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, info = _log_model(mlflow, tiny_model)
    version = mlflow.register_model(info.model_uri, NAME)
    model = RegisteredModel.objects.get(team__memberships__user=owner, name=NAME)
    registry.policy_set(model=model, policy={"require_approval": True}, by=owner)

    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as refused:
        mlflow.MlflowClient().set_registered_model_alias(NAME, "production", version.version)
    assert refused.value.error_code == "INVALID_STATE"
    assert "approv" in refused.value.message.lower()
    assert not AliasEvent.objects.filter(registered_model=model, alias="production").exists()
