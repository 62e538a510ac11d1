import pytest

from datasets_app.models import DatasetVersion
from evaluation import comparison_results, comparisons
from evaluation.models import Comparison, EvaluationRun
from evaluation.queue import _score, evaluation_execute
from finetune_hub.errors import ServiceError
from tests.support.comparisons import answered, automatic


def test_subjects_reuse_existing_evaluations(human, subjects):
    assert [s.evaluation for s in human.subjects.all()] == list(subjects)
    assert human.pairs.count() == subjects[0].samples.count()


def test_automatic_comparison_finds_the_better_subject(team, owner, version, subjects):
    comparison = automatic(team, owner, version, "bad", "good")
    results = comparison_results.auto_results(comparison)
    test = next(t for t in results["tests"] if t["metric"] == "exact_match")
    assert test["difference"] == pytest.approx(
        subjects[0].results["exact_match"]["score"] - subjects[1].results["exact_match"]["score"]
    )
    assert test["significant"] and test["subject_better"] and test["ci_low"] > 0


def test_the_automatic_result_is_stored_when_the_comparison_is_made(team, owner, version, subjects):
    comparison = automatic(team, owner, version, "bad", "good")
    comparison.refresh_from_db()
    assert comparison.scored_at is not None
    assert comparison.results == comparison_results.auto_results(comparison)


def test_the_last_evaluation_to_finish_stores_the_result(team, owner, version, subjects):
    late = answered(team, owner, version, "late", lambda e: e.fields["output"], status="queued")
    comparison = automatic(team, owner, version, "bad", "late")
    assert comparison_results.comparison_score(comparison=comparison) is None
    assert comparison.scored_at is None and comparison.results == {}
    evaluation_execute(evaluation_id=late.pk)  # its answers are stored: no model is loaded
    comparison.refresh_from_db()
    assert comparison.scored_at is not None
    assert comparison.results == comparison_results.auto_results(comparison)
    test = next(t for t in comparison.results["tests"] if t["metric"] == "exact_match")
    assert test["significant"] and test["subject_better"]


def test_the_page_shows_the_stored_result(browser_client, team, owner, version, subjects):
    comparison = automatic(team, owner, version, "good", "bad")
    comparison.refresh_from_db()
    stored = comparison.results
    stored["tests"][0]["difference"] = 123.4567
    Comparison.objects.filter(pk=comparison.pk).update(results=stored)
    html = browser_client.get(f"/comparisons/{comparison.pk}/").content.decode()
    assert "123.4567" in html


def test_comparison_input_errors(api, version, tiny_model):
    def post(**body):
        return api.post("/api/comparisons", {"dataset_version": version.pk, **body})

    assert post(subjects=[{"base_model": tiny_model}]).json()["errors"][0]["field"] == "subjects"
    r = post(subjects=[{"base_model": tiny_model}] * 2)
    assert r.status_code == 400 and "twice" in r.json()["detail"]
    r = post(subjects=[{"base_model": tiny_model}, {"run": 999}], mode="human")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "subject.run"
    assert (
        post(subjects=[{"base_model": "a"}, {"base_model": "b"}], mode="vibes").status_code == 400
    )
    assert not Comparison.objects.exists()


@pytest.mark.parametrize(
    "differs",
    ["team", "dataset_version", "split", "subject_kind", "failed", "generation"],
)
def test_an_evaluation_is_reused_only_for_the_same_team_data_subject_and_settings(
    differs, team, owner, version, tiny_model
):
    """A comparison reuses a subject's evaluation only when everything that shapes its
    scores is the same: never another team's, another data version's or split's, a run's
    for a base model, a failed one, or one generated with other settings."""
    from datasets_app.models import Dataset
    from finetune_hub.models import Team

    subject = comparisons.Subject.from_api({"base_model": "good"})
    settings = {"max_new_tokens": 16}
    fields = dict(
        team=team,
        subject_kind="base_model",
        base_model="good",
        dataset_version=version,
        split="eval",
        metrics=["exact_match"],
        generation=settings,
        status="succeeded",
        created_by=owner,
    )
    if differs == "team":
        fields["team"] = Team.objects.create(name="Other")
    elif differs == "dataset_version":
        other = Dataset.objects.create(team=team, name="o", task="instruction", created_by=owner)
        fields["dataset_version"] = DatasetVersion.objects.create(
            dataset=other, number=1, format="instruction", created_by=owner
        )
    elif differs == "split":
        fields["split"] = "test"
    elif differs == "subject_kind":  # a run's evaluation, under the same base model name
        from experiments.services import run_enqueue
        from tests.support.training_helpers import make_experiment

        experiment = make_experiment(team, owner, tiny_model)
        fields.update(
            subject_kind="run",
            training_run=run_enqueue(experiment=experiment, by=owner, dispatch=False),
        )
    elif differs == "failed":
        fields["status"] = "failed"
    else:
        fields["generation"] = {"max_new_tokens": 64}
    EvaluationRun.objects.create(**fields)

    def reused():
        return comparisons._reusable_evaluation(team, subject, version, "eval", settings)

    assert reused() is None
    matching = dict(
        team=team,
        dataset_version=version,
        split="eval",
        subject_kind="base_model",
        training_run=None,
        status="succeeded",
        generation=settings,
    )
    same = EvaluationRun.objects.create(**{**fields, **matching})
    assert reused().pk == same.pk
    # Without settings to match, any generation settings do.
    assert comparisons._reusable_evaluation(team, subject, version, "eval", None).pk == same.pk


def test_a_comparison_of_unfinished_evaluations_says_which_it_waits_for(
    team, owner, version, subjects
):
    running = answered(team, owner, version, "slow", lambda e: "x", status="running")
    queued = answered(team, owner, version, "slower", lambda e: "x", status="queued")
    comparison = automatic(team, owner, version, "good", "slow", "slower")
    with pytest.raises(ServiceError) as caught:
        comparison_results.auto_results(comparison)
    assert (caught.value.status, caught.value.detail) == (
        409,
        f"Waiting for evaluations: {running.pk} (running), {queued.pk} (queued)",
    )


def test_automatic_results_list_each_subject_and_each_shared_interval_metric(
    team, owner, version, subjects
):
    """Subjects in order with their evaluations; one test per metric every subject has with
    an interval (perplexity and a metric only one subject has are left out); every sample
    in common counted."""
    good, bad = subjects
    EvaluationRun.objects.filter(pk=good.pk).update(
        results={**good.results, "perplexity": {"score": 3.0, "ci_low": 2.0, "ci_high": 4.0}}
    )
    EvaluationRun.objects.filter(pk=bad.pk).update(
        results={
            **bad.results,
            "perplexity": {"score": 9.0, "ci_low": 8.0, "ci_high": 10.0},
            "bleu": {"score": 1.0, "ci_low": 0.0, "ci_high": 2.0},  # bad's only
        }
    )
    comparison = automatic(team, owner, version, "bad", "good")
    results = comparison_results.auto_results(comparison)
    bad.refresh_from_db()
    good.refresh_from_db()
    assert results["subjects"] == [
        {"index": 0, "evaluation": bad.pk, "label": bad.subject_label, "results": bad.results},
        {"index": 1, "evaluation": good.pk, "label": good.subject_label, "results": good.results},
    ]
    assert results["samples"] == version.examples.filter(split="eval").count()
    # (In results' key order, which PostgreSQL's jsonb does not keep: compared as a set.)
    assert sorted((t["metric"], t["baseline"], t["subject"]) for t in results["tests"]) == [
        ("chrf", 0, 1),
        ("exact_match", 0, 1),
    ]


def test_a_lower_is_better_metric_counts_a_drop_as_better(team, owner, version):
    """TER falls when the answers improve: the subject with less TER is the better one, and
    each difference is the corpus metric's (chrF's own, not a mean of its statistics)."""
    metrics = ["ter", "chrf"]
    worse = answered(
        team, owner, version, "w", lambda e: "nope " + e.fields["output"], metrics=metrics
    )
    better = answered(team, owner, version, "b", lambda e: e.fields["output"], metrics=metrics)
    for evaluation in (worse, better):
        _score(evaluation)
        evaluation.refresh_from_db()
    comparison = automatic(team, owner, version, "w", "b")
    tests = {t["metric"]: t for t in comparison_results.auto_results(comparison)["tests"]}
    assert tests["ter"]["difference"] < 0 and tests["ter"]["subject_better"]
    assert tests["chrf"]["difference"] > 0 and tests["chrf"]["subject_better"]
    for name in metrics:
        corpus = better.results[name]["score"] - worse.results[name]["score"]
        assert tests[name]["difference"] == pytest.approx(corpus, abs=1e-9)


def test_scoring_a_comparison_writes_that_comparison_only_and_only_once(
    team, owner, version, subjects
):
    first = automatic(team, owner, version, "bad", "good")
    second = automatic(team, owner, version, "good", "bad")
    Comparison.objects.filter(pk__in=[first.pk, second.pk]).update(results={}, scored_at=None)
    first.refresh_from_db()
    assert comparison_results.comparison_score(comparison=first)["samples"] > 0
    second.refresh_from_db()
    assert second.scored_at is None and second.results == {}
    # A worker holding a stale copy (not scored yet) does not overwrite the first write.
    Comparison.objects.filter(pk=first.pk).update(results={"first": "write"})
    first.scored_at = None
    assert comparison_results.comparison_score(comparison=first) == {"first": "write"}
