"""The forgetting check: a fine-tuned subject's general-set score beside its base model's,
with the paired bootstrap's difference and 95% interval, on the comparison page and the
model version page; and the promotion rule require_no_general_drop, which refuses a
version significantly worse than its base model on the general set. The general row is on
chrF (the policy's general_metric by default): exact match sees no drop from a base model
that already scores 0, as the embedded one does. The task row stays on exact match.

Evaluations are built from stored answers with known hits (no model runs), so the numbers
come from the real scoring and the real paired bootstrap."""

import numpy as np
import pytest
from django.template.defaultfilters import floatformat
from sacrebleu.metrics import CHRF

from evaluation import statistics
from evaluation.general.services import general_set_version
from evaluation.models import Comparison, ComparisonSubject, EvaluationRun
from evaluation.queue import _score
from evaluation.subjects import Subject
from registry import services
from registry.models import AliasEvent
from tests.support.comparisons import answered
from tests.support.registry_helpers import trained_run

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


@pytest.fixture
def general(team, owner):
    return general_set_version(team=team, by=owner)


@pytest.fixture
def run(team, owner, tiny_model):
    return trained_run(team, owner, tiny_model, seed=1)


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


def test_the_comparison_page_shows_the_general_drop_beside_the_task_gain(
    browser_client, team, owner, general, run
):
    mine = evaluated(team, owner, general, of_run(run), every_other)
    theirs = evaluated(team, owner, general, base(run), always)
    comparison = task_comparison(team, owner, run)
    r = browser_client.get(f"/comparisons/{comparison.pk}/")
    [card] = r.context["forgetting"]
    assert (card["subject"], card["base"]) == (of_run(run), base(run))
    row = card["general"]
    assert (row["subject_evaluation"], row["base_evaluation"]) == (mine, theirs)
    assert row["metric"] == GENERAL_METRIC
    assert row["subject_score"] == pytest.approx(chrf(general, answers(every_other)))
    assert row["base_score"] == pytest.approx(100.0)
    test = expected_general(general, answers(always), answers(every_other))
    assert {k: row["test"][k] for k in test} == test
    assert row["test"]["samples"] == N and row["drop"] is True
    examples = run.experiment.dataset_version.examples.filter(split="eval").order_by("pk")
    task = card["task"]
    assert task["metric"] == "exact_match" and task["drop"] is False
    gain = expected(lambda p: p % 3 == 0, always, [e.position for e in examples])
    assert {k: task["test"][k] for k in gain} == gain and gain["difference"] > 0
    page = r.content.decode()
    assert f"Forgetting check: run #{run.pk} against base model {run.model_base}" in page
    for shown in (test, gain):
        assert f"<b>{floatformat(shown['difference'], 4)}</b>" in page
        assert f"{floatformat(shown['ci_low'], 4)} – {floatformat(shown['ci_high'], 4)}" in page
    assert "significant drop" in page and "Task gain" in page


def test_a_comparison_of_base_models_only_has_no_card(browser_client, team, owner, general):
    comparison = compare(
        team,
        owner,
        evaluated(team, owner, general, Subject(kind="base_model", base_model="a"), always),
        evaluated(team, owner, general, Subject(kind="base_model", base_model="b"), always),
    )
    r = browser_client.get(f"/comparisons/{comparison.pk}/")
    assert r.context["forgetting"] == [] and "Forgetting check" not in r.content.decode()


def test_missing_general_evaluations_are_named_with_a_button_to_queue_each(
    browser_client, team, owner, general, run
):
    comparison = task_comparison(team, owner, run)
    page = browser_client.get(f"/comparisons/{comparison.pk}/").content.decode()
    assert (
        f"Evaluate run #{run.pk} and base model {run.model_base} on this data to compare." in page
    )
    assert f'name="subject" value="run:{run.pk}"' in page
    assert f'name="subject" value="base:{run.model_base}"' in page
    assert f'name="dataset_version" value="{general.pk}"' in page
    # The button queues the metric the card's general row reads, not a name of its own.
    assert page.count(f'name="metrics" value="{GENERAL_METRIC}"') == 2
    assert f"Queue run #{run.pk} on the general set" in page


def test_without_the_general_set_the_card_offers_to_add_it(browser_client, team, owner, run):
    comparison = task_comparison(team, owner, run)
    page = browser_client.get(f"/comparisons/{comparison.pk}/").content.decode()
    assert "The general-capability set is not in team Acme yet." in page
    assert "Add the general-capability set to Acme" in page


@pytest.fixture
def model(team, owner):
    return services.model_create(team=team, name="triage", by=owner)


@pytest.fixture
def versions(model, owner, run, team, tiny_model):
    second = trained_run(team, owner, tiny_model, seed=2, experiment=run.experiment)
    return [services.version_register(model=model, run=r, by=owner) for r in (run, second)]


def of_version(version):
    return Subject.of_version(version)


def version_base(version):
    return Subject(kind="base_model", base_model=version.base_model)


def test_the_version_page_shows_the_check(browser_client, team, owner, general, versions):
    version = versions[1]
    evaluated(team, owner, general, of_version(version), lambda p: p % 5 != 0)
    evaluated(team, owner, general, version_base(version), lambda p: p % 5 != 1)
    r = browser_client.get(f"/registry/triage/v/{version.number}/")
    [card] = r.context["forgetting"]
    test = expected_general(general, answers(lambda p: p % 5 != 1), answers(lambda p: p % 5 != 0))
    assert {k: card["general"]["test"][k] for k in test} == test
    assert card["general"]["drop"] is False  # the same score, other questions missed
    assert card["task"]["missing"] == [of_version(version), version_base(version)]
    page = r.content.decode()
    assert f"Forgetting check: model version {version.pk} against base model" in page
    assert "no significant change" in page


def set_policy(model, owner, **rules):
    services.policy_set(model=model, by=owner, policy={"require_no_general_drop": True, **rules})


def promote(api, number):
    return api.put(
        "/api/registry/models/triage/aliases/production", {"version": number, "reason": "ship"}
    )


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


def in_a_sentence(example):
    """Right inside a sentence, as a small base model answers: wrong by exact match."""
    return f"The answer is {example.fields['output']}."


def task_format(example):
    """What a fine-tune that overfit a narrow ticket format answers to anything."""
    return "Ticket category: billing. Priority: low."


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
