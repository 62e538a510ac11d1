"""Every API operation, asked by an outsider (a signed-up user of another team, with a bearer
token) about the owner's team's real objects, answers 404: not 403 (that would tell the
outsider the object exists), not 401, not 200, not 500 (healthchecks' test_it_validates_
ownership, for the whole API at once).

The operations come from the OpenAPI document: an operation added later fails
test_every_operation_has_a_recipe until this file knows a value for each of its path
parameters, a body for its request (valid, so that a 422 cannot hide a missing team check:
the owner's own call of each write, undone afterwards, must not answer 404 or 422), and, for an
operation with no path id, whether it is a list (200 with none of the owner's rows), a create
naming the owner's objects (404) or the caller's own business (answered)."""

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest
from django.db import transaction
from django.test import Client

from evaluation.models import Vote
from finetune_hub.auth import token_create
from registry.models import ServedGeneration
from tests.support.openapi import Operation, operations
from tests.support.team_world import SECRETS, World, object_ids, team_world
from tests.support.training_helpers import FAST, jsonl

OPERATIONS = operations()


def path_values(w: World, op: Operation) -> dict:
    """A real object of the owner's team for each path parameter."""
    values = {**object_ids(w), "decision": "approve"}
    if op.path.startswith("/api/registry/"):
        values["number"] = w.model_version.number
    if op.path.startswith(TRACKED_WRITES):  # only a run trained elsewhere takes these
        values["run_id"] = w.tracked_run.pk
    if op.path in ("/api/runs/{run_id}/cancel", "/api/runs/{run_id}/priority"):
        values["run_id"] = w.queued.pk
    if op.path == "/api/runs/{run_id}/artifacts/{name}":
        values["name"] = "adapter_config.json"
    if op.path.startswith("/api/invitations/"):  # the owner's own (another team's)
        values["invitation_id"] = w.my_invitation.pk
    return values


TRACKED_WRITES = tuple(
    f"/api/runs/{{run_id}}/{verb}" for verb in ("metrics", "params", "tags", "notes", "end")
) + ("/api/runs/{run_id}/artifacts",)


@dataclass
class Body:
    """What a request sends: JSON, a multipart upload, or raw bytes."""

    json: dict | None = None
    files: dict | None = None
    raw: bytes | None = None


def _experiment(w: World, team: int) -> dict:
    return {
        "team": team,
        "name": "outsider experiment",
        "dataset_version": w.version.pk,
        "technique": "lora",
        "base_model": w.experiment.base_model,
        "hyperparameters": FAST,
    }


def _upload() -> dict:
    rows = [
        {"instruction": f"question {i}", "input": "", "output": f"answer {i}"} for i in range(30)
    ]
    upload = io.BytesIO(jsonl(rows).encode())
    upload.name = "data.jsonl"
    return {"file": upload}


# Each request body, given the world and the caller's own team: a create is sent once naming
# the owner's team, and once naming the caller's own team with the owner's objects in it.
BODIES: dict[str, Callable[[World, int], list[Body]]] = {
    "POST /api/comparisons": lambda w, mine: [
        Body(
            {
                "subjects": [{"run": w.run.pk}, {"model_version": w.model_version.pk}],
                "dataset_version": w.version.pk,
                "mode": "human",
            }
        )
    ],
    "POST /api/comparisons/{comparison_id}/export-preferences": lambda w, mine: [Body({})],
    "POST /api/comparisons/{comparison_id}/votes": lambda w, mine: [
        Body(
            {
                "pair": Vote.objects.filter(pair__comparison=w.comparison).first().pk,
                "choice": "left",
            }
        )
    ],
    "POST /api/datasets": lambda w, mine: [
        Body({"team": w.team.pk, "name": "outsider data", "task": "instruction"})
    ],
    "POST /api/datasets/{dataset_id}/versions": lambda w, mine: [Body(files=_upload())],
    "POST /api/evaluations": lambda w, mine: [
        Body({"subject": {"run": w.run.pk}, "dataset_version": w.version.pk, "metrics": ["chrf"]})
    ],
    "POST /api/experiments": lambda w, mine: [
        Body(_experiment(w, w.team.pk)),
        Body(_experiment(w, mine)),
    ],
    "POST /api/experiments/estimate": lambda w, mine: [
        Body(
            {
                "technique": "lora",
                "base_model": w.experiment.base_model,
                "dataset_version": w.version.pk,
                "hyperparameters": FAST,
            }
        )
    ],
    "POST /api/experiments/{experiment_id}/runs": lambda w, mine: [Body({"priority": 1})],
    "POST /api/registry/models": lambda w, mine: [
        Body({"team": w.team.pk, "name": "outsider-model"}),
        Body(
            {
                "team": mine,
                "name": "outsider-model",
                "policy": {"evaluation_dataset_version": w.version.pk},
            }
        ),
    ],
    "PUT /api/registry/models/{name}/aliases/{alias}": lambda w, mine: [
        Body({"version": 2, "reason": "outsider promotion"})
    ],
    "POST /api/registry/models/{name}/aliases/{alias}/generate": lambda w, mine: [
        Body({"prompt": "hello", "max_new_tokens": 1})
    ],
    "POST /api/registry/models/{name}/aliases/{alias}/rollback": lambda w, mine: [
        Body({"reason": "outsider rollback"})
    ],
    "POST /api/registry/models/{name}/feedback": lambda w, mine: [
        Body(
            {
                "generation": ServedGeneration.objects.filter(registered_model=w.model).first().pk,
                "rating": -1,
            }
        )
    ],
    "PUT /api/registry/models/{name}/policy": lambda w, mine: [Body({"require_approval": False})],
    "PUT /api/registry/models/{name}/schedule": lambda w, mine: [Body({"every_days": 7})],
    "POST /api/registry/models/{name}/versions": lambda w, mine: [Body({"run": w.run.pk})],
    "POST /api/runs": lambda w, mine: [
        Body({"team": w.team.pk, "name": "outsider run", "project": "outsider project"}),
        Body({"team": mine, "name": "outsider run", "experiment": w.tracked_run.experiment_id}),
    ],
    "POST /api/runs/compare": lambda w, mine: [Body({"ids": [w.run.pk]})],
    "PUT /api/runs/{run_id}/artifacts/{name}": lambda w, mine: [Body(raw=b'{"r": 8}')],
    "POST /api/runs/{run_id}/end": lambda w, mine: [Body({"status": "succeeded"})],
    "POST /api/runs/{run_id}/metrics": lambda w, mine: [
        Body({"points": [{"step": 9, "key": "outsider_loss", "value": 1.0}]})
    ],
    "POST /api/runs/{run_id}/notes": lambda w, mine: [Body({"notes": "outsider notes"})],
    "POST /api/runs/{run_id}/params": lambda w, mine: [Body({"params": {"outsider": "1"}})],
    "POST /api/runs/{run_id}/priority": lambda w, mine: [Body({"priority": 9})],
    "POST /api/runs/{run_id}/tags": lambda w, mine: [Body({"tags": {"outsider": "1"}})],
    "POST /api/teams": lambda w, mine: [Body({"name": "Outsider's second team"})],
    "POST /api/teams/{team_id}/members": lambda w, mine: [
        Body({"username": "outsider", "role": "member"})
    ],
    "POST /api/tokens": lambda w, mine: [Body({"name": "outsider token"})],
}

# Query parameters an operation needs, or that name the owner's objects.
QUERIES: dict[str, Callable[[World], dict]] = {
    "GET /api/datasets/{dataset_id}/diff": lambda w: {"a": 1, "b": w.version.number},
    "GET /api/registry/models/{name}/aliases/{alias}/at": lambda w: {
        "time": "2100-01-01T00:00:00Z"
    },
    "GET /api/runs/compare": lambda w: {"ids": str(w.run.pk)},
}

# Operations without a path id that read the caller's rows: the outsider gets 200 and not
# one of the owner's; the owner gets 200 and some (but for the workers, which are the
# installation's, not a team's).
LISTS = {
    "GET /api/datasets",
    "GET /api/evaluations",
    "GET /api/experiments",
    "GET /api/invitations",
    "GET /api/registry/models",
    "GET /api/runs",
    "GET /api/runs/queue",
    "GET /api/teams",
    "GET /api/tokens",
    "GET /api/workers",
}
# Operations that name nothing of any team: answered to anyone signed in.
OWN = {
    "GET /api/health": "the server's health",
    "POST /api/teams": "makes a new team of the caller's",
    "POST /api/tokens": "makes a token of the caller's",
}


# Queries sent besides, naming the owner's team or objects: an operation with a path id
# refuses them (404); a list answers the caller's own rows (none: the filter names another
# team's).
def extra_queries(w: World, op: Operation) -> list[dict]:
    out = [{"team": w.team.pk}] if "team" in op.query() else []
    return out + ([{"experiment": w.experiment.pk}] if "experiment" in op.query() else [])


# A version of a dataset is named in a body by id, and one outside the caller's teams is a
# field error (datasets_app.selectors.dataset_version_for, documented as the 400 of those
# operations), not a 404: what the outsider gets is the same as for an id that does not
# exist, so it tells nothing either.
NO_SUCH_VERSION = "No such dataset version in your teams"
VERSION_FIELDS = {"dataset_version", "policy.evaluation_dataset_version"}


def refused(response) -> bool:
    if response.status_code == 404:
        return response.json()["code"] == "not_found"
    errors = response.json().get("errors") if response.status_code == 400 else None
    return bool(errors) and all(
        e["field"] in VERSION_FIELDS and e["message"] == NO_SUCH_VERSION for e in errors
    )


def expectation(op: Operation) -> str:
    """'list', 'own' or 'refused' (404)."""
    if op.params:
        return "refused"
    if op.label in LISTS:
        return "list"
    return "own" if op.label in OWN else "refused"


def test_every_operation_has_a_recipe():
    """A new operation fails here until this file can call it with the owner's objects."""
    missing = []
    one = SimpleNamespace(pk=1, number=1, name="m", base_model="b")  # ids fill the paths
    one = World(*[one] * len(World.__dataclass_fields__))
    for op in OPERATIONS:
        if unknown := set(op.params) - set(path_values(one, op)):
            missing.append(f"{op.label}: no value for the path parameters {sorted(unknown)}")
        if "requestBody" in op.spec and op.label not in BODIES:
            missing.append(f"{op.label}: no request body in BODIES")
        if (needed := set(op.query(required=True))) and op.label not in QUERIES:
            missing.append(f"{op.label}: no value for the query parameters {sorted(needed)}")
        named = op.spec.get("requestBody") or op.label in QUERIES  # the owner's objects
        if not op.params and not (named or op.label in LISTS | set(OWN)):
            missing.append(f"{op.label}: no path id and no body: a list, or the caller's own?")
    assert not missing, "\n".join(missing)
    assert set(BODIES) <= {op.label for op in OPERATIONS}, "a recipe for no operation"
    assert len(OPERATIONS) > 60


@dataclass
class Call:
    op: Operation
    url: str
    query: dict
    body: Body

    def send(self, client: Client, token: str):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        url = f"{self.url}?{urlencode(self.query)}" if self.query else self.url
        if self.op.method == "GET":
            r = client.get(url, **headers)
        elif self.body.files is not None:
            for upload in self.body.files.values():
                upload.seek(0)
            r = client.post(url, self.body.files, **headers)
        elif self.body.raw is not None:
            r = client.generic(
                self.op.method, url, self.body.raw, "application/octet-stream", **headers
            )
        else:
            r = client.generic(
                self.op.method, url, json.dumps(self.body.json), "application/json", **headers
            )
        if r.streaming:  # read to its end, which closes it
            r.content_read = b"".join(r.streaming_content)
        else:
            r.content_read = r.content
        return r

    @property
    def label(self) -> str:
        return f"{self.op.label} {self.url} {self.query or ''}{self.body.json or ''}"


def calls(w: World, mine: int) -> list[Call]:
    """Each operation as the requests to send, for a caller whose own team is `mine`."""
    out = []
    for op in OPERATIONS:
        values = path_values(w, op)
        url = op.path.format(**{name: values[name] for name in op.params})
        query = QUERIES.get(op.label, lambda w: {})(w)
        bodies = BODIES.get(op.label, lambda w, mine: [Body()])(w, mine)
        out += [Call(op, url, query, body) for body in bodies]
        out += [Call(op, url, {**query, **more}, bodies[0]) for more in extra_queries(w, op)]
    return out


@pytest.fixture
def world(db, tiny_model) -> World:
    return team_world(tiny_model)


class Undo(Exception):
    pass


def undone(call: Call, client: Client, token: str):
    """The answer to a write, whose changes are then rolled back."""
    try:
        with transaction.atomic():
            response = call.send(client, token)
            raise Undo
    except Undo:
        return response


def secrets_in(response) -> list[str]:
    body = response.content_read.decode(errors="replace").lower()
    return [word for word in SECRETS if word in body]


def test_the_owner_reaches_each_object_with_the_same_calls(world):
    """The control: the ids are real and the bodies valid. The owner's reads answer 2xx; the
    owner's writes (undone after each) answer neither 404 nor 422."""
    client, token = Client(), token_create(user=world.owner, name="control")[1]
    failures = []
    for call in calls(world, world.team.pk):
        r = call.send(client, token) if call.op.method == "GET" else undone(call, client, token)
        if call.op.method == "GET" and not 200 <= r.status_code < 300:
            failures.append(f"{call.label}: {r.status_code} {r.content_read[:200]}")
        if r.status_code in (404, 422) or r.status_code >= 500:
            failures.append(f"{call.label}: {r.status_code} {r.content_read[:200]}")
        if expectation(call.op) == "list" and call.op.label != "GET /api/workers":
            if not secrets_in(r):
                failures.append(f"{call.label}: the owner's list shows none of the owner's")
    assert not failures, "\n".join(failures)


def test_an_outsider_is_answered_404_by_every_operation(world, outsider):
    client, token = Client(), token_create(user=outsider, name="outsider")[1]
    mine = outsider.memberships.get().team_id
    failures = []
    for call in calls(world, mine):
        r = call.send(client, token)
        expect = expectation(call.op)
        if expect == "refused" and not refused(r):
            failures.append(f"{call.label}: {r.status_code}, not 404: {r.content_read[:200]}")
        if expect != "refused" and not 200 <= r.status_code < 300:
            failures.append(f"{call.label}: {r.status_code}: {r.content_read[:200]}")
        if expect != "refused" and (words := secrets_in(r)):
            failures.append(f"{call.label}: shows the owner's {words}")
    assert not failures, "\n".join(failures)
