"""Another team's pages (issue 27): a user of team B asks for every page and API route, with
team A's ids where a route takes one, and not one word of team A's names may come back.

An unscoped comparison list once showed A's comparison and dataset names on B's
/evaluations/, and the outsider test, which looked for one word, did not notice. Here team A
has one of everything, each named with words found nowhere else (tests/support/team_world.py), and
the routes come from the URL resolver: a page added later is walked without editing this
file, and a route whose parameters the walk cannot fill fails until it is filled in or
excluded with a reason."""

import re
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from django.test import Client
from django.urls import URLResolver, get_resolver, resolve

from datasets_app.models import Dataset, DatasetVersion
from evaluation.models import Comparison, EvaluationRun, Vote
from experiments.models import Experiment, MetricPoint, TrainingRun
from finetune_hub.api import api as ninja_api
from finetune_hub.auth import token_create
from finetune_hub.models import ApiToken
from registry.models import (
    Alias,
    AliasEvent,
    Feedback,
    ModelVersion,
    PromotionRequest,
    RegisteredModel,
    ServedGeneration,
)
from tests.support.team_world import (
    ALIAS,
    EXPERIMENT,
    RUN_METRIC,
    SECRETS,
    STORED_ONLY,
    World,
    object_ids,
    team_world,
)
from tests.support.training_helpers import make_version


@pytest.fixture
def world(db, tiny_model) -> World:
    return team_world(tiny_model)


@pytest.fixture
def team_b(outsider, tiny_model):
    """Team B has data of its own, so its lists and forms have rows to render."""
    team = outsider.memberships.get().team
    make_version(team, outsider, n=40)
    return team


# ------------------------------------------------------------------------------ the routes


@dataclass(frozen=True)
class Route:
    route: str  # the full route, as ResolverMatch.route gives it
    name: str | None
    namespace: str | None
    callback: object

    @property
    def params(self) -> list[str]:
        return [a or b for a, b in re.findall(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>", self.route)]

    @property
    def view(self) -> str:
        return getattr(self.callback, "__name__", type(self.callback).__name__)

    def url(self, values: dict) -> str:
        url = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(values[m.group(1)]), self.route)
        url = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), url)
        return "/" + url.replace("^", "").replace("$", "")


def routes(patterns=None, prefix="", namespace=None) -> list[Route]:
    out = []
    for p in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(p, URLResolver):
            out += routes(p.url_patterns, prefix + str(p.pattern), p.namespace or namespace)
        else:
            out.append(Route(prefix + str(p.pattern), p.name, namespace, p.callback))
    return out


# Routes the walk leaves alone, and why.
EXCLUDED = {
    "admin": "the admin has its own walk, with a staff user of one team "
    "(tests/security/test_admin_scoping.py); a non-staff user is sent to its login",
    "logout": "signs the user out; it shows nothing",
    "password_reset_confirm": "a one-user link of Django's; nothing of any team",
    "mlflow_version_file": "model-versions/get-artifact again, for MLflow's '//' spelling: "
    "the walk reaches the same view by its plain route",
    "experiments.mlflow.views.experiment_create": "makes an experiment in the caller's own "
    "team, by the name it is given: nothing of another team to find",
    "registry.mlflow.views.model_create": "makes a registered model in the caller's own team, "
    "by the name it is given: nothing of another team to find",
}
MLFLOW_VIEWS = ("experiments.mlflow.", "registry.mlflow.")  # modules of /mlflow's views


def excluded(route: Route) -> str | None:
    callback = f"{route.callback.__module__}.{route.view}"
    return EXCLUDED.get(route.namespace) or EXCLUDED.get(route.name) or EXCLUDED.get(callback)


def path_values(w: World) -> dict:
    """A value for each route parameter: team A's objects, and harmless words for the rest."""
    return {
        **object_ids(w),
        "action": "cancel",
        "kind": "adapter",
        "decision": "approve",
        "rest": "api/2.0/mlflow/no-such-endpoint",
        "tag_key": "k",
        "path": f"{w.experiment.pk}/{w.run.pk}/artifacts/adapter_config.json",
    }


# Parameters that are not a team's object: a route with only these is the caller's own page.
NOT_AN_OBJECT = {"action", "kind", "decision", "rest", "tag_key"}


def form(w: World) -> dict:
    """A dashboard form or API body naming team A's objects by id (no names: a page may echo
    what it was sent)."""
    return {
        "team": w.team.pk,
        "dataset_version": w.version.pk,
        "experiment": w.experiment.pk,
        "run": w.run.pk,
        "subject": f"run:{w.run.pk}",
        "subjects": [f"run:{w.run.pk}", f"version:{w.model_version.pk}"],
        "version": w.model_version.number,
        "ids": [w.run.pk],
        "pair": 1,
        "generation": 1,
        "rating": 1,
    }


def api_body(w: World) -> dict:
    return {
        **form(w),
        "subject": {"run": w.run.pk},
        "subjects": [{"run": w.run.pk}, {"model_version": w.model_version.pk}],
        "experiment_id": w.experiment.pk,
        "run_id": w.run.pk,
    }


# The MLflow routes take their ids in the query or the body: what to send each, whether it
# names team A's objects (refused) or asks for the caller's own (answered), and whether it
# only reads (the owner's control walk sends those too).
def mlflow_requests(w: World) -> dict:
    run, experiment = str(w.run.pk), str(w.experiment.pk)
    writes = {"run_id": run, "key": "k", "value": 1, "timestamp": 0, "metrics": []}
    artifacts = f"{experiment}/{run}/artifacts"
    return {
        "experiment_get_by_name": ("GET", {"experiment_name": EXPERIMENT}, "refused", "read"),
        "experiment_get": ("GET", {"experiment_id": experiment}, "refused", "read"),
        "experiment_search": ("GET", {}, "own", "read"),
        "run_create": ("POST", {"experiment_id": experiment}, "refused", "write"),
        "run_update": ("POST", {"run_id": run, "status": "KILLED"}, "refused", "write"),
        "run_get": ("GET", {"run_id": run}, "refused", "read"),
        "run_search": ("POST", {"experiment_ids": [experiment]}, "any", "read"),
        "log_batch": ("POST", writes, "refused", "write"),
        "log_metric": ("POST", writes, "refused", "write"),
        # a param's or tag's value is a string (MLflow refuses a number for one)
        "log_parameter": ("POST", {**writes, "value": "1"}, "refused", "write"),
        "set_tag": ("POST", {**writes, "value": "1"}, "refused", "write"),
        "metric_history": ("GET", {"run_id": run, "metric_key": RUN_METRIC}, "refused", "read"),
        "artifact_list": ("GET", {"path": artifacts}, "refused", "read"),
        "run_artifact_list": ("GET", {"run_id": run}, "refused", "read"),
        "artifact": ("GET", {}, "refused", "read"),
        "not_supported": ("GET", {}, "any", "read"),
        "experiment_delete": ("POST", {"experiment_id": experiment}, "refused", "write"),
        "experiment_restore": ("POST", {"experiment_id": experiment}, "refused", "write"),
        "experiment_update": (
            "POST",
            {"experiment_id": experiment, "new_name": "x"},
            "refused",
            "write",
        ),
        "experiment_tag_set": (
            "POST",
            {"experiment_id": experiment, "key": "k", "value": "v"},
            "refused",
            "write",
        ),
        "experiment_tag_delete": (
            "POST",
            {"experiment_id": experiment, "key": "k"},
            "refused",
            "write",
        ),
        "run_delete": ("POST", {"run_id": run}, "refused", "write"),
        "run_restore": ("POST", {"run_id": run}, "refused", "write"),
        "run_tag_delete": ("POST", {"run_id": run, "key": "k"}, "refused", "write"),
        # MLflow's bulk history leaves out runs it cannot read: an outsider gets nothing
        "metric_history_bulk": ("GET", {"run_id": run, "metric_key": RUN_METRIC}, "any", "read"),
        # logged models and run inputs (experiments.mlflow.logged_models): a model id in the
        # path is team A's (refused); one in a body names team A's run or experiment
        "model": ("GET", {}, "refused", "read"),
        "model_params": ("POST", {"params": [{"key": "k", "value": "v"}]}, "refused", "write"),
        "model_tags": ("PATCH", {"tags": [{"key": "k", "value": "v"}]}, "refused", "write"),
        "model_tag_delete": ("DELETE", {}, "refused", "write"),
        "model_artifact_list": ("GET", {}, "refused", "read"),
        "model_artifact_get": ("GET", {"artifact_file_path": "MLmodel"}, "refused", "read"),
        "model_create": ("POST", {"experiment_id": experiment}, "refused", "write"),
        # a search over an experiment the caller cannot see finds nothing in it (MLflow's)
        "model_search_view": ("POST", {"experiment_ids": [experiment]}, "any", "read"),
        "log_inputs": ("POST", {"run_id": run, "models": []}, "refused", "write"),
        "log_outputs": (
            "POST",
            {"run_id": run, "models": [{"model_id": w.logged_model.pk, "step": 0}]},
            "refused",
            "write",
        ),
        "search_datasets": ("POST", {"experiment_ids": [experiment]}, "any", "read"),
        # its run and path travel in the query, the file in the body: this is a bad request
        "upload_artifact": ("POST", {"run_uuid": run, "path": "x.txt"}, "any", "write"),
        "get_artifact": (
            "GET",
            {"run_uuid": run, "path": "adapter_config.json"},
            "refused",
            "read",
        ),
        "metric_history_bulk_interval": (
            "GET",
            {"run_ids": run, "metric_key": RUN_METRIC},
            "any",
            "read",
        ),
        **mlflow_registry_requests(w),
    }


def mlflow_registry_requests(w: World) -> dict:
    model = {"name": w.model.name}
    version = {**model, "version": str(w.model_version.number)}
    return {
        "registry:model_get": ("GET", model, "refused", "read"),
        "registry:model_rename": ("POST", {**model, "new_name": "renamed"}, "refused", "write"),
        "registry:model_update": ("PATCH", {**model, "description": "d"}, "refused", "write"),
        "registry:model_delete": ("DELETE", model, "refused", "write"),
        "registry:model_search": ("GET", {}, "own", "read"),
        "registry:latest_versions": ("POST", model, "refused", "read"),
        "registry:model_tag_set": ("POST", {**model, "key": "k", "value": "v"}, "refused", "write"),
        "registry:model_tag_delete": ("DELETE", {**model, "key": "k"}, "refused", "write"),
        "registry:alias": ("GET", {**model, "alias": ALIAS}, "refused", "read"),
        "registry:version_create": ("POST", {**model, "source": "s3://b/m"}, "refused", "write"),
        "registry:version_get": ("GET", version, "refused", "read"),
        "registry:version_update": ("PATCH", {**version, "description": "d"}, "refused", "write"),
        "registry:version_delete": ("DELETE", version, "refused", "write"),
        "registry:version_search": ("GET", {}, "own", "read"),
        "registry:version_tag_set": (
            "POST",
            {**version, "key": "k", "value": "v"},
            "refused",
            "write",
        ),
        "registry:version_tag_delete": ("DELETE", {**version, "key": "k"}, "refused", "write"),
        "registry:version_download_uri": ("GET", version, "refused", "read"),
        "registry:version_artifact": (
            "GET",
            {**version, "path": "adapter_config.json"},
            "refused",
            "read",
        ),
        "registry:version_stage": ("POST", {**version, "stage": "Staging"}, "refused", "write"),
    }


# Lists whose query names team A's objects (or that answer 422 without one), by URL name.
def queries_for(w: World) -> dict:
    return {
        "compare_runs": {"ids": str(w.run.pk)},
        "run_compare": {"ids": str(w.run.pk)},
        "diff_versions": {"a": 1, "b": w.version.number},
        "alias_at": {"time": "2100-01-01T00:00:00Z"},
    }


def api_operations() -> dict[tuple[str, str], str]:
    """(route, url name) -> HTTP method, from the OpenAPI document: ninja names each
    operation's URL after its view, and its operationId ends with that name."""
    out = {}
    for path, ops in ninja_api.get_openapi_schema()["paths"].items():
        route = re.sub(r"{(\w+)}", r"<\1>", path).lstrip("/")
        for method, op in ops.items():
            out[(route, op["operationId"])] = method.upper()
    return out


def api_method(route: Route, operations: dict) -> str | None:
    found = [
        method
        for (path, op_id), method in operations.items()
        if path == route.route and op_id.endswith(f"_{route.name}")
    ]
    if route.name in ("openapi-json", "openapi-view", "api-root"):
        return "GET"
    return found[0] if len(found) == 1 else None


@dataclass
class Request:
    label: str
    method: str
    url: str
    query: dict
    data: dict  # the body of any other method
    expect: str  # "own": answered; "refused": 404; "any": either, only nothing of A's
    reads: bool  # the owner's control walk sends it too
    client: str  # "browser" (signed in) or "token" (a bearer token)


def requests_for(w: World) -> tuple[list[Request], list[str]]:
    """Every route that is not excluded, as a request; and the routes the walk cannot fill."""
    values, operations, mlflow = path_values(w), api_operations(), mlflow_requests(w)
    queries = queries_for(w)
    out, unknown = [], []
    for route in routes():
        if excluded(route):
            continue
        missing = [p for p in route.params if p not in values]
        if missing:
            unknown.append(f"{route.route} ({route.name}): no value for {missing}")
            continue
        url = route.url(values)
        assert resolve(url).route == route.route.replace("/^", "/"), (url, route.route)
        foreign = any(p not in NOT_AN_OBJECT for p in route.params)
        label = f"{route.route} [{route.name or route.view}]"
        if route.namespace == "api":
            method = api_method(route, operations)
            if method is None:
                unknown.append(f"{route.route} ({route.name}): no single operation in OpenAPI")
                continue
            query = queries.get(route.name, {})
            data = {} if method == "GET" else api_body(w)
            expect = "refused" if foreign or query or method != "GET" else "own"
            expect = "any" if route.name == "api-root" else expect  # 404 to all without DEBUG
            out.append(Request(label, method, url, query, data, expect, method == "GET", "token"))
        elif route.callback.__module__.startswith(MLFLOW_VIEWS):
            # the registry's views (registry.mlflow) share some names with the tracking ones
            registry = route.callback.__module__.startswith("registry.")
            recipe = mlflow.get(f"registry:{route.view}" if registry else route.view)
            if recipe is None:
                unknown.append(f"{route.route}: no MLflow request recipe")
                continue
            method, data, expect, kind = recipe
            expect = "refused" if "team_id" in route.params and expect != "any" else expect
            query, data = (data, {}) if method == "GET" else ({}, data)
            out.append(Request(label, method, url, query, data, expect, kind == "read", "token"))
        else:
            query = queries.get(route.name, {})
            expect = "refused" if foreign or query else "own"
            out.append(Request(label, "PAGE", url, query, form(w), expect, True, "browser"))
    return out, unknown


# ------------------------------------------------------------------------------- the walk


def send(clients: dict, request: Request, *, reads_only: bool):
    """The response and its body. A page is asked for with GET; one that takes only POST
    (405) is sent team A's ids in a form, and its redirect followed, so that a message
    shown on the next page is read too."""
    if request.client == "token":
        client, token = clients["token"]
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        if request.method == "GET":
            r = client.get(request.url, request.query, **headers)
        else:
            send_method = getattr(client, request.method.lower())
            r = send_method(request.url, request.data, content_type="application/json", **headers)
        return r, _body(r)
    client = clients["browser"]
    r = client.get(request.url, request.query)
    if r.status_code == 405 and not reads_only:
        r = client.post(request.url, request.data)
        if r.status_code == 302:
            r = client.get(r["Location"])
    return r, _body(r)


def _body(response) -> str:
    if response.streaming:  # reading it to the end closes it (the test client's wrapper)
        content = b"".join(response.streaming_content)
    else:
        content = response.content
    return content.decode(errors="replace").lower()


def clients_for(user) -> dict:
    browser = Client()
    browser.force_login(user)
    return {"browser": browser, "token": (Client(), token_create(user=user, name="walk")[1])}


def leaked(body: str, request: Request) -> list[str]:
    """Team A's words in the body, but for those the request itself named (a 404 may echo
    the name it was asked for)."""
    asked = (request.url + repr(request.query) + repr(request.data)).lower()
    return [word for word in SECRETS if word in body and word not in asked]


def test_every_route_is_walked_or_excluded_with_a_reason():
    one = SimpleNamespace(pk=1, number=1, name="m")  # ids are enough to fill the routes
    requests, unknown = requests_for(World(*[one] * len(World.__dataclass_fields__)))
    assert not unknown, "fill these routes in path_values or list them in EXCLUDED:\n" + (
        "\n".join(unknown)
    )
    walked = {r.url for r in requests}
    assert {"/evaluations/", "/registry/m/", "/api/comparisons/1/results"} <= walked
    assert len(requests) > 100


def snapshot() -> dict:
    """What the outsider's walk must not change in team A."""
    tables = [
        Dataset, DatasetVersion, Experiment, TrainingRun, MetricPoint, EvaluationRun,
        Comparison, Vote, RegisteredModel, ModelVersion, Alias, AliasEvent, PromotionRequest,
        ServedGeneration, Feedback, ApiToken,
    ]  # fmt: skip
    rows = {t.__name__: t.objects.count() for t in tables}
    # The outsider's own Default (MLflow's experiment 0, made when their team's experiments
    # are first read) is theirs, not team A's.
    rows["Experiment"] = Experiment.objects.filter(mlflow_default=False).count()
    return {
        "rows": rows,
        "runs": sorted(TrainingRun.objects.values_list("pk", "status", "priority")),
        "aliases": sorted(Alias.objects.values_list("name", "version_id")),
        "requests": sorted(PromotionRequest.objects.values_list("pk", "status")),
    }


def test_the_owner_sees_every_name_the_outsider_must_not(world):
    """The control: team A's own user reads each of the names somewhere in the same walk,
    and each of A's pages answers, so the outsider's walk below is looking in the right
    places with the right ids."""
    clients = clients_for(world.owner)
    seen, failures = set(), []
    for request in requests_for(world)[0]:
        if not request.reads:
            continue
        response, body = send(clients, request, reads_only=True)
        if request.expect != "any" and response.status_code not in (200, 302, 405):
            failures.append(f"{request.label} {request.url}: {response.status_code}")
        seen |= {word for word in SECRETS if word in body}
    assert not failures, "\n".join(failures)
    assert set(SECRETS) - seen == STORED_ONLY, "shown to the owner nowhere: not a useful probe"


def test_an_outsider_reads_no_name_of_another_team_anywhere(world, outsider, team_b):
    clients = clients_for(outsider)
    before = snapshot()
    failures = []
    for request in requests_for(world)[0]:
        response, body = send(clients, request, reads_only=False)
        status = response.status_code
        if request.expect == "refused" and status not in (404, 422):
            failures.append(f"{request.label} {request.url}: {status}, not 404")
        if request.expect == "refused" and status == 422 and request.method in ("GET", "PAGE"):
            failures.append(f"{request.label} {request.url}: 422, not 404")
        if request.expect == "own" and status not in (200, 302):
            failures.append(f"{request.label} {request.url}: {status}, not 200")
        if status >= 500:
            failures.append(f"{request.label} {request.url}: {status}")
        if words := leaked(body, request):
            failures.append(f"{request.label} {request.url}: shows {words}")
    assert not failures, "\n".join(failures)
    assert snapshot() == before
