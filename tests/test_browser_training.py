import pytest

from experiments.models import Experiment, TrainingRun
from experiments.training.runner import train_next_run
from tests.support.browser import log_in, shot
from tests.support.training_helpers import make_version

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_create_an_experiment_queue_it_and_watch_the_curves(
    page,
    team,
    owner,
    tiny_model,
    cpu_worker,
):
    make_version(team, owner)
    log_in(page, "owner", "owner-pass-123")
    page.click("header >> text=Experiments")
    page.click("text=New experiment")
    page.fill("#name", "browser-lora")
    page.fill("#base_model", tiny_model)
    page.select_option("#technique", "lora")
    page.fill("#hp_max_steps", "6")
    page.fill("#hp_max_length", "128")
    page.fill("#hp_lora_r", "4")
    page.wait_for_selector("#estimate table")  # the live estimate answered
    assert "Trainable" in page.inner_text("#estimate")
    page.fill("#hp_gpus", "2")  # the estimate per GPU, and for all of them
    page.wait_for_selector("#estimate >> text=Total on each of 2 GPUs")
    page.fill("#hp_gpus", "")
    page.wait_for_selector("#estimate >> text=Total on a GPU")
    assert page.is_hidden("#hp_beta")  # DPO's field is hidden for LoRA
    page.click("button:has-text('Create experiment')")
    page.wait_for_selector("h1:has-text('browser-lora')")
    experiment = Experiment.objects.get(name="browser-lora")
    assert experiment.hyperparameters["lora_r"] == 4

    page.click("button:has-text('Queue a run')")
    page.wait_for_url("**/runs/*/")
    run = TrainingRun.objects.get(experiment=experiment)
    assert page.inner_text("#status") == "queued"
    train_next_run(run_id=run.pk)  # what the worker does with the queue token
    page.reload()
    page.wait_for_selector("#chart-loss .scatterlayer .trace")
    assert page.inner_text("#status") == "succeeded"
    steps = page.eval_on_selector_all(
        "#checkpoints tr td:first-child", "cells => cells.map(c => c.textContent.trim())"
    )
    expected = [str(c.step) for c in run.checkpoints.all()]
    assert expected and steps == expected
    shot(page, "run-checkpoints")


def test_tick_runs_in_the_run_table_and_compare_more_than_a_page_of_them(
    page, team, owner, tiny_model
):
    """The Runs page sorts by a metric and filters by a hyperparameter; ticked runs open the
    comparison, whose chart draws every run's curves across several API pages."""
    from tests.support.training_helpers import many_runs

    runs = many_runs(team, owner, tiny_model, 130, steps=20)  # the chart takes 100 runs a page
    log_in(page, "owner", "owner-pass-123")
    page.click("header >> text=Runs")
    page.fill("#filter", "metrics.loss < 22")  # run i's last loss is i + 19: the first three
    page.fill("#sort", "-metrics.loss")
    page.click("button:has-text('Apply')")
    page.wait_for_selector("#runs tr:nth-child(4)")
    shown = page.eval_on_selector_all(
        "#runs tr td:nth-child(2)", "cells => cells.map(c => c.textContent.trim())"
    )
    assert shown == [f"#{runs[2].pk}", f"#{runs[1].pk}", f"#{runs[0].pk}"]
    # The column chooser: hide a fixed column, add a hyperparameter; its header sorts.
    page.click("#column-chooser summary")
    page.uncheck("input[name=show][value=experiment]")
    page.check("input[name=param][value=max_steps]")
    page.click("button:has-text('Apply')")
    page.wait_for_selector("#runs th.param-col")
    headers = page.eval_on_selector_all("#runs th", "hs => hs.map(h => h.textContent.trim())")
    assert "Experiment" not in headers and headers[-3] == "max_steps"
    # Ascending: the lowest last loss first.
    page.click("#runs th.metric-col a[href*='sort=metrics.loss&']")
    page.wait_for_url("**sort=metrics.loss**")
    assert page.inner_text("#runs tr:nth-child(2) td:nth-child(2)") == f"#{runs[0].pk}"
    assert page.inner_text("#runs tr:nth-child(2) td.mono") == "6"
    page.fill("#filter", "metrics.loss <")
    page.click("button:has-text('Apply')")
    page.wait_for_selector("#filter-error")
    assert "filter clause 1" in page.inner_text("#filter-error")

    page.fill("#filter", "")
    page.click("button:has-text('Apply')")
    page.wait_for_selector("#runs tr:nth-child(40)")
    for box in page.query_selector_all("input.pick")[:2]:
        box.check()
    page.click("#compare-selected")
    page.wait_for_selector("#chart-compare .scatterlayer .trace")
    assert page.eval_on_selector("#chart-compare", "c => c.data.length") == 4

    ids = ",".join(str(r.pk) for r in runs)
    page.goto(f"{page.url.split('/runs/')[0]}/runs/compare/?ids={ids}")
    page.wait_for_function("document.getElementById('chart-compare').data?.length === 260")
    assert "130 runs" in page.inner_text("#compare-count")


def test_a_run_trained_elsewhere_shows_beside_queued_ones_with_its_curves(page, team, owner):
    """A tracked run (reported by a script's client) is listed on the Runs page, marked
    tracked, and its page draws its curves and shows its parameters, with no queue actions."""
    from experiments import tracked

    project = tracked.project_for(team=team, name="axolotl-runs", by=owner)
    run = tracked.run_start(
        experiment=project, by=owner, name="ax-1", params={"lr": 0.0002}, tags={"gpu": "a100"}
    )
    keys = ("loss", "eval_loss", "system/gpu0_memory_gib", "accuracy")
    points = [(s, key, 3.0 - s / 50, None) for s in range(100) for key in keys]
    tracked.points_log(run=run, points=points, by=owner)
    log_in(page, "owner", "owner-pass-123")
    page.click("header >> text=Runs")
    page.wait_for_selector("#runs .badge:has-text('tracked')")
    page.click(f"#runs a:has-text('#{run.pk}')")
    page.wait_for_selector("#tracked")
    page.wait_for_selector("#chart-loss .scatterlayer .trace")
    # Every logged metric is charted: system metrics beside the loss, the rest together.
    page.wait_for_selector("#chart-memory .scatterlayer .trace")
    assert page.eval_on_selector("#chart-other", "c => c.data.map(t => t.name)") == ["accuracy"]
    assert page.is_hidden("#chart-grad")
    assert "0.0002" in page.inner_text("#run-params") and "a100" in page.inner_text("#run-tags")
    assert page.query_selector("#cancel") is None and page.query_selector("#resume") is None
    page.click("h1 a:has-text('axolotl-runs')")
    page.wait_for_selector("text=tracked project")
    assert page.query_selector("text=Queue a run") is None


def test_compare_any_metric_smoothed_on_a_log_scale_with_the_params_that_differ(page, team, owner):
    from experiments import tracked

    project = tracked.project_for(team=team, name="sweep", by=owner)
    runs = []
    for lr in (0.1, 0.01):
        run = tracked.run_start(
            experiment=project, by=owner, params={"lr": lr, "optim": "adamw", "seed": 1}
        )
        points = [(s, "loss", 10.0 / (s + 1) + (s % 2), None) for s in range(50)]
        points += [(s, "accuracy", s / 50, None) for s in range(1, 50)]
        points += [(49, "final_bleu", 30.0, None)]
        tracked.points_log(run=run, points=points, by=owner)
        runs.append(run)
    log_in(page, "owner", "owner-pass-123")
    page.goto(f"/runs/compare/?ids={runs[0].pk},{runs[1].pk}")
    page.wait_for_function("document.getElementById('chart-compare').data?.length === 2")
    # The parameter table shows what differs (lr), the shared ones (optim, seed) on request.
    assert page.is_visible("#params th:has-text('lr')")
    assert page.is_hidden("#params th:has-text('optim')")
    page.check("#show-same")
    assert page.is_visible("#params th:has-text('optim')")
    raw = page.eval_on_selector("#chart-compare", "c => c.data[0].y.slice(0, 4)")
    page.fill("#smoothing", "0.9")
    page.dispatch_event("#smoothing", "input")
    smoothed = page.eval_on_selector("#chart-compare", "c => c.data[0].y.slice(0, 4)")
    assert smoothed[0] == raw[0] and smoothed[1] != raw[1]  # an average from the first point
    page.check("#log-scale")
    assert page.eval_on_selector("#chart-compare", "c => c.layout.yaxis.type") == "log"
    page.select_option("#metric", "final_bleu")
    page.wait_for_function(
        "document.getElementById('chart-compare').data?.[0]?.name.endsWith('final_bleu')"
    )
    assert page.eval_on_selector("#chart-compare", "c => c.data.map(t => t.mode)") == [
        "markers",
        "markers",
    ]


def test_rlhf_pick_a_reward_model_for_grpo_and_see_reward_and_kl_curves(
    page, team, owner, outsider, tiny_model
):
    """The form offers the team's finished reward models for GRPO (another team's never), the
    experiment page links the one chosen, and a GRPO run's page draws reward and KL while a
    reward model's draws its held-out pairwise accuracy."""
    from experiments import metric_store
    from finetune_hub.models import Team
    from tests.support.rlhf import finished_reward_model

    reward = finished_reward_model(team, owner, tiny_model)
    theirs = finished_reward_model(Team.objects.get(name="Other"), outsider, tiny_model)
    make_version(team, owner)
    log_in(page, "owner", "owner-pass-123")
    page.goto("/experiments/new/")
    page.fill("#name", "browser-grpo")
    page.fill("#base_model", tiny_model)
    page.select_option("#technique", "grpo")
    assert page.is_visible("#hp_reward_run") and page.is_hidden("#hp_beta")
    offered = page.eval_on_selector_all("#hp_reward_run option", "o => o.map(x => x.value)")
    assert str(reward.pk) in offered and str(theirs.pk) not in offered
    page.wait_for_selector("#estimate >> text=reward_run")  # GRPO needs one: named at once
    page.select_option("#hp_reward_run", str(reward.pk))
    page.fill("#hp_max_length", "128")
    page.fill("#hp_max_completion_length", "16")
    page.wait_for_selector("#estimate table")
    page.click("button:has-text('Create experiment')")
    page.wait_for_selector("h1:has-text('browser-grpo')")
    assert page.inner_text("#reward-run") == f"run #{reward.pk}"
    experiment = Experiment.objects.get(name="browser-grpo")
    assert experiment.hyperparameters["reward_run"] == reward.pk

    run = TrainingRun.objects.create(
        experiment=experiment, created_by=owner, status=TrainingRun.Status.SUCCEEDED
    )
    keys = ("loss", "reward", "eval_reward", "kl", "completion_length")
    now = 1_700_000_000_000
    metric_store.points_ingest(
        [(run.pk, s, k, 1.0 + s / 10, now + s) for s in range(1, 6) for k in keys]
    )
    metric_store.points_ingest(
        [(reward.pk, s, "eval_pairwise_accuracy", 0.5 + s / 20, now + s) for s in range(6)]
    )
    page.goto(f"/runs/{run.pk}/")
    page.wait_for_selector("#chart-reward .scatterlayer .trace")
    names = page.eval_on_selector("#chart-reward", "c => c.data.map(t => t.name)")
    assert set(names) == {"reward (train)", "reward (held-out prompts)", "KL from base"}
    assert page.is_hidden("#chart-preference")
    shot(page, "grpo-run")
    page.goto(f"/runs/{reward.pk}/")
    page.wait_for_selector("#chart-preference .scatterlayer .trace")
    assert "scores answers" in page.inner_text("#reward-model-use")
    assert page.inner_text("#headline") == "0.750"  # the last held-out pairwise accuracy


def test_a_queue_button_clicked_again_while_waiting_queues_one_run(
    page, team, owner, tiny_model, monkeypatch
):
    """A slow answer, a second click: the browser sends the form again while the first is
    in flight. The second request carries the form's idempotency key, waits for the first
    one's answer and gets it: the browser shows that run, and no second run is queued."""
    import time

    from experiments import views
    from tests.support.training_helpers import make_experiment

    enqueue = views.services.run_enqueue

    def slow_enqueue(**kwargs):
        time.sleep(1.5)
        return enqueue(**kwargs)

    monkeypatch.setattr(views.services, "run_enqueue", slow_enqueue)
    experiment = make_experiment(team, owner, tiny_model)
    log_in(page, "owner", "owner-pass-123")
    page.goto(f"/experiments/{experiment.pk}/")
    # Both clicks in the page's own script: Playwright's would wait for the navigation.
    page.evaluate(
        """() => {
            const button = [...document.querySelectorAll("button")]
                .find(b => b.textContent.includes("Queue a run"));
            button.click();
            setTimeout(() => button.click(), 300);
        }"""
    )
    page.wait_for_selector("#status")  # the run page (the first navigation was cancelled)
    [run] = TrainingRun.objects.filter(experiment=experiment)
    assert page.url.endswith(f"/runs/{run.pk}/")
