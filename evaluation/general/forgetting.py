"""The forgetting check: a fine-tuned subject (a run's output or a model version) scored on
the general set beside the base model it was trained from, the paired difference with its
95% interval, beside the gain on the task it was trained for. The promotion policy's
require_no_general_drop rule reads the same row."""

from evaluation.general.generate import SPLIT
from evaluation.general.services import METRIC, general_version
from evaluation.models import EvaluationRun
from evaluation.statistics import evaluations_paired
from evaluation.subjects import Kind, Subject

# The task row's preference: the task set's own answers are what the subject was trained to
# give, so exact match is read there when scored. The general row is on METRIC (chrF).
TASK_METRIC = "exact_match"


def base_of(subject: Subject) -> Subject | None:
    """The bare base model a fine-tuned subject builds on; None for a base model itself."""
    if subject.kind == Kind.BASE_MODEL or not subject.base_model:
        return None
    return Subject(Kind.BASE_MODEL, base_model=subject.base_model)


def latest_scored(team, subject: Subject, dataset_version, split: str, metric: str | None):
    """The subject's newest finished evaluation on this data (with `metric` when named)."""
    qs = EvaluationRun.objects.filter(
        subject.evaluations(),
        team=team,
        dataset_version=dataset_version,
        split=split,
        status=EvaluationRun.Status.SUCCEEDED,
    )
    if metric is not None:
        qs = qs.filter(results__has_key=metric)
    return qs.order_by("-pk").first()


def paired(team, subject: Subject, base: Subject, dataset_version, split: str, metric: str):
    """Subject and base on one split, each by its newest evaluation: their scores and the
    paired test (subject minus base); `missing` names the subjects not evaluated yet."""
    mine = latest_scored(team, subject, dataset_version, split, metric)
    theirs = latest_scored(team, base, dataset_version, split, metric)
    test = evaluations_paired(metric, theirs, mine) if mine and theirs else None
    return {
        "metric": metric,
        "dataset_version": dataset_version,
        "split": split,
        "subject_evaluation": mine,
        "base_evaluation": theirs,
        "subject_score": mine.results[metric]["score"] if mine else None,
        "base_score": theirs.results[metric]["score"] if theirs else None,
        "missing": [s for s, e in ((subject, mine), (base, theirs)) if e is None],
        "test": test,
        "drop": bool(test and test["significant"] and not test["subject_better"]),
    }


def task_metric(evaluation: EvaluationRun | None) -> str | None:
    """The metric a task gain is shown on: exact match where scored, else the evaluation's
    first metric with an interval."""
    if evaluation is None:
        return None
    if TASK_METRIC in evaluation.results:
        return TASK_METRIC
    return next(
        (m for m, r in evaluation.results.items() if "ci_low" in r and m != "perplexity"), None
    )


def forgetting_check(*, team, subject: Subject, task=None, metric: str = METRIC) -> dict | None:
    """The card for a fine-tuned subject (None for a bare base model): the general set row
    on `metric` (None until the team adds the set) and the task row on `task`, a (dataset
    version, split) pair, when given (on TASK_METRIC until the subject is evaluated
    there)."""
    base = base_of(subject)
    if base is None:
        return None
    general = general_version(team=team)
    card = {
        "team": team,
        "subject": subject,
        "base": base,
        "general_version": general,
        "general": paired(team, subject, base, general, SPLIT, metric) if general else None,
        "task": None,
    }
    if task is not None:
        version, split = task
        name = task_metric(latest_scored(team, subject, version, split, None)) or TASK_METRIC
        card["task"] = paired(team, subject, base, version, split, name)
    return card


def comparison_cards(comparison) -> list[dict]:
    """A card for each fine-tuned subject of a comparison, its task row on the compared
    data."""
    cards, seen = [], set()
    for row in comparison.subjects.select_related("evaluation"):
        subject = Subject.of(row.evaluation)
        if subject in seen:
            continue
        seen.add(subject)
        card = forgetting_check(
            team=comparison.team,
            subject=subject,
            task=(comparison.dataset_version, comparison.split),
        )
        if card is not None:
            cards.append(card)
    return cards
