"""Code execution through metric names.

`evaluate.load` runs the Python script it is given. The attack class: any metric name in a
request (evaluations, comparisons, the dashboard forms) that is a path to a file a member can
write (an uploaded dataset whose lines are also Python), a relative path, or a hub id whose
script would be downloaded and run. Names come from an allow-list, checked before anything is
imported; hub metrics only when a site admin turns them on, paths never from a request."""

import pytest

from evaluation import metrics
from evaluation.models import Comparison, EvaluationRun
from tests.support.training_helpers import make_version

PAYLOAD = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


@pytest.fixture
def version(team, owner):
    return make_version(team, owner)


@pytest.fixture
def planted(settings, tmp_path):
    """Python files a member could have placed on the server, and the marker they write."""
    marker = tmp_path / "executed"
    scripts = []
    for folder in (settings.ARTIFACT_ROOT / "datasets" / "99" / "v1", tmp_path / "evil"):
        folder.mkdir(parents=True)
        for name in ("evil.py", "evil.csv", "evil.jsonl"):
            (folder / name).write_text(PAYLOAD.format(marker=str(marker)))
            scripts.append(folder / name)
    return marker, scripts


@pytest.fixture
def no_evaluate_load(monkeypatch):
    calls = []
    import evaluate

    monkeypatch.setattr(evaluate, "load", lambda *a, **k: calls.append(a) or 1 / 0)
    metrics.load.cache_clear()
    yield calls
    metrics.load.cache_clear()


def names(scripts):
    paths = [str(p) for p in scripts]
    return [
        *paths,
        *(str(p.parent) for p in scripts[:1]),
        "../../../tmp/evil.py",
        "./evil.py",
        "evil",
        "someone/metric",  # a hub id: off unless the site admin opts in
        "bleu/../evil",
        "BLEU",
        "bleu ",
        "",
    ]


def test_every_name_outside_the_allow_list_is_refused_before_anything_loads(
    api, version, tiny_model, planted, no_evaluate_load
):
    marker, scripts = planted
    for name in names(scripts):
        evaluation = api.post(
            "/api/evaluations",
            {
                "subject": {"base_model": tiny_model},
                "dataset_version": version.pk,
                "metrics": ["bleu", name],
            },
        )
        assert evaluation.status_code == 422, (name, evaluation.content)
        assert evaluation.json()["errors"][0]["field"] == "metrics"
        comparison = api.post(
            "/api/comparisons",
            {
                "subjects": [{"base_model": tiny_model}, {"base_model": "embedded"}],
                "dataset_version": version.pk,
                "metrics": [name],
            },
        )
        assert comparison.status_code == 422, (name, comparison.content)
    assert not marker.exists() and no_evaluate_load == []
    assert not EvaluationRun.objects.exists() and not Comparison.objects.exists()


def test_the_dashboard_form_refuses_the_same_names(
    browser_client, version, tiny_model, planted, no_evaluate_load
):
    marker, scripts = planted
    for name in names(scripts)[:4]:
        r = browser_client.post(
            "/evaluations/new/",
            {
                "subject": f"base_model:{tiny_model}",
                "dataset_version": version.pk,
                "split": "eval",
                "metrics": ["bleu", name],
            },
            follow=True,
        )
        assert r.status_code == 200 and b"unknown metric" in r.content.lower(), name
    assert not marker.exists() and not EvaluationRun.objects.exists()


def test_loading_an_unlisted_name_is_refused_even_past_validation(planted, no_evaluate_load):
    """A worker given a stored name re-checks it: the allow-list sits in `load` itself."""
    _, scripts = planted
    for name in names(scripts):
        with pytest.raises(metrics.UnknownMetric):
            metrics.load(name)
    assert no_evaluate_load == []


def test_hub_metrics_only_when_the_site_admin_opts_in_and_paths_never(settings, planted):
    _, scripts = planted
    with pytest.raises(metrics.UnknownMetric):
        metrics.source("someone/metric")
    settings.ALLOW_HUB_METRICS = True
    assert metrics.source("someone/metric") == "someone/metric"
    for path in [str(p) for p in scripts] + ["../evil", "./evil.py", "a/b/c", "bleu/../x"]:
        with pytest.raises(metrics.UnknownMetric):
            metrics.source(path)


def test_an_operator_adds_a_local_module_by_name(settings):
    settings.EXTRA_METRIC_MODULES = {"house_style": "/opt/metrics/house_style.py"}
    assert metrics.source("house_style") == "/opt/metrics/house_style.py"
    assert "house_style" in metrics.available()
    with pytest.raises(metrics.UnknownMetric):
        metrics.source("/opt/metrics/house_style.py")  # the path itself is not a name


def test_the_local_modules_load_and_score(version):
    for name in metrics.MODULES:
        assert metrics.load(name).compute(predictions=["a b"], references=["a b"])


def test_refusals_say_what_is_wrong(settings):
    with pytest.raises(metrics.UnknownMetric, match="^a metric name is text$"):
        metrics.source(["bleu"])
    long = "x" * 150
    with pytest.raises(metrics.UnknownMetric) as caught:
        metrics.source(long)
    assert str(caught.value) == (
        f"unknown metric {'x' * 100!r}; choose from {', '.join(metrics.available())}"
    )
    # A hub id may hold dots, but never "..", even where hub metrics are allowed.
    settings.ALLOW_HUB_METRICS = True
    assert metrics.source("someone/metric.v2") == "someone/metric.v2"
    for name in ("someone/x..y", "a..b"):
        with pytest.raises(metrics.UnknownMetric):
            metrics.source(name)
