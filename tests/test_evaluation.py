import math

import numpy as np
import pytest
import sacrebleu

from datasets_app.models import Dataset
from datasets_app.services import dataset_version_upload
from evaluation import statistics
from evaluation.models import EvaluationRun, SampleResult
from evaluation.services import evaluation_create, evaluation_execute, evaluation_retry
from experiments.training.runner import train_next_run
from experiments.training.services import experiment_create, run_enqueue
from finetune_hub.errors import ServiceError
from finetune_hub.storage import artifact_path
from inference import generation
from registry.services import model_create, version_register
from tests.data import jsonl, phrase
from tests.registry_helpers import trained_run
from tests.training_helpers import FAST, make_version

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
        if name not in ("perplexity", "rouge1", "rouge2", "rougeL", "rougeLsum"):
            # the interval is the bootstrap of the corpus metric over the stored statistics
            stats = np.array([s.stats[name] for s in evaluation.samples.all()], dtype=float)
            assert (r["ci_low"], r["ci_high"]) == statistics.bootstrap_ci(name, stats), name
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


def fixed_answer_version(team, owner, n=80):
    """Every answer is the same word: a run that learnt it answers it; the base model does not."""
    dataset = Dataset.objects.create(team=team, name="fixed", task="instruction", created_by=owner)
    rows = [
        {"instruction": f"Classify ticket {i}: {phrase(i)}", "output": "ZEBRA"} for i in range(n)
    ]
    return dataset_version_upload(
        dataset=dataset, filename="d.jsonl", data=jsonl(rows).encode(), by=owner
    )


@pytest.mark.django_db(transaction=True)
def test_a_run_and_its_registered_version_are_evaluated_with_their_weights(
    team, owner, tiny_model, cpu_worker
):
    version = fixed_answer_version(team, owner)
    experiment = experiment_create(
        team=team,
        name="zebra",
        dataset_version=version,
        base_model=tiny_model,
        technique="full",
        hyperparameters={**FAST, "max_steps": 30, "learning_rate": 1e-2},
        by=owner,
    )
    run = train_next_run(run_id=run_enqueue(experiment=experiment, by=owner, dispatch=False).pk)
    assert run.status == "succeeded", run.error
    model = model_create(team=team, name="zebra", by=owner)
    registered = version_register(model=model, run=run, by=owner)

    def evaluate(subject):
        evaluation = evaluation_create(
            team=team,
            subject=subject,
            dataset_version=version,
            metric_names=["exact_match", "loss"],
            generation_settings={"max_new_tokens": 4, "batch_size": 8},
            by=owner,
        )
        return evaluation_execute(evaluation_id=evaluation.pk)

    base = evaluate({"base_model": tiny_model})
    trained = evaluate({"run": run.pk})
    registered_eval = evaluate({"model_version": registered.pk})
    assert base.results["exact_match"]["score"] == 0.0
    assert base.results["loss"]["score"] > 5  # a random model: about ln(vocabulary)
    for evaluation in (trained, registered_eval):
        assert evaluation.results["exact_match"]["score"] >= 0.9, (
            base.results,
            evaluation.results,
            list(run.metrics.filter(key="loss").order_by("step").values_list("value", flat=True)),
        )
        assert evaluation.results["loss"]["score"] < base.results["loss"]["score"] / 3
    # The run and its registered version are the same weights: the same answers and loss.
    assert [s.prediction for s in trained.samples.order_by("position")] == [
        s.prediction for s in registered_eval.samples.order_by("position")
    ]
    assert trained.results["loss"]["score"] == pytest.approx(
        registered_eval.results["loss"]["score"], rel=1e-6
    )


def test_a_lora_run_and_its_version_are_scored_with_the_adapter_by_transformers_loss(
    team, owner, tiny_model
):
    """Per-sample loss equals transformers' own loss of base + adapter (plain peft) on the same
    tokens, differs from the base model's, and the corpus loss is total NLL / total tokens."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = trained_run(team, owner, tiny_model, seed=3)
    model = model_create(team=team, name="adapter", by=owner)
    registered = version_register(model=model, run=run, by=owner)
    version = run.experiment.dataset_version

    def losses(subject):
        evaluation = evaluation_create(
            team=team,
            subject=subject,
            dataset_version=version,
            metric_names=["loss"],
            generation_settings={"max_new_tokens": 2, "batch_size": 4},
            by=owner,
        )
        evaluation = evaluation_execute(evaluation_id=evaluation.pk)
        return evaluation, list(evaluation.samples.order_by("position"))

    base, base_samples = losses({"base_model": tiny_model})
    trained, samples = losses({"run": run.pk})
    registered_eval, registered_samples = losses({"model_version": registered.pk})
    assert [s.loss for s in samples] == pytest.approx([s.loss for s in registered_samples])
    differences = [abs(s.loss - b.loss) for s, b in zip(samples, base_samples, strict=True)]
    assert min(differences) > 1e-5 and sum(differences) / len(differences) > 1e-3

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    plain = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model), artifact_path(run.output_path)
    ).eval()
    total_nll = total_tokens = 0.0
    for sample in samples:
        prompt = tokenizer(sample.prompt, add_special_tokens=False)["input_ids"]
        full = tokenizer(
            sample.prompt + sample.reference + tokenizer.eos_token, add_special_tokens=False
        )["input_ids"]
        labels = [-100] * len(prompt) + full[len(prompt) :]
        with torch.no_grad():
            out = plain(input_ids=torch.tensor([full]), labels=torch.tensor([labels]))
        tokens = len(full) - len(prompt)
        assert sample.loss == pytest.approx(out.loss.item(), rel=1e-4)
        total_nll += out.loss.item() * tokens
        total_tokens += tokens
    corpus = trained.results["loss"]["score"]
    assert corpus == pytest.approx(total_nll / total_tokens, rel=1e-4)
    assert trained.results["perplexity"]["score"] == pytest.approx(math.exp(corpus), rel=1e-9)
    lengths = {len(s.reference) for s in samples}
    mean_of_means = sum(s.loss for s in samples) / len(samples)
    if len(lengths) > 1:  # references of different lengths: the two formulas differ
        assert corpus != pytest.approx(mean_of_means, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, field, status",
    [
        ({"subject": {}}, "subject", 400),
        ({"subject": {"run": 99999}}, "subject.run", 400),
        ({"split": "test2"}, "split", 400),
        ({"metric_names": ["nonsense-metric-xyz"]}, "metrics", 422),
        ({"generation_settings": {"max_new_tokens": 0}}, "generation.max_new_tokens", 422),
        ({"generation_settings": {"beams": 4}}, "generation.beams", 422),
    ],
)
def test_bad_evaluation_input_names_the_field(team, owner, tiny_model, kwargs, field, status):
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
    assert refused.value.status == status
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
