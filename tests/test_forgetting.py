"""The forgetting check: a fine-tuned subject's general-set score beside its base model's,
with the paired bootstrap's difference and 95% interval, on the comparison page and the
model version page; and the promotion rule require_no_general_drop, which refuses a
version significantly worse than its base model on the general set. The general row is on
chrF (the policy's general_metric by default): exact match sees no drop from a base model
that already scores 0, as the embedded one does. The task row stays on exact match.

Evaluations are built from stored answers with known hits (no model runs), so the numbers
come from the real scoring and the real paired bootstrap."""

import pytest

from registry import services
from registry.models import AliasEvent
from tests.support.forgetting import (
    GENERAL_METRIC,
    N,
    always,
    answers,
    chrf,
    evaluated,
    evaluated_with,
    every_other,
    expected_general,
    in_a_sentence,
    of_version,
    promote,
    set_policy,
    task_format,
    version_base,
)


@pytest.fixture
def run(runs):
    """The first of the two trained runs the registered versions come from."""
    return runs[0]


def test_a_significant_general_drop_refuses_the_promotion(
    api, model, owner, team, general, versions
):
    set_policy(model, owner)
    version = versions[0]
    evaluated(team, owner, general, of_version(version), every_other)
    evaluated(team, owner, general, version_base(version), always)
    r = promote(api, 1)
    assert r.status_code == 409, r.content
    test = expected_general(general, answers(always), answers(every_other))
    score = chrf(general, answers(every_other))
    assert r.json()["errors"] == [
        {
            "field": "require_no_general_drop",
            "message": f"{version} scores chrf {score:.4g} on the general set against "
            f"100 for its base model: significantly worse by {-test['difference']:.4g} "
            f"(difference {test['difference']:.4g}, 95% interval {test['ci_low']:.4g} to "
            f"{test['ci_high']:.4g}, p {test['p_value']:.3g})",
        }
    ]
    assert not model.aliases.filter(name="production").exists()


def test_no_significant_general_drop_passes_with_its_evidence(
    api, model, owner, team, general, versions
):
    set_policy(model, owner)
    version = versions[0]
    mine = evaluated(team, owner, general, of_version(version), lambda p: p != 7)
    theirs = evaluated(team, owner, general, version_base(version), always)
    r = promote(api, 1)
    assert r.status_code == 200, r.content
    evidence = AliasEvent.objects.get(alias="production").evidence
    test = expected_general(general, answers(always), answers(lambda p: p != 7))
    assert test["p_value"] >= 0.05 and test["difference"] < 0  # worse, not significantly
    assert evidence["general"] == {
        "dataset_version": general.pk,
        "evaluation": mine.pk,
        "base_evaluation": theirs.pk,
        "metric": GENERAL_METRIC,
        "score": pytest.approx(chrf(general, answers(lambda p: p != 7))),
        "base_score": pytest.approx(100.0),
        **test,
        "significant": False,
        "subject_better": False,
        "samples": N,
    }
    assert evidence["policy"]["require_no_general_drop"] is True


def test_a_drop_that_exact_match_cannot_see_is_seen_and_refused(
    api, browser_client, model, owner, team, general, versions
):
    """The class of the embedded model's blind check: base and candidate both score 0 by
    exact match on the general set (the base answers in sentences), so exact match shows no
    drop, but the candidate's answers are far further from the references. chrF, the
    general row's metric and the policy's default, finds the drop: the version page shows
    it and the promotion is refused."""
    set_policy(model, owner)  # general_metric left to its default
    version = versions[0]
    mine = evaluated_with(team, owner, general, of_version(version), task_format)
    theirs = evaluated_with(team, owner, general, version_base(version), in_a_sentence)
    assert mine.results["exact_match"]["score"] == theirs.results["exact_match"]["score"] == 0
    test = expected_general(general, in_a_sentence, task_format)
    assert test["ci_high"] < 0 and test["p_value"] < 0.05
    assert chrf(general, task_format) < 0.5 * chrf(general, in_a_sentence)

    r = browser_client.get(f"/registry/triage/v/{version.number}/")
    [card] = r.context["forgetting"]
    row = card["general"]
    assert row["drop"] is True and "significant drop" in r.content.decode()
    assert (row["metric"], row["subject_evaluation"], row["base_evaluation"]) == (
        GENERAL_METRIC,
        mine,
        theirs,
    )
    assert {k: row["test"][k] for k in test} == test

    r = promote(api, 1)
    assert r.status_code == 409, r.content
    [error] = r.json()["errors"]
    assert error["field"] == "require_no_general_drop"
    assert error["message"].startswith(
        f"{version} scores chrf {chrf(general, task_format):.4g} on the general set against "
        f"{chrf(general, in_a_sentence):.4g} for its base model: significantly worse by "
        f"{-test['difference']:.4g}"
    )
    assert not model.aliases.filter(name="production").exists()


def test_a_general_score_that_chrf_sees_unchanged_passes(
    api, browser_client, model, owner, team, general, versions
):
    """The same base, and a candidate that still answers in sentences: chrF does not move,
    no drop is shown and the promotion goes through."""
    set_policy(model, owner)
    version = versions[0]
    mine = evaluated_with(team, owner, general, of_version(version), in_a_sentence)
    theirs = evaluated_with(team, owner, general, version_base(version), in_a_sentence)
    [card] = browser_client.get(f"/registry/triage/v/{version.number}/").context["forgetting"]
    row = card["general"]
    assert row["metric"] == GENERAL_METRIC and row["drop"] is False
    assert row["test"]["difference"] == 0 and not row["test"]["significant"]
    assert promote(api, 1).status_code == 200
    evidence = AliasEvent.objects.get(alias="production").evidence["general"]
    assert (evidence["metric"], evidence["evaluation"], evidence["base_evaluation"]) == (
        GENERAL_METRIC,
        mine.pk,
        theirs.pk,
    )
    assert evidence["score"] == evidence["base_score"] > 0


def test_a_policy_that_names_its_general_metric_keeps_it(
    api, model, owner, team, general, versions
):
    """chrF is only the default: a policy stored with exact_match is judged on it."""
    assert services.policy_set(model=model, by=owner, policy={}).policy["general_metric"] == (
        GENERAL_METRIC
    )
    set_policy(model, owner, general_metric="exact_match")
    model.refresh_from_db()
    assert model.policy["general_metric"] == "exact_match"
    version = versions[0]
    evaluated_with(team, owner, general, of_version(version), task_format)
    evaluated_with(team, owner, general, version_base(version), in_a_sentence)
    assert promote(api, 1).status_code == 200
    evidence = AliasEvent.objects.get(alias="production").evidence["general"]
    assert (evidence["metric"], evidence["score"], evidence["base_score"]) == ("exact_match", 0, 0)


def test_missing_general_evaluations_refuse_the_promotion(
    api, model, owner, team, general, versions
):
    set_policy(model, owner)
    version = versions[0]
    evaluated(team, owner, general, of_version(version), always)
    r = promote(api, 1)
    assert r.status_code == 409
    assert r.json()["errors"] == [
        {
            "field": "require_no_general_drop",
            "message": f"No finished evaluation of base model {version.base_model} on "
            f"{general} / eval with {GENERAL_METRIC}",
        }
    ]


def test_without_the_general_set_the_rule_says_to_add_it(api, model, owner, versions):
    set_policy(model, owner)
    r = promote(api, 1)
    assert r.status_code == 409
    assert r.json()["errors"] == [
        {
            "field": "require_no_general_drop",
            "message": "The general-capability set is not in team Acme; add it and evaluate "
            f"{versions[0]} and its base model on it",
        }
    ]


def test_the_rule_is_off_by_default(api, model, owner, team, general, versions):
    evaluated(team, owner, general, of_version(versions[0]), lambda p: False)
    evaluated(team, owner, general, version_base(versions[0]), always)
    services.policy_set(model=model, by=owner, policy={})
    assert promote(api, 1).status_code == 200


def test_a_general_drop_on_a_lower_is_better_metric_reads_as_worse_not_negative(
    monkeypatch, general, versions
):
    """The refusal names how much worse the version is whatever the metric's direction: on
    loss (lower is better) a worse version's difference is positive, and it once read "a
    significant drop of -7.08"."""
    from types import SimpleNamespace

    import registry.policy as policy

    test = {"difference": 7.08, "ci_low": 6.81, "ci_high": 7.34, "p_value": 0.001}
    row = {
        "test": test,
        "drop": True,
        "subject_score": 12.26,
        "base_score": 5.18,
        "metric": "loss",
        "missing": [],
        "subject_evaluation": SimpleNamespace(pk=1),
        "base_evaluation": SimpleNamespace(pk=2),
    }
    monkeypatch.setattr(policy, "paired", lambda *args, **kwargs: row)
    [failure], _ = policy._general_drop(versions[0], policy.Policy(general_metric="loss"))
    assert failure.message.endswith(
        "significantly worse by 7.08 (difference 7.08, 95% interval 6.81 to 7.34, p 0.001)"
    )
