import pytest
import sacrebleu

from evaluation import generation
from evaluation.models import EvaluationRun, SampleResult
from evaluation.services import evaluation_create, evaluation_execute, evaluation_retry
from experiments.training.runner import train_next_run
from experiments.training.services import run_enqueue
from finetune_hub.errors import ServiceError
from tests.training_helpers import make_experiment, make_version

GEN = {"max_new_tokens": 8, "batch_size": 4}


def test_base_model_evaluation_scores_every_sample_with_intervals(team, owner, tiny_model):
    version = make_version(team, owner, n=120)
    evaluation = evaluation_create(
        team=team,
        subject={"base_model": tiny_model},
        dataset_version=version,
        split="eval",
        generation_settings=GEN,
        by=owner,
    )
    evaluation = evaluation_execute(evaluation_id=evaluation.pk)
    assert evaluation.status == "succeeded"
    n = version.counts["eval"]
    assert evaluation.samples.count() == n == evaluation.results["bleu"]["n"]
    for name in (
        "bleu",
        "chrf",
        "ter",
        "rouge1",
        "rouge2",
        "rougeL",
        "rougeLsum",
        "exact_match",
        "loss",
        "perplexity",
    ):
        r = evaluation.results[name]
        assert r["ci_low"] <= r["score"] <= r["ci_high"], name
    samples = list(evaluation.samples.order_by("position"))
    expected = sacrebleu.corpus_bleu(
        [s.prediction for s in samples], [[s.reference for s in samples]]
    )
    assert abs(evaluation.results["bleu"]["score"] - expected.score) < 1e-9
    assert evaluation.signatures["bleu"].startswith("nrefs:1")
    assert all("bleu" in s.scores and s.loss > 0 for s in samples)


def test_retry_fills_in_without_duplicating(team, owner, tiny_model):
    version = make_version(team, owner, n=120)
    evaluation = evaluation_create(
        team=team,
        subject={"base_model": tiny_model},
        dataset_version=version,
        generation_settings=GEN,
        by=owner,
    )
    evaluation_execute(evaluation_id=evaluation.pk)
    SampleResult.objects.filter(evaluation=evaluation, position__gt=50).delete()
    EvaluationRun.objects.filter(pk=evaluation.pk).update(status="failed")
    evaluation_retry(evaluation=EvaluationRun.objects.get(pk=evaluation.pk), by=owner)
    evaluation = evaluation_execute(evaluation_id=evaluation.pk)
    assert evaluation.status == "succeeded" and evaluation.attempt == 2
    assert evaluation.samples.count() == version.counts["eval"]
    assert evaluation_execute(evaluation_id=evaluation.pk) is None  # not queued: nothing to do


@pytest.mark.django_db(transaction=True)
def test_trained_run_is_evaluated_with_its_adapter(team, owner, tiny_model, cpu_worker):
    experiment = make_experiment(team, owner, tiny_model)
    run = train_next_run(run_id=run_enqueue(experiment=experiment, by=owner, dispatch=False).pk)
    evaluation = evaluation_create(
        team=team,
        subject={"run": run.pk},
        dataset_version=experiment.dataset_version,
        metric_names=["exact_match", "loss"],
        generation_settings=GEN,
        by=owner,
    )
    evaluation = evaluation_execute(evaluation_id=evaluation.pk)
    assert set(evaluation.results) == {"exact_match", "loss", "perplexity"}


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"subject": {}}, "subject"),
        ({"subject": {"run": 99999}}, "subject.run"),
        ({"split": "test2"}, "split"),
        ({"metric_names": ["nonsense-metric-xyz"]}, "metrics"),
        ({"generation_settings": {"max_new_tokens": 0}}, "generation.max_new_tokens"),
        ({"generation_settings": {"beams": 4}}, "generation.beams"),
    ],
)
def test_bad_evaluation_input_names_the_field(team, owner, tiny_model, kwargs, field):
    version = make_version(team, owner)
    args = {
        "team": team,
        "subject": {"base_model": tiny_model},
        "dataset_version": version,
        "by": owner,
        **kwargs,
    }
    with pytest.raises(ServiceError) as refused:
        evaluation_create(**args)
    assert refused.value.status in (400, 422)
    assert refused.value.errors[0].field == field
    assert not EvaluationRun.objects.exists()


def test_batched_generation_equals_one_at_a_time(tiny_model):
    model, tokenizer = generation.load(tiny_model)
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "word " * n}], tokenize=False, add_generation_prompt=True
        )
        for n in (1, 7, 3, 12, 5)
    ]
    batched, _, _ = generation.generate(model, tokenizer, prompts, max_new_tokens=10, batch_size=5)
    single = [
        generation.generate(model, tokenizer, [p], max_new_tokens=10, batch_size=1)[0][0]
        for p in prompts
    ]
    assert batched == single
