"""End to end on the real embedded model (issue 15): SmolLM2-135M-Instruct trained twice on
one narrow task through the engine, a full fine-tune that overfits and a LoRA run, each
scored on the shipped general-capability set beside the base model. The forgetting check
finds a significant drop for the full fine-tune and none for LoRA (its interval wholly above
the full fine-tune's); the promotion rule require_no_general_drop refuses the full
fine-tune's version and passes the LoRA run's.

Scored by chrF (the general row's metric and the policy's general_metric default), not by
exact match: the bare SmolLM2-135M answers in sentences ("The capital of France is
Paris."), so it scores 0 by exact match and no drop below that can be seen. chrF gives it
credit for the answer inside the sentence. Eight new tokens, greedy, batches of 64: about
35 s an evaluation of the 313 questions on an idle 2-core CPU."""

import json

import pytest

from datasets_app.models import Dataset
from datasets_app.services import dataset_version_upload
from evaluation.general.forgetting import forgetting_check
from evaluation.general.services import general_set_version
from evaluation.queue import evaluation_execute
from evaluation.services import evaluation_create
from evaluation.subjects import Subject
from experiments.models import MetricPoint
from experiments.services import experiment_create, run_enqueue
from experiments.training.runner import train_next_run
from finetune_hub.errors import PolicyRefused
from registry import services as registry

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

METRIC = "chrf"
GENERATION = {"max_new_tokens": 8, "batch_size": 64}
STEPS = 12  # three epochs of the 16 examples
COMMON = {
    "max_steps": STEPS,
    "per_device_train_batch_size": 4,
    "lr_scheduler_type": "constant",
    "warmup_ratio": 0.0,
    "max_length": 64,
    "logging_steps": 1,
    "eval_steps": 1000,
    "save_steps": 1000,
    "early_stopping_patience": 0,
}
FULL = {**COMMON, "learning_rate": 5e-4}  # 25 times full fine-tuning's default: it overfits
LORA = COMMON  # LoRA's defaults: r 16, alpha 32, the attention projections, 2e-4

PRODUCTS = ["kettle", "router", "blender", "headset", "printer", "lamp", "charger", "scale"]
PROBLEMS = [
    ("arrived broken", "shipping", "high"),
    ("was charged twice", "billing", "high"),
    ("will not turn on", "technical", "normal"),
    ("login fails", "account", "normal"),
]


def narrow_dataset() -> bytes:
    """Sixteen short support messages, each answered in the one ticket format."""
    rows = [
        {
            "instruction": "Triage this message.",
            "input": f"My {product} {problem}.",
            "output": f"category={category}; priority={priority}",
        }
        for i, product in enumerate(PRODUCTS)
        for problem, category, priority in (PROBLEMS[i % 4], PROBLEMS[(i + 1) % 4])
    ]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def train(team, owner, task, technique: str, hyperparameters: dict):
    experiment = experiment_create(
        team=team,
        name=technique,
        dataset_version=task,
        base_model="embedded",
        technique=technique,
        hyperparameters=hyperparameters,
        by=owner,
    )
    run = train_next_run(run_id=run_enqueue(experiment=experiment, by=owner).pk)
    assert run.status == "succeeded", run.error
    return run


def training_losses(run) -> list[float]:
    return list(
        MetricPoint.objects.filter(run=run, key="loss")
        .order_by("step")
        .values_list("value", flat=True)
    )


def evaluate(team, owner, general, subject: dict):
    evaluation = evaluation_create(
        team=team,
        subject=subject,
        dataset_version=general,
        metric_names=[METRIC, "exact_match"],
        generation_settings=GENERATION,
        by=owner,
    )
    evaluation = evaluation_execute(evaluation_id=evaluation.pk)
    assert evaluation.status == "succeeded", evaluation.error
    return evaluation


def test_a_full_fine_tune_that_overfits_forgets_and_lora_does_not(
    team, owner, cpu_worker, settings
):
    settings.DEFAULT_BASE_MODEL = "embedded"
    general = general_set_version(team=team, by=owner)
    dataset = Dataset.objects.create(team=team, name="triage", task="instruction", created_by=owner)
    task = dataset_version_upload(
        dataset=dataset,
        filename="triage.jsonl",
        data=narrow_dataset(),
        by=owner,
        max_length=64,
        eval_fraction=0,  # no eval split: no evaluation before and after training
        test_fraction=0,
    )
    assert task.counts == {"train": 16, "eval": 0, "test": 0}

    full = train(team, owner, task, "full", FULL)
    lora = train(team, owner, task, "lora", LORA)
    for run, fraction in ((full, 0.1), (lora, 0.7)):  # each learned the task, full overfit
        losses = training_losses(run)
        assert len(losses) == STEPS and sum(losses[-3:]) / 3 < fraction * losses[0], losses

    base = evaluate(team, owner, general, {"base_model": "embedded"})
    evaluate(team, owner, general, {"run": full.pk})
    evaluate(team, owner, general, {"run": lora.pk})
    assert base.results[METRIC]["score"] > 10  # the answer found inside its sentences

    def general_row(run) -> dict:
        """The forgetting check's general-set row, as the comparison and version pages and
        the promotion rule read it."""
        card = forgetting_check(
            team=team, subject=Subject.from_api({"run": run.pk}).for_team(team), metric=METRIC
        )
        assert card["base"] == Subject.from_api({"base_model": "embedded"}).for_team(team)
        row = card["general"]
        assert row["dataset_version"] == general and row["missing"] == []
        assert row["subject_evaluation"].training_run_id == run.pk
        assert row["base_evaluation"] == base and row["test"]["samples"] == 313
        print(
            f"{run.experiment.technique}: {METRIC} {row['subject_score']:.2f} against base "
            f"{row['base_score']:.2f}, difference {row['test']['difference']:.2f} "
            f"[{row['test']['ci_low']:.2f}, {row['test']['ci_high']:.2f}] "
            f"p {row['test']['p_value']:.3f}, drop {row['drop']}; exact match "
            f"{row['subject_evaluation'].results['exact_match']['score']:.4f} against "
            f"{base.results['exact_match']['score']:.4f}"
        )
        return row

    full_row, lora_row = general_row(full), general_row(lora)
    forgot, kept = full_row["test"], lora_row["test"]
    # The full fine-tune: a significant drop, its whole interval below 0.
    assert full_row["drop"] is True, forgot
    assert forgot["significant"] and not forgot["subject_better"]
    assert forgot["difference"] < 0 and forgot["ci_high"] < 0, forgot
    assert full_row["subject_score"] < 0.5 * full_row["base_score"]
    # LoRA: no drop (here none at all), and its interval above the full fine-tune's.
    assert lora_row["drop"] is False, kept
    assert kept["ci_low"] > forgot["ci_high"], (kept, forgot)

    # The promotion rule reads the same row: the full fine-tune's version is refused.
    model = registry.model_create(team=team, name="triage", by=owner)
    registry.policy_set(
        model=model, by=owner, policy={"require_no_general_drop": True, "general_metric": METRIC}
    )
    version = registry.version_register(model=model, run=full, by=owner)
    assert version.kind == "full"
    with pytest.raises(PolicyRefused) as refused:
        registry.alias_promote(
            model=model, alias="production", version=version, by=owner, reason="ship"
        )
    [error] = refused.value.errors
    assert error.field == "require_no_general_drop"
    assert error.message == (
        f"{version} scores {METRIC} {full_row['subject_score']:.4g} on the general set "
        f"against {full_row['base_score']:.4g} for its base model: significantly worse by "
        f"{-forgot['difference']:.4g} (difference {forgot['difference']:.4g}, 95% interval "
        f"{forgot['ci_low']:.4g} to {forgot['ci_high']:.4g}, p {forgot['p_value']:.3g})"
    )
    assert not model.aliases.filter(name="production").exists()
    # ... and the LoRA run's version passes, the general-set row kept as its evidence.
    version = registry.version_register(model=model, run=lora, by=owner)
    event = registry.alias_promote(
        model=model, alias="production", version=version, by=owner, reason="ship"
    )
    assert event.evidence["general"]["evaluation"] == lora_row["subject_evaluation"].pk
    assert event.evidence["general"]["base_evaluation"] == base.pk
    assert model.aliases.get(name="production").version == version
