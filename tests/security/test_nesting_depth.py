"""Stack exhaustion through deeply nested JSON: json.loads recurses once per level, so 50,000
nested brackets in a JSONL line, a CSV cell or a request body raised RecursionError (a 500),
and a few hundred levels got past the parser to exhaust the stack later. JSON from a client is
parsed with its depth bounded: a line or cell error in a dataset, a 400 for a request body."""

import json

import pytest

from datasets_app.models import Dataset
from finetune_hub.bounds import MAX_JSON_DEPTH
from tests.support.data import as_csv, examples, jsonl

DEEP = "[" * 50_000 + "]" * 50_000


def nested(depth: int) -> str:
    """A JSON array `depth` levels deep."""
    return "[" * depth + "]" * depth


@pytest.fixture
def make_dataset(team, owner):
    def make(task):
        return Dataset.objects.create(team=team, name=task, task=task, created_by=owner)

    return make


def upload(api, dataset, content: str, filename: str):
    return api.upload(f"/api/datasets/{dataset.pk}/versions", content, filename=filename)


def test_a_deep_jsonl_line_is_a_line_error(api, make_dataset):
    dataset = make_dataset("instruction")
    lines = jsonl(examples("instruction", 5)).splitlines()
    lines[1] = '{"instruction": "x", "output": "y", "meta": ' + DEEP + "}"
    lines[3] = DEEP
    r = upload(api, dataset, "\n".join(lines), "d.jsonl")
    assert r.status_code == 422, r.content
    errors = r.json()["errors"]
    assert [e["line"] for e in errors] == [2, 4]
    assert all(f"nested deeper than {MAX_JSON_DEPTH} levels" in e["message"] for e in errors)


def test_a_deep_csv_cell_is_a_line_and_field_error(api, make_dataset):
    dataset = make_dataset("chat")
    content = as_csv(examples("chat", 5))
    lines = content.splitlines()
    lines[2] = '"' + DEEP + '"'
    r = upload(api, dataset, "\n".join(lines) + "\n", "d.csv")
    assert r.status_code == 422, r.content
    error = r.json()["errors"][0]
    assert (error["line"], error["field"]) == (3, "messages")
    assert "nested deeper" in error["message"]


def test_the_depth_bound_is_exact(api, make_dataset):
    dataset = make_dataset("instruction")
    rows = examples("instruction", 5)
    ok = dict(rows[0], meta=json.loads(nested(MAX_JSON_DEPTH - 1)))  # the object is a level
    line = json.dumps(dict(rows[1], meta="X")).replace('"X"', nested(MAX_JSON_DEPTH))
    assert upload(api, dataset, jsonl([ok, *rows[2:]]), "d.jsonl").status_code == 201
    r = upload(api, dataset, jsonl(rows[2:]) + line + "\n", "d.jsonl")
    assert r.status_code == 422 and r.json()["errors"][0]["line"] == 4


@pytest.mark.parametrize("depth", [50_000, 900, MAX_JSON_DEPTH + 1])
def test_a_deep_request_body_is_a_400(api, depth):
    # 900 levels: past the bound, under the interpreter's recursion limit.
    body = '{"technique": "lora", "hyperparameters": {"x": ' + nested(depth - 2) + "}}"
    r = api.client.post(
        "/api/experiments/estimate", body, content_type="application/json", **api._headers()
    )
    assert r.status_code == 400, r.content
    assert r.json()["detail"] == "Cannot parse request body"
