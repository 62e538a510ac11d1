"""The one run-filter grammar (experiments/run_filter.py): its tokenizer and clauses, its
errors, its quoting rule (a property test), and one filter string giving the same runs
through the run table, GET /api/runs and the MLflow adapter's runs/search."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments import metric_store, run_filter, run_table
from experiments.models import TrainingRun
from experiments.run_filter import Clause, Literal, parse, quote, quote_key
from finetune_hub.auth import token_create
from finetune_hub.errors import ServiceError

# ---------------------------------------------------------------------- the grammar


def one(text: str) -> Clause:
    clauses = parse(text)
    assert len(clauses) == 1, clauses
    return clauses[0]


def shape(text: str) -> list[tuple]:
    return [(c.kind, c.key, c.op, c.value) for c in parse(text)]


def test_a_quoted_value_keeps_and_inside_it():
    assert shape("params.note = 'rock and roll' and metrics.loss < 3") == [
        ("params", "note", "=", Literal("rock and roll", quoted=True)),
        ("metrics", "loss", "<", Literal("3")),
    ]
    assert one('tags.why = "this AND that"').value == Literal("this AND that", quoted=True)
    assert one("params.q = 'it''s'").value == Literal("it's", quoted=True)  # doubled quote
    assert len(parse("metrics.a > 1 AND metrics.b > 2 And metrics.c > 3")) == 3


def test_keys_take_every_mlflow_form():
    for text in (
        "metrics.`my key` > 1",
        "`metrics`.`my key` > 1",
        'metrics."my key" > 1',
        "metric.`my key` > 1",
    ):
        assert (one(text).kind, one(text).key) == ("metrics", "my key"), text
    assert (one("`params`.lr = 1").kind, one("`params`.lr = 1").key) == ("params", "lr")
    for prefix, kind in [
        ("param", "params"),
        ("parameter", "params"),
        ("parameters", "params"),
        ("tag", "tags"),
        ("attribute", "attributes"),
        ("attributes", "attributes"),
        ("attr", "attributes"),
        ("run", "attributes"),
    ]:
        assert one(f"{prefix}.x = 1").kind == kind
    # a key is literal: dots, dashes, slashes and colons stay in it
    assert one("metrics.train/loss-avg:1 < 2").key == "train/loss-avg:1"
    assert one("params.optim.lr = 1").key == "optim.lr"
    # a bare name is an attribute (the run table's dates, MLflow's attributes)
    assert shape("queued_at >= 2026-11-29") == [
        ("attributes", "queued_at", ">=", Literal("2026-11-29"))
    ]
    assert one("metrics.loss<3").op == "<"  # no spaces needed around an operator


def test_every_operator():
    for op in ("=", "!=", "<", "<=", ">", ">="):
        assert one(f"metrics.loss {op} 1").op == op
    assert one("params.o LIKE 'ad%'").op == "LIKE"
    assert one("params.o ilike 'AD%'").op == "ILIKE"
    assert shape("params.o IN ('adamw', \"sgd\", 3)") == [
        ("params", "o", "IN", (Literal("adamw", True), Literal("sgd", True), Literal("3")))
    ]
    assert one("params.o not in ('x')").op == "NOT IN"
    assert shape("tags.x IS NULL") == [("tags", "x", "IS NULL", None)]
    assert shape("tags.x is not null") == [("tags", "x", "IS NOT NULL", None)]


def test_bare_values_are_the_run_tables():
    assert one("tags.stage = final words").value == Literal("final words")
    assert one("params.x = a=b").value == Literal("a=b")
    assert run_filter.literal("0.01") == 0.01 and run_filter.literal("32") == 32
    assert run_filter.literal("true") is True and run_filter.literal("lora") == "lora"
    assert Literal("32", quoted=True).coerced() == "32" and Literal("32").coerced() == 32


@pytest.mark.parametrize(
    "text, problem",
    [
        ("metrics.loss ~ 3", "expected an operator"),
        ("metrics.loss <", "a value is missing after <"),
        ("params.x = 'open", "' at character 12 is never closed"),
        ("metrics.`open > 1", "` at character 9 is never closed"),
        ("foo.x = 1", "'foo' is not a kind of key"),
        ("params.x IN 1", "IN takes a list in parentheses"),
        ("params.x IN (1,,2)", "',' is not a value"),
        ("params.x IN (1, 2,)", "a value is missing after the last comma"),
        ("tags.x IS NULL 3", "nothing follows IS NULL"),
        ("metrics.loss < 3 and and metrics.loss > 1", "an empty clause"),
        ("metrics.`a|b` < 3", "'a|b' is not a key name"),
        ("= 3", "is not a key"),
    ],
)
def test_bad_syntax_names_the_problem(text, problem):
    with pytest.raises(ServiceError) as caught:
        parse(text)
    error = caught.value
    assert error.status == 422 and error.errors[0].field == "filter"
    assert problem in error.detail and error.detail.startswith("filter clause "), error.detail


def test_the_clause_an_error_is_in_is_named():
    with pytest.raises(ServiceError) as caught:
        parse("metrics.loss < 3 and params.x = 'open")
    assert caught.value.detail.startswith("filter clause 2:")
    with pytest.raises(ServiceError) as caught:
        parse(" and ".join(["metrics.loss > 0"] * 21))
    assert caught.value.detail == "filter: at most 20 clauses"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("metrics.loss < 'low'", "a metric compares to a number"),
        ("metrics.loss LIKE '1%'", "metrics compare with"),
        ("queued_at = 2026-01-01", "queued_at compares to a date"),
        ("queued_at >= yesterday", "is not a date"),
        ("status = dancing", "'dancing' is not a status"),
        ("status < running", "status compares with"),
        ("loss < 3", "'loss' is not an attribute"),
    ],
)
def test_the_run_tables_meaning_refuses_what_it_cannot_compare(text, problem):
    with pytest.raises(ServiceError) as caught:
        run_filter.checked(parse(text), statuses=TrainingRun.Status.values)
    assert problem in caught.value.detail and caught.value.errors[0].field == "filter"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_a_quoted_value_round_trips_for_any_text(text):
    clauses = parse(f"params.x = {quote(text)} and metrics.loss > 0")  # and not the end
    assert len(clauses) == 2 and clauses[0].value == Literal(text, quoted=True)
    assert parse(f"tags.x IN ({quote(text)}, {quote(text)})")[0].value == (
        Literal(text, True),
        Literal(text, True),
    )


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9_.\-/: ]{1,40}", fullmatch=True))
def test_a_backquoted_key_round_trips(key):
    assert (
        one(f"metrics.{quote_key(key)} > 1").key,
        one(f"`params`.{quote_key(key)} = 1").key,
    ) == (
        key,
        key,
    )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_parses_or_is_a_filter_error(text):
    try:
        parse(text)
    except ServiceError as error:
        assert error.status == 422 and error.errors[0].field == "filter"


# ---------------------------------------------------------------------- one filter, three doors


def start(api, team, **body):
    r = api.post("/api/runs", {"team": team.pk, "project": "outside", **body})
    assert r.status_code == 201, r.content
    return r.json()["id"]


@pytest.fixture
def world(api, team):
    """Four tracked runs: their params, a metric with a space in its key, and loss."""
    rows = [
        ({"optim": "adamw", "lr": 0.01, "note": "rock and roll"}, 0.3, 2.0, {"kind": "base"}),
        ({"optim": "adamw_torch", "lr": 0.001, "note": "rock"}, 0.6, 1.0, {"kind": "base line"}),
        ({"optim": "sgd", "lr": 0.1, "note": "roll"}, 0.9, None, {"kind": "Tuned"}),
        ({"optim": "SGD", "lr": 0.05}, None, None, {}),
    ]
    ids = []
    for n, (params, loss, eval_loss, tags) in enumerate(rows):
        run = start(api, team, name=f"r{n}", params=params, tags=tags)
        points = [(run, 1, "loss", loss)] if loss is not None else []
        points += [(run, 1, "eval loss", eval_loss)] if eval_loss is not None else []
        metric_store.points_ingest(points)
        ids.append(run)
    return ids


SAME = [
    ("params.note = 'rock and roll'", [0]),
    ('params.note = "rock and roll" and metrics.loss < 0.5', [0]),
    ("params.note != 'rock and roll'", [1, 2]),  # a run without the param matches no clause
    ("metrics.loss < 0.5 or", None),  # bad: "or" is no operator joining clauses
    ("metrics.loss >= 0.6", [1, 2]),
    ("metrics.`eval loss` > 1.5", [0]),
    ("`metrics`.`eval loss` <= 1", [1]),
    ("params.lr < 0.05", [0, 1]),
    ("params.lr = 0.1", [2]),
    ("params.optim IN ('adamw', 'sgd')", [0, 2]),
    ("params.optim NOT IN ('adamw', 'sgd')", [1, 3]),
    ("params.optim LIKE 'adamw%'", [0, 1]),
    ("params.optim LIKE 'adamw_'", []),
    ("params.optim ILIKE 'sgd'", [2, 3]),
    ("params.note IS NULL", [3]),
    ("params.note IS NOT NULL AND metrics.loss > 0.5", [1, 2]),
    ("metrics.loss IS NULL", [3]),
    ("metrics.loss < 'low'", None),
    ("params.x = 'open", None),
    # tags: text, in every door (MLflow's runs/search too)
    ("tags.kind = 'base'", [0]),
    ("tags.kind != 'base'", [1, 2]),
    ("tags.kind LIKE 'base%'", [0, 1]),
    ("tags.kind ILIKE 'tuned'", [2]),
    ("tags.kind IN ('base', 'Tuned')", [0, 2]),
    ("tags.kind IS NULL", [3]),
    ("tags.`kind` = 'base line' AND params.optim LIKE 'adamw%'", [1]),
]


@pytest.mark.parametrize("text, expected", SAME)
def test_one_filter_gives_the_same_runs_through_the_table_the_api_and_mlflow(
    text, expected, world, api, client, owner
):
    newest_first = list(reversed(world))
    want = None if expected is None else [i for i in newest_first if world.index(i) in expected]
    # the run table
    try:
        table = list(run_table.run_table(user=owner, filter=text).values_list("pk", flat=True))
    except ServiceError as error:
        assert want is None, error.detail
        assert error.status == 422 and error.errors[0].field == "filter"
    else:
        assert table == want
    # GET /api/runs
    r = api.get("/api/runs", filter=text)
    if want is None:
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "filter"
    else:
        assert r.status_code == 200, r.json()
        assert [row["id"] for row in r.json()] == want
    # MLflow's runs/search
    token = token_create(user=owner, name="t")[1]
    r = client.post(
        "/mlflow/api/2.0/mlflow/runs/search",
        {"filter": text},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    if want is None:
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    else:
        assert r.status_code == 200, r.json()
        assert [int(run["info"]["run_id"]) for run in r.json().get("runs", [])] == want


def test_mlflow_reads_statuses_by_its_names_and_params_as_logged(world, client, owner):
    TrainingRun.objects.filter(pk=world[0]).update(status=TrainingRun.Status.SUCCEEDED)
    token = token_create(user=owner, name="t")[1]

    def search(text):
        r = client.post(
            "/mlflow/api/2.0/mlflow/runs/search",
            {"filter": text},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        return r.status_code, r.json()

    def ids(text):
        status, body = search(text)
        assert status == 200, body
        return sorted(int(run["info"]["run_id"]) for run in body.get("runs", []))

    assert ids("attributes.status = 'FINISHED'") == [world[0]]
    assert ids("attribute.status != 'FINISHED'") == sorted(world[1:])
    assert ids("status IN ('FINISHED', 'KILLED')") == [world[0]]
    # a param logged as text "0.01" is the number 0.01; MLflow quotes it, and it matches
    assert ids("params.lr = '0.01'") == [world[0]]
    status, body = search("attributes.status = 'DANCING'")
    assert status == 400 and body["message"].startswith("attributes.status: one of")
    # MLflow's other attributes are read by the MLflow door
    assert ids("attributes.start_time > 0") == sorted(world)
    assert ids(f"attributes.run_id = '{world[1]}'") == [world[1]]
    assert ids("attributes.run_name LIKE 'r%' AND attributes.run_name != 'r0'") == sorted(world[1:])
    assert ids("tags.mlflow.runName = 'r2'") == [world[2]]
    assert ids("attributes.user_id = 'owner'") == sorted(world)
    status, body = search("attributes.colour = 'red'")
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"


def test_the_table_filters_on_status_and_tags_with_the_grammar(world, api, owner):
    TrainingRun.objects.filter(pk=world[1]).update(status=TrainingRun.Status.FAILED)
    api.post(f"/api/runs/{world[2]}/tags", {"tags": {"stage": "final cut"}})

    def ids(text):
        r = api.get("/api/runs", filter=text)
        assert r.status_code == 200, r.json()
        return sorted(row["id"] for row in r.json())

    assert ids("status = failed") == [world[1]]
    assert ids("status NOT IN ('failed')") == sorted(world[:1] + world[2:])
    assert ids("tags.stage = final cut") == [world[2]]
    assert ids("tags.stage = 'final cut'") == [world[2]]
    assert ids("tags.stage LIKE 'final%'") == [world[2]]
    assert ids("tags.stage IS NULL") == sorted(world[:2] + world[3:])


def test_the_table_sorts_by_a_tag(world, owner):
    """tags.<name> sorts the run table as metrics and params do (runs without it last)."""
    ids = list(run_table.run_table(user=owner, sort="tags.kind").values_list("pk", flat=True))
    assert ids == [world[2], world[0], world[1], world[3]]  # "Tuned" < "base" < "base line"
    ids = list(run_table.run_table(user=owner, sort="-tags.kind").values_list("pk", flat=True))
    assert ids == [world[1], world[0], world[2], world[3]]
