"""Evaluations answered without a model, comparisons of them, and votes: the helpers and
fixtures of the comparison and blind-review tests (conftest offers the fixtures)."""

import pytest

from evaluation import comparisons
from evaluation.models import EvaluationRun, SampleResult
from evaluation.queue import _score
from finetune_hub.models import Membership, Role
from tests.support.clients import make_user
from tests.support.training_helpers import make_version


def answered(team, owner, version, label, predict, status="succeeded", metrics=None):
    """An evaluation whose predictions come from `predict(example fields)`: no model needed.
    Not scored yet."""
    evaluation = EvaluationRun.objects.create(
        team=team,
        subject_kind="base_model",
        base_model=label,
        dataset_version=version,
        split="eval",
        metrics=metrics or ["exact_match", "chrf"],
        generation={},
        status=status,
        created_by=owner,
    )
    SampleResult.objects.bulk_create(
        SampleResult(
            evaluation=evaluation,
            example=e,
            position=e.position,
            prompt="p",
            reference=e.fields["output"],
            prediction=predict(e),
        )
        for e in version.examples.filter(split="eval")
    )
    return evaluation


def scored(team, owner, version, label, predict):
    """The same, finished and scored."""
    evaluation = answered(team, owner, version, label, predict)
    _score(evaluation)
    evaluation.refresh_from_db()
    return evaluation


def good_and_bad(team, owner, n: int, **options):
    """A human comparison of two scored subjects, "good" (the references) and "bad"
    ("nope"), on a new dataset version of n examples."""
    version = make_version(team, owner, n=n)
    scored(team, owner, version, "good", lambda e: e.fields["output"])
    scored(team, owner, version, "bad", lambda e: "nope")
    return comparisons.comparison_create(
        team=team,
        subjects=[{"base_model": "good"}, {"base_model": "bad"}],
        dataset_version=version,
        mode="human",
        by=owner,
        **options,
    )


@pytest.fixture
def version(team, owner):
    return make_version(team, owner, n=300)


@pytest.fixture
def subjects(team, owner, version):
    good = scored(team, owner, version, "good", lambda e: e.fields["output"])
    bad = scored(
        team, owner, version, "bad", lambda e: e.fields["output"] if e.position % 4 == 0 else "nope"
    )
    return good, bad


@pytest.fixture
def human(team, owner, reviewer, version, subjects):
    return comparisons.comparison_create(
        team=team,
        subjects=[{"base_model": "good"}, {"base_model": "bad"}],
        dataset_version=version,
        mode="human",
        by=owner,
        min_votes=5,
    )


def automatic(team, owner, version, *labels):
    return comparisons.comparison_create(
        team=team,
        subjects=[{"base_model": label} for label in labels],
        dataset_version=version,
        by=owner,
    )


def vote_for(comparison, user, outcome: str):
    """Serve the user's next pair and answer it so that the pair's outcome is `outcome`."""
    vote = comparisons.next_pair(comparison=comparison, reviewer=user)
    choice = {"tie": "tie", "both_bad": "both_bad"}.get(outcome)
    if choice is None:
        choice = "left" if vote.left_is_a == (outcome == "a") else "right"
    comparisons.vote_cast(comparison=comparison, vote_id=vote.pk, reviewer=user, choice=choice)
    return vote


def second_reviewer(team):
    other = make_user("reviewer2")
    Membership.objects.create(team=team, user=other, role=Role.REVIEWER)
    return other
