"""The reward-model and GRPO settings the RLHF tests train with, and a finished reward model
made without training (tests/test_rlhf.py, tests/test_rlhf_rules.py)."""

from experiments.models import MetricPoint, TrainingRun
from experiments.services import experiment_create, run_enqueue
from experiments.training.runner import train_next_run
from finetune_hub.storage import artifact_path
from tests.support.training_helpers import FAST, make_version

# The preference examples (tests/support/data.py) pair "A clear answer i" with "meh i": a
# reward model tells them apart within a few steps at a high learning rate.
REWARD = {**FAST, "max_steps": 12, "eval_steps": 6, "save_steps": 6, "learning_rate": 2e-3}
GRPO = {
    **FAST,
    "max_steps": 2,
    "per_device_train_batch_size": 4,
    "num_generations": 2,
    "max_completion_length": 8,
    "eval_steps": 2,
    "save_steps": 2,
    "learning_rate": 1e-3,
}


def series(run, key: str) -> list[float]:
    return list(
        MetricPoint.objects.filter(run=run, key=key)
        .order_by("step")
        .values_list("value", flat=True)
    )


def trained(experiment, owner) -> TrainingRun:
    run = train_next_run(run_id=run_enqueue(experiment=experiment, by=owner).pk)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error + run.log_tail
    return run


def finished_reward_model(team, owner, tiny_model) -> TrainingRun:
    """A finished reward-model run without the training: the tiny model with a fresh score
    head saved as its output (the settings checks and the lineage need only the rows)."""
    from transformers import AutoModelForSequenceClassification

    version = make_version(team, owner, "preference", n=20)
    experiment = experiment_create(
        team=team,
        name=f"reward-{version.pk}",
        dataset_version=version,
        base_model=tiny_model,
        technique="reward",
        hyperparameters=FAST | {"rl_base": "full"},
        by=owner,
    )
    run = TrainingRun.objects.create(
        experiment=experiment, created_by=owner, status=TrainingRun.Status.SUCCEEDED
    )
    output = f"{run.folder}/final"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    model.save_pretrained(artifact_path(output))
    TrainingRun.objects.filter(pk=run.pk).update(output_path=output)
    run.refresh_from_db()
    return run
