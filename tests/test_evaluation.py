import math
import random
import re
import shutil

import numpy as np
import pytest
import sacrebleu

from datasets_app.models import Dataset
from datasets_app.services import dataset_version_upload
from evaluation import statistics
from evaluation.models import EvaluationRun, SampleResult
from evaluation.queue import evaluation_execute
from evaluation.services import evaluation_create, evaluation_retry
from experiments.services import experiment_create, run_enqueue
from experiments.training.runner import train_next_run
from finetune_hub.errors import ServiceError
from finetune_hub.storage import artifact_path
from inference import generation
from registry.services import model_create, version_register
from tests.support.data import WORDS, jsonl, phrase
from tests.support.registry_helpers import trained_run
from tests.support.training_helpers import FAST, make_version

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
    assert evaluation.signatures["bleu"].startswith("nrefs:1")
    assert all("bleu" in s.scores and s.loss > 0 for s in evaluation.samples.all())


def instruction_version(team, owner, name: str, rows: list[dict]):
    dataset = Dataset.objects.create(team=team, name=name, task="instruction", created_by=owner)
    return dataset_version_upload(
        dataset=dataset, filename="d.jsonl", data=jsonl(rows).encode(), by=owner
    )


def distinct_answers_version(team, owner, n=40):
    """Each answer is 12 words of its own, drawn from 1,000 (so two answers share about one
    word in ten); the first half of the examples is the eval split."""
    rows = [
        {
            "instruction": f"Describe item {i}: {phrase(i)}",
            "output": " ".join(f"w{k}" for k in random.Random(i).sample(range(1000), 12)),
            "split": "eval" if i < n // 2 else "train",
        }
        for i in range(n)
    ]
    return instruction_version(team, owner, "bleu", rows)


def test_bleu_is_sacrebleus_corpus_bleu_of_each_answer_with_its_own_reference(
    team, owner, tiny_model, monkeypatch
):
    """The generator answers each prompt with its own reference, one word in twelve changed:
    BLEU against the right references is high and against the next sample's is about 0, so
    an answer scored against another sample's reference cannot pass (a random model's
    answers score about 0 against either)."""
    version = distinct_answers_version(team, owner)

    def item(text: str) -> int:
        return int(re.search(r"Describe item (\d+):", text).group(1))

    outputs = {item(e.fields["instruction"]): e.fields["output"] for e in version.examples.all()}
    answers = {i: output.rsplit(" ", 1)[0] + " changed" for i, output in outputs.items()}

    def generate(model, tokenizer, prompts, **settings):
        return [answers[item(p)] for p in prompts], len(prompts), 0.01

    monkeypatch.setattr(generation, "generate", generate)
    evaluation = evaluation_create(
        team=team,
        subject={"base_model": tiny_model},
        dataset_version=version,
        metric_names=["bleu"],
        generation_settings=GEN,
        by=owner,
    )
    evaluation = evaluation_execute(evaluation_id=evaluation.pk)
    samples = list(evaluation.samples.select_related("example").order_by("position"))
    numbers = [item(s.example.fields["instruction"]) for s in samples]
    assert len(samples) == 20 and [s.reference for s in samples] == [outputs[i] for i in numbers]
    predictions = [answers[i] for i in numbers]
    references = [outputs[i] for i in numbers]
    right = sacrebleu.corpus_bleu(predictions, [references]).score
    shifted = sacrebleu.corpus_bleu(predictions, [references[1:] + references[:1]]).score
    assert right > 80 and shifted < 1
    assert evaluation.results["bleu"]["score"] == pytest.approx(right, abs=1e-9)
    for sample, prediction, reference in zip(samples, predictions, references, strict=True):
        sentence = sacrebleu.sentence_bleu(prediction, [reference]).score
        assert sample.scores["bleu"] == pytest.approx(sentence, abs=1e-9)


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
    rows = [
        {"instruction": f"Classify ticket {i}: {phrase(i)}", "output": "ZEBRA"} for i in range(n)
    ]
    return instruction_version(team, owner, "fixed", rows)


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


def peaked_model(tiny_model, root) -> str:
    """The tiny model with its final norm scaled up: confident, so some tokens cost almost
    nothing and others a great deal (the random one gives every token about ln(vocabulary),
    and every way of averaging its losses agrees)."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = root / "peaked"
    shutil.copytree(tiny_model, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.model.norm.weight.mul_(40)
    model.save_pretrained(folder)
    return str(folder)


def short_and_long_version(team, owner):
    """Answers of one word and of about 300: in the eval split, three of each."""
    rows = [
        {
            "instruction": f"Answer question {i}: {phrase(i)}",
            "output": "Yes" if i % 2 else " ".join(random.Random(i).choices(WORDS, k=280)),
            "split": "eval" if i < 6 else "train",
        }
        for i in range(20)
    ]
    return instruction_version(team, owner, "lengths", rows)


def test_a_lora_run_and_its_version_are_scored_with_the_adapter_by_transformers_loss(
    team, owner, tiny_model, model_root
):
    """Per-sample loss equals transformers' own loss of base + adapter (plain peft) on the same
    tokens, differs from the base model's, and the corpus loss is total NLL / total tokens: on
    answers of 2 tokens and of about 300, where the mean of the samples' losses is far from it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_model = peaked_model(tiny_model, model_root)
    version = short_and_long_version(team, owner)
    experiment = experiment_create(
        team=team,
        name="lengths",
        dataset_version=version,
        base_model=base_model,
        technique="lora",
        hyperparameters=FAST,
        by=owner,
    )
    run = trained_run(team, owner, base_model, seed=3, experiment=experiment)
    model = model_create(team=team, name="adapter", by=owner)
    registered = version_register(model=model, run=run, by=owner)

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

    base, base_samples = losses({"base_model": base_model})
    trained, samples = losses({"run": run.pk})
    registered_eval, registered_samples = losses({"model_version": registered.pk})
    assert [s.loss for s in samples] == pytest.approx([s.loss for s in registered_samples])
    differences = [abs(s.loss - b.loss) for s, b in zip(samples, base_samples, strict=True)]
    assert min(differences) > 1e-5 and sum(differences) / len(differences) > 1e-3

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    plain = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_model), artifact_path(run.output_path)
    ).eval()
    total_nll = total_tokens = 0.0
    counts = []
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
        counts.append(tokens)
    assert min(counts) == 2 and max(counts) >= 280  # the answer and the end of sequence
    # Total NLL over total tokens (one forward pass here, batches of 4 with padding there:
    # they agree to about 2e-6). The mean of the samples' losses weighs a 2-token answer as
    # much as a 300-token one: on these answers it is hundreds of tolerances away.
    corpus, tolerance = trained.results["loss"]["score"], 2e-5
    assert corpus == pytest.approx(total_nll / total_tokens, rel=tolerance)
    assert trained.results["perplexity"]["score"] == pytest.approx(math.exp(corpus), rel=1e-9)
    mean_of_means = sum(s.loss for s in samples) / len(samples)
    assert abs(mean_of_means / corpus - 1) > 100 * tolerance


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
