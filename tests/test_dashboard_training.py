import pytest

from experiments import services
from experiments.models import Experiment, TrainingRun
from tests.support.training_helpers import make_experiment, make_version


def test_experiment_form_creates_and_queues(browser_client, team, owner, tiny_model, cpu_worker):
    version = make_version(team, owner)
    page = browser_client.get("/experiments/new/")
    assert page.status_code == 200 and str(version) in page.content.decode()
    r = browser_client.post(
        "/experiments/new/",
        {
            "team": team.pk,
            "name": "from-form",
            "dataset_version": version.pk,
            "base_model": tiny_model,
            "technique": "lora",
            "hp_lora_r": "8",
            "hp_max_steps": "4",
            "hp_max_length": "128",
            "hp_use_dora": "1",
            "hp_gpus": "2",
        },
    )
    experiment = Experiment.objects.get(name="from-form")
    assert r.status_code == 302 and experiment.hyperparameters["lora_r"] == 8
    assert experiment.hyperparameters["gpus"] == 2 and experiment.estimate["cuda"]["gpus"] == 2
    assert experiment.hyperparameters["use_dora"] is True
    assert browser_client.get(f"/experiments/{experiment.pk}/").status_code == 200
    r = browser_client.post(f"/experiments/{experiment.pk}/runs/", {"priority": "2"})
    run = TrainingRun.objects.get(experiment=experiment)
    assert r["Location"] == f"/runs/{run.pk}/" and run.priority == 2
    assert browser_client.get(f"/runs/{run.pk}/").status_code == 200
    assert browser_client.get("/runs/").status_code == 200
    assert browser_client.get(f"/runs/compare/?ids={run.pk}").status_code == 200
    browser_client.post(f"/runs/{run.pk}/priority/", {"priority": "7", "next": "/runs/"})
    run.refresh_from_db()
    assert run.priority == 7
    browser_client.post(f"/runs/{run.pk}/cancel/")
    run.refresh_from_db()
    assert run.status == "cancelled"


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("hp_learning_rate", "fast", "hyperparameters.learning_rate"),
        ("hp_lora_r", "0", "hyperparameters.lora_r"),
    ],
)
def test_experiment_form_shows_field_errors(
    browser_client, team, owner, tiny_model, field, value, expected
):
    version = make_version(team, owner)
    r = browser_client.post(
        "/experiments/new/",
        {
            "team": team.pk,
            "name": "bad",
            "dataset_version": version.pk,
            "base_model": tiny_model,
            "technique": "lora",
            field: value,
        },
    )
    assert r.status_code == 422 and expected in r.content.decode()
    assert not Experiment.objects.exists()


def test_training_pages_refuse_outsiders(browser_client, team, owner, tiny_model, outsider):
    experiment = make_experiment(team, owner, tiny_model)
    run = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    browser_client.force_login(outsider)
    for path in [
        f"/experiments/{experiment.pk}/",
        f"/runs/{run.pk}/",
        f"/runs/compare/?ids={run.pk}",
    ]:
        assert browser_client.get(path).status_code == 404, path
    for path in [f"/experiments/{experiment.pk}/runs/", f"/runs/{run.pk}/cancel/"]:
        assert browser_client.post(path).status_code == 404, path
    assert "exp-" not in browser_client.get("/experiments/").content.decode()
    assert f"#{run.pk}<" not in browser_client.get("/runs/table/").content.decode()
    run.refresh_from_db()
    assert run.status == "queued"


def test_unknown_run_action_is_404(browser_client, team, owner, tiny_model):
    run = services.run_enqueue(
        experiment=make_experiment(team, owner, tiny_model), by=owner, dispatch=False
    )
    assert browser_client.post(f"/runs/{run.pk}/explode/").status_code == 404


def test_the_run_table_shows_a_bad_filter_as_a_message(browser_client, team, owner, tiny_model):
    from experiments import metric_store

    run = services.run_enqueue(
        experiment=make_experiment(team, owner, tiny_model), by=owner, dispatch=False
    )
    metric_store.points_ingest([(run.pk, 1, "loss", 2.5)])
    page = browser_client.get("/runs/table/", {"filter": "metrics.loss < 3", "keys": "loss"})
    assert page.status_code == 200 and f"#{run.pk}<" in page.content.decode()
    assert "2.5000" in page.content.decode()
    bad = browser_client.get("/runs/table/", {"filter": "metrics.loss ~ 3", "sort": "x"})
    assert bad.status_code == 200 and "filter clause 1" in bad.content.decode()
    assert browser_client.get("/runs/table/", {"sort": "nonsense"}).status_code == 200


def test_the_run_table_shows_the_chosen_metric_and_hyperparameter_columns(
    browser_client, team, owner, tiny_model
):
    """The column chooser picks metric and hyperparameter columns and hides fixed ones; the
    choice stays in the session across later requests; each chosen column's header sorts by
    it, ascending then descending; malformed names are dropped, not run."""
    import re

    from experiments import metric_store

    runs = [
        services.run_enqueue(
            experiment=make_experiment(team, owner, tiny_model, learning_rate=lr),
            by=owner,
            dispatch=False,
        )
        for lr in (0.003, 0.001, 0.002)
    ]
    metric_store.points_ingest(
        [(r.pk, 1, "acc", v) for r, v in zip(runs, (0.5, 0.9, 0.7), strict=True)]
    )
    page = browser_client.get("/runs/table/")
    html = page.content.decode()
    # Offered: what the page's runs logged and were trained with.
    assert 'name="metric" value="acc"' in html and 'name="param" value="learning_rate"' in html
    chosen = {
        "columns": "1",
        "metric": ["acc", "bad name;drop"],
        "param": ["learning_rate", "__class__.x y"],
        "show": ["status"],
    }
    html = browser_client.get("/runs/table/", chosen).content.decode()
    headers = re.findall(r"<th[^>]*>(?:<a[^>]*>)?([^<]*)", html.split('id="runs"')[1])
    assert [h.strip() for h in headers] == ["", "Run", "Status", "acc", "learning_rate"]
    cells = re.findall(r'<td class="mono">([^<]*)</td>', html)
    assert cells == ["0.002", "0.001", "0.003"]  # newest first
    # The choice stays: a later request with only a sort keeps the same columns.
    html = browser_client.get("/runs/table/", {"sort": "params.learning_rate"}).content.decode()
    assert re.findall(r'<td class="mono">([^<]*)</td>', html) == ["0.001", "0.002", "0.003"]
    assert "?sort=-params.learning_rate" in html and "learning_rate ▲" in html
    html = browser_client.get("/runs/table/", {"sort": "-metrics.acc"}).content.decode()
    assert re.findall(r'<td class="num">([^<]*)</td>', html) == ["0.9000", "0.7000", "0.5000"]
    assert "acc ▼" in html and "?sort=metrics.acc" in html
    assert ">Experiment<" not in html and ">Queued<" not in html
    # A link naming only metric columns keeps the rest of the choice.
    html = browser_client.get("/runs/table/", {"keys": "loss"}).content.decode()
    headers = re.findall(r"<th[^>]*>(?:<a[^>]*>)?([^<]*)", html.split('id="runs"')[1])
    assert [h.strip() for h in headers] == ["", "Run", "Status", "loss", "learning_rate"]


def test_the_run_log_drops_terminal_escape_codes(tmp_path):
    from experiments.training.reporting import log_tail

    log = tmp_path / "train.log"
    log.write_bytes(
        b"\x1b[32mINFO\x1b[0m starting\n 10%|\x1b[A\x1b[2K### | 1/10\r 20%|## | 2/10\n"
        b"\x1b]0;title\x07done\n"
    )
    assert log_tail(log) == "INFO starting\n 20%|## | 2/10\ndone"


def test_the_eta_waits_for_a_step_after_the_first():
    from types import SimpleNamespace

    from experiments.training.reporting import RunReporter

    reporter = RunReporter.__new__(RunReporter)
    reporter.first_step, reporter.supervisor_alive, reporter.main = None, lambda: True, True
    reporter.last_flush, reporter.points = float("inf"), []
    reporter.last_system = float("inf")
    state = SimpleNamespace(global_step=1, max_steps=10)
    reporter.on_step_end(None, state, None)
    assert reporter._eta(state) is None  # the first step is warm-up, not a rate
    reporter.started -= 2.0  # the second step took two seconds
    state.global_step = 2
    assert abs(reporter._eta(state) - 16.0) < 0.5


def test_a_failed_experiment_form_keeps_every_value_and_shows_each_error_beside_its_field(
    browser_client, team, owner, tiny_model
):
    version = make_version(team, owner)
    post = {
        "team": team.pk,
        "name": "kept-name",
        "dataset_version": version.pk,
        "base_model": tiny_model,
        "technique": "lora",
        "notes": "kept notes",
        "hp_learning_rate": "fast",
        "hp_lora_r": "sixteen",
        "hp_max_steps": "12",
        "hp_packing": "off",
        "hp_gradient_checkpointing": "1",
    }
    r = browser_client.post("/experiments/new/", post)
    assert r.status_code == 422
    page = r.content.decode()
    assert 'value="kept-name"' in page and "kept notes" in page and 'value="12"' in page
    assert (
        '<option value="off" selected>' in page
        and 'name="hp_gradient_checkpointing" value="1" checked' in page
    )
    assert 'id="err_learning_rate"' in page and 'id="err_lora_r"' in page  # both, beside each
    assert 'placeholder="default: 16"' in page  # lora_r's default shown
    assert not Experiment.objects.filter(name="kept-name").exists()


def test_a_cancel_signal_stops_training_after_the_step_and_writes_the_logged_points(
    team, owner, tiny_model
):
    """The training process's SIGTERM handler sets STOP: the reporter asks the trainer to
    stop after the current step, and the points it holds are written, not lost."""
    import signal
    from types import SimpleNamespace

    from experiments.models import MetricPoint
    from experiments.training import reporting
    from experiments.training.child import main  # noqa: F401 (the handler is installed there)
    from experiments.training.reporting import RunReporter

    run = services.run_enqueue(
        experiment=make_experiment(team, owner, tiny_model), by=owner, dispatch=False
    )
    reporter = RunReporter.__new__(RunReporter)
    reporter.run, reporter.first_step, reporter.supervisor_alive = run, 3, lambda: True
    reporter.main = True
    reporter.last_flush, reporter.last_system = float("inf"), float("inf")
    reporter.points = [(run.pk, 7, "loss", 1.25, None)]
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: reporting.STOP.set())
    try:
        signal.raise_signal(signal.SIGTERM)
        control = SimpleNamespace(should_training_stop=False)
        reporter.on_step_end(None, SimpleNamespace(global_step=8, max_steps=100), control)
        assert control.should_training_stop
        reporter.flush_points()
        assert list(MetricPoint.objects.filter(run=run).values_list("step", "value")) == [(7, 1.25)]
    finally:
        reporting.STOP.clear()
        signal.signal(signal.SIGTERM, previous)


def test_the_experiment_list_counts_runs_by_status(browser_client, team, owner):
    from experiments import tracked

    project = tracked.project_for(team=team, name="many", by=owner)
    for status in ("succeeded", "succeeded", "running"):
        run = tracked.run_start(experiment=project, by=owner)
        if status != "running":
            tracked.run_end(run=run, status=status, by=owner)
    page = browser_client.get("/experiments/").content.decode()
    assert ">3</a>" in page and "2 succeeded" in page and "1 running" in page
    assert page.count('class="badge succeeded"') == 1  # one count, not a badge per run
