"""Evaluations of the general set and of a task built from stored answers with known hits,
their comparisons, and the expected figures computed the way the check computes them: the
helpers of the forgetting-check tests. conftest offers the general-set fixture."""

import numpy as np
import pytest
from sacrebleu.metrics import CHRF

from evaluation import statistics
from evaluation.general.services import general_set_version
from evaluation.models import Comparison, ComparisonSubject, EvaluationRun
from evaluation.queue import _score
from evaluation.subjects import Subject
from registry import services
from tests.support.comparisons import answered

N = 313

GENERAL_METRIC = "chrf"


def answers(hit, miss=lambda e: "no idea"):
    """Predicts the reference where hit(position), else miss(example)."""
    return lambda e: e.fields["output"] if hit(e.position) else miss(e)


def evaluated(team, owner, dataset_version, subject: Subject, hit, miss=None) -> EvaluationRun:
    """A scored evaluation of `subject` that answers an example right where hit(position),
    and otherwise "no idea" or miss(example)."""
    return evaluated_with(
        team, owner, dataset_version, subject, answers(hit, *([miss] if miss else []))
    )


def evaluated_with(team, owner, dataset_version, subject: Subject, predict) -> EvaluationRun:
    """A scored evaluation (exact match and chrF) of `subject` answering predict(example)."""
    evaluation = answered(team, owner, dataset_version, "placeholder", predict)
    EvaluationRun.objects.filter(pk=evaluation.pk).update(**subject.fields)
    evaluation.refresh_from_db()
    _score(evaluation)
    evaluation.refresh_from_db()
    return evaluation


def expected(base_hit, subject_hit, positions=range(N)) -> dict:
    """The paired bootstrap computed here from the hits alone."""
    base = np.array([[float(base_hit(i))] for i in positions])
    mine = np.array([[float(subject_hit(i))] for i in positions])
    return statistics.paired_bootstrap("exact_match", base, mine)


def general_examples(general):
    return list(general.examples.filter(split="eval").order_by("pk"))


def chrf(general, predict) -> float:
    """The corpus chrF of predict(example) on the general set, computed here by sacreBLEU."""
    examples = general_examples(general)
    return (
        CHRF()
        .corpus_score([predict(e) for e in examples], [[e.fields["output"] for e in examples]])
        .score
    )


def expected_general(general, base_predict, subject_predict) -> dict:
    """The paired bootstrap on chrF, the general row's metric, computed here from the
    answers (sacreBLEU's per-sentence statistics)."""
    examples = general_examples(general)
    references = [[e.fields["output"] for e in examples]]

    def stats(predict):
        rows = CHRF()._extract_corpus_statistics([predict(e) for e in examples], references)
        return np.array(rows, dtype=float)

    return statistics.paired_bootstrap(GENERAL_METRIC, stats(base_predict), stats(subject_predict))


def always(_):
    return True


def every_other(position):
    return position % 2 == 0


def of_run(run):
    return Subject(kind="run", run=run.pk, base_model=run.model_base)


def base(run):
    return Subject(kind="base_model", base_model=run.model_base)


def compare(team, owner, first: EvaluationRun, second: EvaluationRun) -> Comparison:
    comparison = Comparison.objects.create(
        team=team,
        dataset_version=first.dataset_version,
        split="eval",
        mode="auto",
        created_by=owner,
    )
    for index, evaluation in enumerate((first, second)):
        ComparisonSubject.objects.create(comparison=comparison, index=index, evaluation=evaluation)
    return comparison


def task_comparison(team, owner, run):
    """Base model and run on the run's own training data: the run gains (all right against
    one in three)."""
    task = run.experiment.dataset_version
    return compare(
        team,
        owner,
        evaluated(team, owner, task, base(run), lambda p: p % 3 == 0),
        evaluated(team, owner, task, of_run(run), always),
    )


def of_version(version):
    return Subject.of_version(version)


def version_base(version):
    return Subject(kind="base_model", base_model=version.base_model)


def set_policy(model, owner, **rules):
    services.policy_set(model=model, by=owner, policy={"require_no_general_drop": True, **rules})


def promote(api, number):
    return api.put(
        "/api/registry/models/triage/aliases/production", {"version": number, "reason": "ship"}
    )


def in_a_sentence(example):
    """Right inside a sentence, as a small base model answers: wrong by exact match."""
    return f"The answer is {example.fields['output']}."


def task_format(example):
    """What a fine-tune that overfit a narrow ticket format answers to anything."""
    return "Ticket category: billing. Priority: low."


@pytest.fixture
def general(team, owner):
    return general_set_version(team=team, by=owner)
