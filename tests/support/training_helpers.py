import time

from datasets_app.models import Dataset, DatasetVersion
from datasets_app.services import dataset_version_upload
from experiments.services import experiment_create
from tests.support.data import examples, jsonl

FAST = {
    "max_steps": 6,
    "per_device_train_batch_size": 4,
    "save_steps": 3,
    "eval_steps": 3,
    "logging_steps": 1,
    "max_length": 128,
    "warmup_ratio": 0.0,
}


def make_version(team, owner, task="instruction", n=120) -> DatasetVersion:
    dataset = Dataset.objects.create(
        team=team, name=f"{task}-{Dataset.objects.count()}", task=task, created_by=owner
    )
    return dataset_version_upload(
        dataset=dataset, filename="d.jsonl", data=jsonl(examples(task, n)).encode(), by=owner
    )


def make_experiment(team, owner, tiny_model, technique="lora", task="instruction", **params):
    version = make_version(team, owner, task)
    return experiment_create(
        team=team,
        name=f"exp-{technique}-{version.pk}",
        dataset_version=version,
        base_model=tiny_model,
        technique=technique,
        hyperparameters={**FAST, **params},
        by=owner,
    )


def wait_for(condition, timeout=120):
    """condition()'s first true value, polled until timeout seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def queued_run(
    team, owner, tiny_model, version, name: str, hyperparameters: dict, technique: str = "lora"
):
    """A LoRA run queued without a token (the test trains it with train_next_run), in an
    experiment of its own name on the given data."""
    from experiments.services import run_enqueue

    experiment = experiment_create(
        team=team,
        name=name,
        dataset_version=version,
        base_model=tiny_model,
        technique=technique,
        hyperparameters=hyperparameters,
        by=owner,
    )
    return run_enqueue(experiment=experiment, by=owner, dispatch=False)
