"""Every number, id, page, time, filter and name a client sends is parsed once
(finetune_hub.bounds), bounded, and answered with a 4xx naming the field, on /api, /mlflow and
the dashboard alike (issue 29, second round). The probe's finds, one class each:

- numbers: "1e400" (inf after json.loads, then int(inf) raised OverflowError), "²" (isdigit()
  is true, int() raises), integers past int64 (an OFFSET or id the database cannot hold), a
  filter's 1e999 or 10**23, a time whose zone cannot become UTC;
- shapes of MLflow messages: order_by an object or a number, a param key a list or an object;
- model references: a 5,000-character name made is_file() raise "File name too long";
- the filter: longer than 4,000 characters, or quadratic to read.

And the guard: no request-side module calls int() or float() on what a client sent."""

import ast
import time
from pathlib import Path

import pytest
from django.test import Client

from experiments import services
from finetune_hub.auth import token_create
from finetune_hub.bounds import INT64_MAX, as_datetime, as_float, as_int, as_text
from inference.base_models import MAX_REF_LENGTH
from tests.support.training_helpers import make_experiment

ROOT = Path(__file__).resolve().parents[2]
HUGE = str(10**23)
MLFLOW = "/mlflow/api/2.0/mlflow/"


@pytest.fixture
def run(team, owner, tiny_model):
    experiment = make_experiment(team, owner, tiny_model)
    return services.run_enqueue(experiment=experiment, by=owner, dispatch=False)


@pytest.fixture
def mlflow(owner):
    token = token_create(user=owner, name="t")[1]
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def call(endpoint: str, body=None, raw: str | None = None, **query):
        if body is None and raw is None:
            return client.get(MLFLOW + endpoint, query, **headers)
        data = raw if raw is not None else body
        return client.post(MLFLOW + endpoint, data, content_type="application/json", **headers)

    return call


def assert_names(response, field: str, status: int = 422):
    assert response.status_code == status, (response.status_code, response.content[:300])
    body = response.json()
    assert body["errors"][0]["field"] == field, body
    return body


def assert_mlflow_names(response, parameter: str):
    assert response.status_code == 400, (response.status_code, response.content[:300])
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert f"parameter '{parameter}'" in body["message"], body
    return body


# ---------------------------------------------------------------------- the parser itself


@pytest.mark.parametrize(
    "value",
    [
        "²",
        "٣",
        "1_000",
        " 5",
        "5 ",
        "1e3",
        "0x10",
        "",
        "+",
        True,
        None,
        [],
        {},
        1.5,
        float("inf"),
        float("nan"),
        str(2**63),
        2**63,
        -(2**63) - 1,
        "9" * 5000,
    ],
)
def test_an_integer_is_ascii_digits_within_int64(value):
    with pytest.raises(ValueError):
        as_int(value)


@pytest.mark.parametrize(
    "value, want",
    [("12", 12), ("-3", -3), (7, 7), (5.0, 5), (str(INT64_MAX), INT64_MAX), ("00012", 12)],
)
def test_integers_that_are_read(value, want):
    assert as_int(value) == want


@pytest.mark.parametrize(
    "value",
    [
        "1e400",
        "-1e400",
        "inf",
        "nan",
        "NaN",
        "Infinity",
        float("inf"),
        float("nan"),
        10**400,
        "٣",
        "1.5.",
        True,
    ],
)
def test_a_number_is_finite(value):
    with pytest.raises(ValueError):
        as_float(value)


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "x" * 100, "2026-13-01", 5]
)
def test_a_time_is_an_instant_that_has_a_utc_time(value):
    with pytest.raises(ValueError):
        as_datetime(value)


def test_text_is_capped_and_has_no_lone_surrogates():
    with pytest.raises(ValueError):
        as_text("x" * 11, max_length=10)
    with pytest.raises(ValueError):
        as_text("a\ud800b")
    assert as_text("ok ²") == "ok ²"


# ---------------------------------------------------------------------- numbers on /api


def test_a_page_whose_offset_is_past_int64_is_a_422_naming_page(api, run):
    assert_names(api.get("/api/runs", page=str(10**17)), "page")
    assert_names(api.get("/api/experiments", page="²"), "page")
    assert api.get("/api/runs", page="1").status_code == 200


@pytest.mark.parametrize("ids", [HUGE, "²", "1,٣", "1e400", "-1", "0"])
def test_compare_ids_are_ascii_ids_within_int64(api, run, ids):
    assert_names(api.get("/api/runs/compare", ids=f"{run.pk},{ids}"), "ids")


@pytest.mark.parametrize(
    "text",
    [
        "params.lr = 1e999",
        "params.lora_r > 99999999999999999999999",
        "metrics.loss < -1e400",
        "started_at > 0001-01-01T00:00:00+23:59",
        "finished_at < 9999-12-31T23:59:59-23:59",
    ],
)
def test_a_filter_value_out_of_range_is_a_422_naming_filter(api, run, browser_client, text):
    body = assert_names(api.get("/api/runs", filter=text), "filter")
    assert "clause 1" in body["detail"]
    # the run table shows the same message on the page, not a 500
    page = browser_client.get("/runs/table/", {"filter": text})
    assert page.status_code == 200 and "clause 1" in page.content.decode()


def test_a_json_body_with_a_lone_surrogate_is_a_400(api, team):
    r = api.client.post(
        "/api/datasets",
        '{"team": ' + str(team.pk) + ', "name": "\\ud800", "task": "instruction"}',
        content_type="application/json",
        **api._headers(),
    )
    assert r.status_code == 400  # ninja: "Cannot parse request body"


# ---------------------------------------------------------------------- the filter's cap and time


def test_a_filter_over_4000_characters_is_refused_first_and_at_once(api, run, mlflow):
    huge = "metrics.loss = 1 and " * 50_000  # 1 MB
    started = time.perf_counter()
    body = assert_names(api.get("/api/runs", filter=huge), "filter")
    assert "at most 4,000 characters" in body["detail"]
    assert_mlflow_names(mlflow("runs/search", {"filter": huge}), "filter")
    assert time.perf_counter() - started < 5  # generous: the point is not quadratic


def test_a_long_run_of_spaces_reads_in_linear_time(api, run):
    # The tokenizer once counted ANDs with a regex over the text before an open quote:
    # quadratic in a run of spaces. Both forms stay within the cap.
    for text in ("metrics.loss = 1" + " " * 3900 + "x", "metrics.loss = 1" + " " * 3900 + "'"):
        started = time.perf_counter()
        assert_names(api.get("/api/runs", filter=text), "filter")
        assert time.perf_counter() - started < 2


# ---------------------------------------------------------------- numbers and shapes on /mlflow


@pytest.mark.parametrize(
    "endpoint, body, parameter",
    [
        ("runs/search", '{"max_results": 1e400}', "max_results"),
        ("runs/search", '{"max_results": "²"}', "max_results"),
        ("runs/search", '{"page_token": "²"}', "page_token"),
        ("runs/search", '{"page_token": "99999999999999999999999"}', "page_token"),
        ("runs/search", '{"order_by": {"a": 1}}', "order_by"),
        ("runs/search", '{"order_by": 5}', "order_by"),
        ("runs/search", '{"order_by": [["x"]]}', "order_by[0]"),
        ("runs/search", '{"experiment_ids": [{}]}', "experiment_ids[0]"),
        ("runs/search", '{"filter": 5}', "filter"),
        ("runs/create", '{"start_time": "²"}', "start_time"),
        ("runs/create", '{"start_time": 1e400}', "start_time"),
        ("runs/create", '{"tags": [{"key": ["x"], "value": "y"}]}', "tags[0].key"),
        ("runs/create", '{"tags": {"key": "x"}}', "tags"),
        ("experiments/create", '{"name": ["x"]}', "name"),
    ],
)
def test_mlflow_messages_are_typed_before_any_service_runs(mlflow, endpoint, body, parameter):
    message = assert_mlflow_names(mlflow(endpoint, raw=body), parameter)["message"]
    assert message.startswith(("Invalid value", "Missing value"))


@pytest.mark.parametrize(
    "body, parameter",
    [
        (
            {"metrics": [{"key": "loss", "value": 1, "timestamp": 1e400, "step": 0}]},
            "metrics[0].timestamp",
        ),
        (
            {"metrics": [{"key": "loss", "value": 1, "timestamp": 1, "step": 1e400}]},
            "metrics[0].step",
        ),
        (
            {"metrics": [{"key": "loss", "value": 1, "timestamp": 1, "step": "²"}]},
            "metrics[0].step",
        ),
        (
            {"metrics": [{"key": "loss", "value": "x", "timestamp": 1, "step": 0}]},
            "metrics[0].value",
        ),
        ({"params": [{"key": ["lr"], "value": "1"}]}, "params[0].key"),
        ({"params": [{"key": {"a": 1}, "value": "1"}]}, "params[0].key"),
        ({"params": [{"key": "lr", "value": ["1"]}]}, "params[0].value"),
        ({"metrics": {"key": "loss"}}, "metrics"),
    ],
)
def test_mlflow_log_batch_items_are_typed(mlflow, run, body, parameter):
    assert_mlflow_names(mlflow("runs/log-batch", {"run_id": str(run.pk), **body}), parameter)


def test_mlflow_numbers_in_query_strings(mlflow, run):
    for query, parameter in (
        ({"max_results": "1e400"}, "max_results"),
        ({"max_results": "²"}, "max_results"),
        ({"page_token": "²"}, "page_token"),
        ({"max_results": HUGE}, "max_results"),
    ):
        r = mlflow("metrics/get-history", run_id=str(run.pk), metric_key="loss", **query)
        assert_mlflow_names(r, parameter)
    r = mlflow("experiments/search", max_results="٣")
    assert_mlflow_names(r, "max_results")


def test_mlflow_run_update_end_time(mlflow, run):
    for end in ('"²"', "1e400", str(2**63)):
        raw = f'{{"run_id": "{run.pk}", "end_time": {end}}}'
        assert_mlflow_names(mlflow("runs/update", raw=raw), "end_time")


def test_a_non_finite_metric_value_is_still_dropped_not_refused(mlflow, run):
    run.status = run.Status.RUNNING
    run.save(update_fields=["status"])
    body = {
        "run_id": str(run.pk),
        "metrics": [
            {"key": "loss", "value": "NaN", "timestamp": 1, "step": 0},
            {"key": "loss", "value": 2.5, "timestamp": 1, "step": 1},
        ],
    }
    r = mlflow("runs/log-batch", body)
    assert r.status_code in (200, 400), r.content
    if r.status_code == 400:  # a queued run takes no points: the service's rule, not a shape
        assert "parameter" not in r.json()["message"]


# ---------------------------------------------------------------------- model names


@pytest.mark.parametrize("length", [MAX_REF_LENGTH + 1, 5000])
def test_a_base_model_name_too_long_is_the_missing_model_answer(api, mlflow, length):
    name = "a" * length
    missing = api.post(
        "/api/experiments/estimate", {"base_model": "no-such/x--y", "technique": "lora"}
    ).json()
    r = api.post("/api/experiments/estimate", {"base_model": name, "technique": "lora"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "base_model"
    assert r.json()["detail"].split("'")[-1] == missing["detail"].split("'")[-1]
    r = mlflow("runs/create", {"tags": [{"key": "finetune_hub.base_model", "value": name}]})
    assert r.status_code == 400 and "is not an available base model" in r.json()["message"]


def test_an_os_error_while_looking_is_not_found(monkeypatch, settings, model_root):
    from pathlib import Path as P

    from finetune_hub.errors import ServiceError
    from inference import base_models

    def boom(self):
        raise OSError(36, "File name too long")

    monkeypatch.setattr(P, "is_file", boom)
    with pytest.raises(ServiceError) as raised:
        base_models.parse("some-folder-x" + "/x" * 10 + "-")
    assert "is not an available base model" in raised.value.detail


# ---------------------------------------------------------------------- the dashboard


@pytest.mark.parametrize("ids", [HUGE, "²", "1,٣", str(2**63)])
def test_the_compare_page_answers_bad_ids_with_a_400_naming_them(browser_client, run, ids):
    r = browser_client.get("/runs/compare/", {"ids": f"{run.pk},{ids}"})
    assert r.status_code == 400 and "ids" in r.content.decode()


def test_a_dataset_diff_with_bad_version_numbers_is_a_400(browser_client, run):
    dataset = run.experiment.dataset_version.dataset_id
    r = browser_client.get(f"/datasets/{dataset}/diff/", {"a": HUGE, "b": "1"})
    assert r.status_code == 400 and "a must be a whole number" in r.content.decode()
    # not a number at all ("²" is no ASCII digit): the page before two versions are chosen
    assert browser_client.get(f"/datasets/{dataset}/diff/", {"a": "²", "b": "1"}).status_code == 200


# ---------------------------------------------------------------------- the guard

# Request-side modules: where a client's value arrives. Each int( or float( in them is a
# client value read past finetune_hub.bounds, unless allowed here with its reason.
REQUEST_SIDE = [
    *ROOT.glob("*/api.py"),
    *ROOT.glob("*/views.py"),
    *ROOT.glob("*/selectors.py"),
    *(ROOT / "experiments" / "mlflow").glob("*.py"),
    ROOT / "experiments" / "run_filter.py",
    ROOT / "experiments" / "run_table.py",
    ROOT / "finetune_hub" / "pagination.py",
]
ALLOWED = {
    # (module, the call as written): why it reads no client value
    ("experiments/mlflow/protocol.py", "int(dt.timestamp() * 1000)"): "a stored time, out",
}


def _calls(source: str) -> list[str]:
    return [
        ast.unparse(node)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("int", "float")
    ]


def test_request_side_modules_read_no_client_value_with_int_or_float():
    found = []
    for path in REQUEST_SIDE:
        name = str(path.relative_to(ROOT))
        found += [(name, call) for call in _calls(path.read_text()) if (name, call) not in ALLOWED]
    assert found == [], "parse client values with finetune_hub.bounds: " + repr(found)
    assert len(REQUEST_SIDE) > 15


def test_the_guard_sees_a_planted_int_and_float():
    planted = "def view(request):\n    return int(request.GET['page']), float(request.GET['x'])\n"
    assert _calls(planted) == ["int(request.GET['page'])", "float(request.GET['x'])"]
