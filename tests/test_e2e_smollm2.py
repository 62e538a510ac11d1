"""End to end on the real embedded model: SmolLM2-135M-Instruct learns the demo format."""

import pytest

from datasets_app.models import Dataset
from datasets_app.services import dataset_version_upload
from evaluation.comparison_results import auto_results
from evaluation.comparisons import comparison_create
from evaluation.queue import evaluation_execute
from experiments.models import MetricPoint
from experiments.services import experiment_create, run_enqueue
from experiments.training.runner import train_next_run
from finetune_hub.management.commands.demo_data import DEMO_FILE
from finetune_hub.storage import artifact_path

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_lora_on_the_demo_dataset_lowers_the_loss(team, owner, cpu_worker, settings):
    settings.DEFAULT_BASE_MODEL = "embedded"
    dataset = Dataset.objects.create(team=team, name="triage", task="instruction", created_by=owner)
    version = dataset_version_upload(
        dataset=dataset,
        filename=DEMO_FILE.name,
        data=DEMO_FILE.read_bytes(),
        by=owner,
        max_length=256,
    )
    experiment = experiment_create(
        team=team,
        name="e2e",
        dataset_version=version,
        base_model="embedded",
        technique="lora",
        hyperparameters={
            "max_steps": 10,
            "per_device_train_batch_size": 4,
            "logging_steps": 1,
            "learning_rate": 5e-4,
            "warmup_ratio": 0.0,
            "max_length": 256,
            "eval_steps": 1000,
            "save_steps": 1000,
        },
        by=owner,
    )
    run = train_next_run(run_id=run_enqueue(experiment=experiment, by=owner).pk)
    assert run.status == "succeeded", run.error
    losses = list(
        MetricPoint.objects.filter(run=run, key="loss")
        .order_by("step")
        .values_list("value", flat=True)
    )
    assert len(losses) == 10
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, losses
    assert (artifact_path(run.output_path) / "adapter_model.safetensors").exists()
    assert run.base_model_info["gguf_sha256"]

    # The adapter against the base model on the demo eval split, with paired intervals.
    comparison = comparison_create(
        team=team,
        subjects=[{"base_model": "embedded"}, {"run": run.pk}],
        dataset_version=version,
        metric_names=["exact_match", "chrf", "loss"],
        by=owner,
        generation={"max_new_tokens": 24, "batch_size": 16},
    )
    for subject in comparison.subjects.all():
        assert evaluation_execute(evaluation_id=subject.evaluation_id).status == "succeeded"
    tests = {t["metric"]: t for t in auto_results(comparison)["tests"]}
    assert tests["loss"]["difference"] < 0 and tests["loss"]["significant"], tests["loss"]
    assert tests["loss"]["ci_high"] < 0
    assert tests["chrf"]["difference"] > 0, tests["chrf"]
