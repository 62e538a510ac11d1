"""The promotion gate: each policy rule alone and combined, with the refusal reasons asserted.

Evaluations and comparisons are built from per-sample results with known outcomes (exact
match hits), so significance and direction are decided by the real paired bootstrap, not
by stubbed numbers: a version significantly worse than production, one better but not
significantly, and one better and significantly."""

from datetime import timedelta
from unittest.mock import patch

import pytest
from django.utils import timezone

from evaluation import statistics
from evaluation.comparison_results import auto_results
from evaluation.models import Comparison, ComparisonSubject, EvaluationRun, SampleResult
from registry import services
from registry.models import AliasEvent


@pytest.fixture
def production(model, versions, owner):
    services.alias_promote(
        model=model, alias="production", version=versions[0], by=owner, reason="first"
    )
    return versions[0]


def eval_examples(version, split="eval"):
    dataset_version = version.source_run.experiment.dataset_version
    return list(dataset_version.examples.filter(split=split).order_by("pk"))


def scored(version, hits: list[int], owner, split="eval", first=None) -> EvaluationRun:
    """A finished evaluation of `version` with these exact-match hits, one per example;
    `first`: (metric, hits) of another metric scored before exact match."""
    examples = eval_examples(version, split)
    assert len(hits) == len(examples)
    metrics = {"exact_match": hits}
    if first:
        metrics = {first[0]: first[1], **metrics}
    evaluation = EvaluationRun.objects.create(
        team=version.registered_model.team,
        subject_kind="model_version",
        model_version=version,
        base_model=version.base_model,
        dataset_version=examples[0].version,
        split=split,
        metrics=list(metrics),
        generation={},
        status="succeeded",
        results={
            name: {"score": sum(h) / len(h), "ci_low": 0.0, "ci_high": 1.0, "n": len(h)}
            for name, h in metrics.items()
        },
        created_by=owner,
        finished_at=timezone.now(),
    )
    SampleResult.objects.bulk_create(
        SampleResult(
            evaluation=evaluation,
            example=example,
            position=i,
            prompt="p",
            reference="r",
            prediction="r" if hits[i] else "x",
            scores={name: float(h[i]) for name, h in metrics.items()},
            stats={name: [float(h[i])] for name, h in metrics.items()},
        )
        for i, example in enumerate(examples)
    )
    return evaluation


def compared(first: EvaluationRun, second: EvaluationRun, owner) -> Comparison:
    comparison = Comparison.objects.create(
        team=first.team,
        dataset_version=first.dataset_version,
        split=first.split,
        mode="auto",
        created_by=owner,
    )
    for index, evaluation in enumerate((first, second)):
        ComparisonSubject.objects.create(comparison=comparison, index=index, evaluation=evaluation)
    return comparison


def set_policy(model, owner, **rules):
    dataset_version = model.versions.first().source_run.experiment.dataset_version_id
    services.policy_set(
        model=model,
        by=owner,
        policy={"evaluation_dataset_version": dataset_version, "ab_metric": "exact_match", **rules},
    )


def promote(api, number):
    return api.put(
        "/api/registry/models/triage/aliases/production", {"version": number, "reason": "ship"}
    )


def holder(model):
    return model.aliases.get(name="production").version.number


def outcomes(n: int, ones: int) -> list[int]:
    return [1] * ones + [0] * (n - ones)


@pytest.mark.parametrize("production_first", [True, False])
def test_a_significantly_worse_version_is_refused(
    api, model, versions, production, owner, production_first
):
    set_policy(model, owner, require_ab_win=True)
    n = len(eval_examples(versions[0]))
    good, bad = scored(versions[0], [1] * n, owner), scored(versions[1], [0] * n, owner)
    compared(good, bad, owner) if production_first else compared(bad, good, owner)
    r = promote(api, 2)
    assert r.status_code == 409, r.content
    assert [e["field"] for e in r.json()["errors"]] == ["require_ab_win"]
    assert "significantly better than the holder" in r.json()["errors"][0]["message"]
    assert holder(model) == 1


def test_a_better_but_not_significant_version_is_refused(api, model, versions, production, owner):
    set_policy(model, owner, require_ab_win=True)
    n = len(eval_examples(versions[0]))
    compared(
        scored(versions[0], outcomes(n, n // 2), owner),
        scored(versions[1], outcomes(n, n // 2 + 1), owner),
        owner,
    )
    r = promote(api, 2)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "require_ab_win"
    assert holder(model) == 1


@pytest.mark.parametrize("production_first", [True, False])
def test_a_significantly_better_version_is_promoted_with_its_evidence(
    api, model, versions, production, owner, production_first
):
    set_policy(model, owner, require_ab_win=True)
    n = len(eval_examples(versions[0]))
    old, new = scored(versions[0], [0] * n, owner), scored(versions[1], [1] * n, owner)
    comparison = compared(old, new, owner) if production_first else compared(new, old, owner)
    r = promote(api, 2)
    assert r.status_code == 200, r.content
    assert holder(model) == 2
    evidence = AliasEvent.objects.filter(to_version__number=2).get().evidence
    assert evidence["comparison"]["comparison"] == comparison.pk
    assert evidence["comparison"]["significant"] is True


def test_a_win_on_other_data_does_not_count(api, model, versions, production, owner):
    """The policy names the data: a significant win on the test split is no evidence for a
    gate that reads the eval split."""
    set_policy(model, owner, require_ab_win=True)
    n = len(eval_examples(versions[0], "test"))
    old = scored(versions[0], [0] * n, owner, split="test")
    compared(old, scored(versions[1], [1] * n, owner, split="test"), owner)
    assert promote(api, 2).status_code == 409 and holder(model) == 1


def test_a_newer_comparison_of_other_subjects_does_not_hide_the_win(
    api, model, versions, production, owner
):
    """Every recent comparison is read: the win stands behind a newer comparison that is
    not between these two versions."""
    set_policy(model, owner, require_ab_win=True)
    n = len(eval_examples(versions[0]))
    old, new = scored(versions[0], [0] * n, owner), scored(versions[1], [1] * n, owner)
    win = compared(old, new, owner)
    newer = compared(new, scored(versions[1], [1] * n, owner), owner)  # the version twice
    Comparison.objects.filter(pk=newer.pk).update(created_at=win.created_at + timedelta(seconds=1))
    assert promote(api, 2).status_code == 200 and holder(model) == 2
    evidence = AliasEvent.objects.filter(to_version__number=2).get().evidence
    assert evidence["comparison"]["comparison"] == win.pk


def test_a_win_on_another_metric_does_not_count(api, model, versions, production, owner):
    set_policy(model, owner, require_ab_win=True, ab_metric="chrf")
    n = len(eval_examples(versions[0]))
    compared(scored(versions[0], [0] * n, owner), scored(versions[1], [1] * n, owner), owner)
    r = promote(api, 2)
    assert r.status_code == 409 and "on chrf" in r.json()["errors"][0]["message"]


def test_thresholds_alone_refuse_below_and_above_and_pass_inside(
    api, model, versions, production, owner
):
    n = len(eval_examples(versions[0]))
    scored(versions[1], outcomes(n, n // 4), owner)
    set_policy(model, owner, thresholds=[{"metric": "exact_match", "min": 0.5}])
    r = promote(api, 2)
    assert r.status_code == 409
    [error] = r.json()["errors"]
    assert error["field"] == "thresholds.exact_match" and "is below 0.5" in error["message"]
    set_policy(model, owner, thresholds=[{"metric": "exact_match", "max": 0.1}])
    r = promote(api, 2)
    assert r.status_code == 409
    [error] = r.json()["errors"]
    assert error["field"] == "thresholds.exact_match" and "is above 0.1" in error["message"]
    set_policy(model, owner, thresholds=[{"metric": "exact_match", "min": 0.2, "max": 0.3}])
    assert promote(api, 2).status_code == 200 and holder(model) == 2
    # The alias history keeps what the gate read: the policy and the evaluation.
    evidence = AliasEvent.objects.filter(to_version__number=2).get().evidence
    evaluation = EvaluationRun.objects.get(model_version=versions[1])
    assert evidence["evaluation"] == {"id": evaluation.pk, "results": evaluation.results}
    assert evidence["policy"]["thresholds"] == [{"metric": "exact_match", "min": 0.2, "max": 0.3}]


def test_a_score_exactly_on_a_bound_passes(api, model, versions, production, owner):
    """min and max are inclusive: a score of 3/n meets "min 3/n" and "max 3/n"."""
    n = len(eval_examples(versions[0]))
    scored(versions[1], outcomes(n, 3), owner)
    set_policy(model, owner, thresholds=[{"metric": "exact_match", "min": 3 / n, "max": 3 / n}])
    assert promote(api, 2).status_code == 200 and holder(model) == 2


def test_a_missing_metric_does_not_hide_the_next_rule(api, model, versions, production, owner):
    """Every rule is checked: a metric the evaluation lacks is one failure, and the rules
    after it are still checked."""
    n = len(eval_examples(versions[0]))
    evaluation = scored(versions[1], outcomes(n, 1), owner)
    set_policy(
        model,
        owner,
        thresholds=[{"metric": "chrf", "min": 10}, {"metric": "exact_match", "min": 0.9}],
    )
    r = promote(api, 2)
    assert r.status_code == 409
    assert [(e["field"], e["message"]) for e in r.json()["errors"]] == [
        ("thresholds.chrf", f"evaluation {evaluation.pk} has no chrf"),
        ("thresholds.exact_match", f"exact_match {1 / n:.4g} is below 0.9"),
    ]


def test_combined_rules_report_every_failure(api, model, versions, production, owner):
    n = len(eval_examples(versions[0]))
    compared(scored(versions[0], [1] * n, owner), scored(versions[1], outcomes(n, 1), owner), owner)
    set_policy(
        model,
        owner,
        require_ab_win=True,
        thresholds=[{"metric": "exact_match", "min": 0.9}, {"metric": "bleu", "min": 10}],
    )
    r = promote(api, 2)
    assert r.status_code == 409
    fields = sorted(e["field"] for e in r.json()["errors"])
    assert fields == ["require_ab_win", "thresholds.bleu", "thresholds.exact_match"]
    assert holder(model) == 1


def test_an_ungated_alias_moves_without_evidence(api, model, versions, production, owner):
    set_policy(model, owner, require_ab_win=True, thresholds=[{"metric": "bleu", "min": 99}])
    r = api.put("/api/registry/models/triage/aliases/staging", {"version": 2, "reason": "try it"})
    assert r.status_code == 200
    event = AliasEvent.objects.get(alias="staging")
    assert event.evidence == {"policy": "not gated"}


def test_the_ab_rule_with_approval_waits_for_the_approver_only_after_the_win(
    api, model, versions, production, owner
):
    set_policy(model, owner, require_ab_win=True, require_approval=True)
    n = len(eval_examples(versions[0]))
    worse = compared(
        scored(versions[0], [1] * n, owner), scored(versions[1], [0] * n, owner), owner
    )
    r = promote(api, 2)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "require_ab_win"
    worse.delete()
    compared(scored(versions[0], [0] * n, owner), scored(versions[1], [1] * n, owner), owner)
    r = promote(api, 2)
    assert r.status_code == 202 and r.json()["status"] == "pending"
    assert holder(model) == 1


def test_a_promotion_check_reads_the_stored_result(api, model, versions, production, owner):
    set_policy(model, owner, require_ab_win=True)
    n = len(eval_examples(versions[0]))
    comparison = compared(
        scored(versions[0], [1] * n, owner), scored(versions[1], [0] * n, owner), owner
    )
    assert comparison.scored_at is None  # as one made before results were stored
    assert promote(api, 2).status_code == 409
    comparison.refresh_from_db()
    assert comparison.scored_at is not None
    assert comparison.results == auto_results(comparison)
    with patch.object(statistics, "paired_bootstrap") as bootstrap:
        r = promote(api, 2)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "require_ab_win"
    bootstrap.assert_not_called()


@pytest.mark.parametrize("rule", ["thresholds", "ab"])
def test_evidence_on_another_dataset_version_does_not_count(
    api, model, versions, production, owner, team, rule
):
    """The policy names its dataset version: an evaluation, or a significant win, on any
    other version of any dataset (the same split) is no evidence; on the named one it is."""
    from tests.support.training_helpers import make_version

    n = len(eval_examples(versions[0]))
    new = scored(versions[1], [1] * n, owner)
    compared(scored(versions[0], [0] * n, owner), new, owner)
    rules = (
        {"thresholds": [{"metric": "exact_match", "min": 0.5}]}
        if rule == "thresholds"
        else {"require_ab_win": True}
    )
    other = make_version(team, owner)
    services.policy_set(
        model=model,
        by=owner,
        policy={"evaluation_dataset_version": other.pk, "ab_metric": "exact_match", **rules},
    )
    assert promote(api, 2).status_code == 409 and holder(model) == 1
    set_policy(model, owner, **rules)  # the data the evidence is on
    assert promote(api, 2).status_code == 200 and holder(model) == 2


def test_a_malformed_policy_names_each_field():
    from finetune_hub.errors import ServiceError
    from registry import policy

    with pytest.raises(ServiceError) as caught:
        policy.parse({"evaluation_split": "dev", "require_ab_win": "perhaps"})
    error = caught.value
    assert (error.status, error.detail) == (422, "Invalid policy")
    assert [e.field for e in error.errors] == ["policy.evaluation_split", "policy.require_ab_win"]
    assert policy.parse(None) == policy.Policy()


def test_a_win_on_the_policys_metric_counts_behind_a_tie_on_another(
    api, model, versions, production, owner
):
    """Every test of a comparison is read: accuracy (a tie, tested first) does not end the
    search before exact match, the policy's metric, where the version wins significantly."""
    set_policy(model, owner, require_ab_win=True)
    n = len(eval_examples(versions[0]))
    tie = [1] * n
    old = scored(versions[0], [0] * n, owner, first=("accuracy", tie))
    new = scored(versions[1], [1] * n, owner, first=("accuracy", tie))
    compared(old, new, owner)
    assert promote(api, 2).status_code == 200 and holder(model) == 2
