"""What /mlflow does not serve is answered as MLflow answers an unknown call,
ENDPOINT_NOT_FOUND (404), with a sentence naming the family that is out of scope (traces,
the prompt registry's own calls, scorers, GraphQL, GenAI evaluation datasets), for a GET and a
POST, under /mlflow and /mlflow/teams/<id>."""

import pytest
from django.test import Client

from finetune_hub.auth import token_create

FAMILIES = [
    ("api/2.0/mlflow/traces", "Traces and assessments"),
    ("api/3.0/mlflow/traces/tr-1/assessments", "Traces and assessments"),
    ("api/3.0/mlflow/spans/search", "Traces and assessments"),
    ("ajax-api/2.0/mlflow/traces/link-to-run", "Traces and assessments"),
    ("api/2.0/mlflow/prompts/create", "prompt registry"),
    ("ajax-api/2.0/mlflow/runs/create-promptlab-run", "prompt registry"),
    ("api/3.0/mlflow/scorers/register", "Scorers"),
    ("graphql", "GraphQL"),
    ("ajax-api/graphql", "GraphQL"),
    ("api/3.0/mlflow/datasets/create", "GenAI evaluation datasets"),
    ("api/2.0/mlflow/no-such-call", "This MLflow endpoint is not supported"),
]


@pytest.mark.parametrize("path,family", FAMILIES)
@pytest.mark.parametrize("method", ["get", "post"])
def test_an_out_of_scope_call_is_endpoint_not_found_naming_its_family(
    owner, team, path, family, method
):
    _, raw = token_create(user=owner, name="scope")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    for prefix in ("/mlflow/", f"/mlflow/teams/{team.pk}/"):
        response = getattr(client, method)(prefix + path, content_type="application/json")
        assert response.status_code == 404, (prefix + path, response.content)
        body = response.json()
        assert body["error_code"] == "ENDPOINT_NOT_FOUND"
        assert family in body["message"]
        assert "/work" not in body["message"] and "Traceback" not in body["message"]
