import time
from collections import Counter, defaultdict

from safetensors.torch import load_file

from datasets_app.models import Dataset, DatasetVersion
from datasets_app.services import dataset_version_upload
from experiments import metric_store
from experiments.models import MetricPoint, MetricSeries, TrainingRun
from experiments.services import experiment_create
from finetune_hub.storage import artifact_path
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


# A training long enough to cancel, kill or resume in the middle of.
LONG = {
    **FAST,
    "max_steps": 150,
    "save_steps": 5,
    "eval_steps": 1000,
    "logging_steps": 5,
    "per_device_train_batch_size": 2,
}


def adapter(run):
    return load_file(artifact_path(run.output_path) / "adapter_model.safetensors")


def assert_each_step_logged_once(run) -> None:
    """What a finished run logged, resumed or not: one point a (key, step), the training
    log's keys at every logging step up to max_steps (none missing: a resumed attempt keeps
    its checkpoint's step and those before it, and logs from the next), the epoch at each
    step that logged anything, and each curve made of the points there are."""
    params = run.experiment.hyperparameters
    rows = list(MetricPoint.objects.filter(run=run).values_list("key", "step"))
    assert [pair for pair, n in Counter(rows).items() if n > 1] == [], "logged twice"
    steps = defaultdict(set)
    for key, step in rows:
        steps[key].add(step)
    every = params["logging_steps"]
    logging_steps = set(range(every, params["max_steps"] + 1, every))
    for key in ("loss", "learning_rate", "grad_norm"):
        assert steps[key] == logging_steps, (key, sorted(logging_steps ^ steps[key]))
    assert steps["epoch"] == steps["loss"] | steps["eval_loss"]
    series = dict(MetricSeries.objects.filter(run=run).values_list("key", "count"))
    assert series == Counter(key for key, _ in rows)


def many_runs(team, owner, tiny_model, n: int, steps: int = 50):
    experiment = make_experiment(team, owner, tiny_model)
    runs = TrainingRun.objects.bulk_create(
        TrainingRun(experiment=experiment, created_by=owner) for _ in range(n)
    )
    metric_store.points_ingest(
        (run.pk, s, key, float(i + s))
        for i, run in enumerate(runs)
        for key in ("loss", "eval_loss")
        for s in range(steps)
    )
    return runs
