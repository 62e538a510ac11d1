"""Every dashboard page opened in Chromium with a team's worth of data: each answers 200,
runs its scripts without an error, draws its charts, and is saved as a screenshot under
the screenshots folder of the pass's state (one per page) for a reviewer to look at."""

import pytest

from experiments import metric_store, tracked
from registry import services as registry
from tests.support.browser import log_in, shot
from tests.support.comparisons import good_and_bad
from tests.support.registry_helpers import trained_run

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def a_teams_data(team, owner, tiny_model) -> dict:
    """A dataset version, two trained runs with curves, a tracked run, a registered model in
    production, scored evaluations and a human comparison: what the pages show."""
    comparison = good_and_bad(team, owner, n=200, min_votes=2)
    first = trained_run(team, owner, tiny_model, seed=1)
    second = trained_run(team, owner, tiny_model, seed=2, experiment=first.experiment)
    metric_store.points_ingest(
        [
            (run.pk, s, key, 3.0 - s / (10 + i))
            for i, run in enumerate((first, second))
            for s in range(1, 30)
            for key in ("loss", "eval_loss")
        ]
    )
    project = tracked.project_for(team=team, name="elsewhere", by=owner)
    elsewhere = tracked.run_start(experiment=project, by=owner, name="ax-1", params={"lr": 2e-4})
    tracked.points_log(
        run=elsewhere, points=[(s, "loss", 2.0 / s, None) for s in range(1, 20)], by=owner
    )
    model = registry.model_create(team=team, name="pages", by=owner)
    shipped = registry.version_register(model=model, run=first, by=owner)
    registry.alias_promote(
        model=model, alias="production", version=shipped, reason="first", by=owner
    )
    version = first.experiment.dataset_version
    evaluation = comparison.subjects.first().evaluation
    return {
        "overview": "/",
        "team": f"/teams/{team.pk}/",
        "new-team": "/teams/new/",
        "tokens": "/tokens/",
        "invitations": "/invitations/",
        "datasets": "/datasets/",
        "new-dataset": "/datasets/new/",
        "dataset": f"/datasets/{version.dataset_id}/",
        "dataset-version": f"/datasets/{version.dataset_id}/v/{version.number}/",
        "experiments": "/experiments/",
        "new-experiment": "/experiments/new/",
        "experiment": f"/experiments/{first.experiment_id}/",
        "runs-table": "/runs/table/",
        "run": f"/runs/{first.pk}/",
        "tracked-run": f"/runs/{elsewhere.pk}/",
        "compare": f"/runs/compare/?ids={first.pk},{second.pk},{elsewhere.pk}",
        "queue": "/runs/",
        "evaluations": "/evaluations/",
        "evaluation": f"/evaluations/{evaluation.pk}/",
        "comparison": f"/comparisons/{comparison.pk}/",
        "review": f"/comparisons/{comparison.pk}/review/",
        "registry": "/registry/",
        "model": "/registry/pages/",
        "model-version": "/registry/pages/v/1/",
        "annotation-desk": "/admin/datasets/example/",
    }


CHARTS = {"run": "#chart-loss", "tracked-run": "#chart-loss", "compare": "#chart-compare"}


def test_every_page_renders_without_a_script_error_and_is_saved(page, team, owner, tiny_model):
    pages = a_teams_data(team, owner, tiny_model)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
    page.on(
        "console",
        lambda m: m.type == "error" and errors.append(f"{page.url}: console: {m.text}"),
    )
    page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.url}: {r.status}"))
    log_in(page, "owner", "owner-pass-123")
    for name, path in pages.items():
        response = page.goto(path)
        assert response.status == 200, (name, response.status)
        page.wait_for_load_state("load")
        if chart := CHARTS.get(name):
            page.wait_for_selector(f"{chart} .scatterlayer .trace")
        assert "Server Error" not in page.content() and "Traceback" not in page.content()
        assert shot(page, name).stat().st_size > 10_000
    assert errors == []
