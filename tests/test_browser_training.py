import pytest

from experiments.models import Experiment, TrainingRun
from experiments.training.runner import train_next_run
from tests.browser import log_in
from tests.training_helpers import make_version

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
    page.screenshot(path="var/screenshot-run.png", full_page=True)
