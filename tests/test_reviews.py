"""Blind human review of a comparison: pairs served blind and once per reviewer, sides
randomised, votes mapped back, calibration pairs, win rate, sign test and kappa, verdicts,
Bradley-Terry ratings, and the preferences exported as a DPO-ready version."""

import pytest

from datasets_app.models import DatasetVersion
from evaluation import comparisons, statistics
from evaluation.models import Vote
from finetune_hub.errors import ServiceError
from tests.support.clients import ApiClient
from tests.support.comparisons import automatic, good_and_bad, scored, second_reviewer, vote_for


def test_next_pair_is_blind(api, reviewer, human):
    client = ApiClient(reviewer)
    body = client.get(f"/api/comparisons/{human.pk}/next").json()
    assert set(body) == {"pair", "prompt", "left", "right"}
    assert "good" not in str(body) and "bad" not in str(body).replace("nope", "")
    # Asking again before voting serves the same pair, sides unchanged.
    assert client.get(f"/api/comparisons/{human.pk}/next").json() == body


def test_sides_are_randomised_and_votes_map_back(human, reviewer):
    sides, outcomes = set(), []
    while vote := comparisons.next_pair(comparison=human, reviewer=reviewer):
        view = comparisons.pair_view(vote)
        sides.add(vote.left_is_a)
        choice = (
            "left"
            if view["left"] != "nope" and view["right"] == "nope"
            else ("right" if view["right"] != "nope" and view["left"] == "nope" else "tie")
        )
        vote = comparisons.vote_cast(
            comparison=human, vote_id=vote.pk, reviewer=reviewer, choice=choice
        )
        outcomes.append(vote.outcome)
    assert sides == {True, False}
    assert "b" not in outcomes and "a" in outcomes  # the good subject (a) always won


def test_one_vote_per_reviewer_per_pair_and_each_pair_once(human, reviewer):
    client = ApiClient(reviewer)
    first = client.get(f"/api/comparisons/{human.pk}/next").json()
    assert (
        client.post(
            f"/api/comparisons/{human.pk}/votes", {"pair": first["pair"], "choice": "left"}
        ).status_code
        == 201
    )
    again = client.post(
        f"/api/comparisons/{human.pk}/votes", {"pair": first["pair"], "choice": "right"}
    )
    assert again.status_code == 409
    bad_choice = client.post(
        f"/api/comparisons/{human.pk}/votes", {"pair": first["pair"], "choice": "maybe"}
    )
    assert bad_choice.status_code == 422 and bad_choice.json()["errors"][0]["field"] == "choice"
    seen = {first["pair"]}
    while True:
        r = client.get(f"/api/comparisons/{human.pk}/next")
        if r.status_code == 204:
            break
        vote = r.json()["pair"]
        assert vote not in seen
        seen.add(vote)
        client.post(f"/api/comparisons/{human.pk}/votes", {"pair": vote, "choice": "tie"})
    pairs = {Vote.objects.get(pk=v).pair_id for v in seen}
    assert len(pairs) == human.pairs.count()


def test_reviewers_meet_on_the_calibration_pairs_then_spread(human, team, reviewer):
    other = second_reviewer(team)
    calibration = comparisons._calibration(human)
    assert len(calibration) == max(comparisons.CALIBRATION_MIN, human.pairs.count() // 10)
    mine = [vote_for(human, reviewer, "a").pair_id for _ in range(len(calibration) + 1)]
    theirs = [vote_for(human, other, "a").pair_id for _ in range(len(calibration) + 1)]
    assert mine[:-1] == theirs[:-1] == calibration  # both judged the same pairs first
    assert mine[-1] != theirs[-1]  # after calibration an unvoted pair comes before a voted one
    assert mine[-1] not in calibration and theirs[-1] not in calibration


def test_human_results_win_rate_sign_test_and_kappa_by_hand(human, team, reviewer):
    other = second_reviewer(team)
    # Calibration pairs (5): reviewer 1 says a,a,b,b,tie; reviewer 2 says a,b,b,b,a.
    # Agreement 3/5 (pairs 1, 3, 4); chance: a 2/5*2/5 + b 2/5*3/5 + tie 1/5*0 = 10/25;
    # kappa = (15/25 - 10/25) / (1 - 10/25) = 5/15 = 1/3.
    for outcome in ["a", "a", "b", "b", "tie"]:
        vote_for(human, reviewer, outcome)
    for outcome in ["a", "b", "b", "b", "a"]:
        vote_for(human, other, outcome)
    # Then each judges 6 pairs of their own, subject a winning all of them.
    for user in (reviewer, other):
        for _ in range(6):
            vote_for(human, user, "a")
    results = comparisons.human_results(human)
    assert results["kappa"] == pytest.approx(1 / 3, abs=1e-12)
    row = results["pairwise"]["0-1"]
    # decisive votes: a = 2 + 2 + 12 = 16, b = 2 + 3 = 5, one tie
    assert (row["wins_a"], row["wins_b"], row["ties"]) == (16, 5, 1)
    assert row["win_rate_a"] == pytest.approx(16 / 21)
    # two-sided exact sign test: 2 * P(X <= 5 | n=21, p=1/2) = 2 * 27,896 / 2**21
    assert row["p_value"] == pytest.approx(2 * 27896 / 2**21, abs=1e-12)
    assert row["verdict"] == "subject 0 wins"
    low, high = statistics.wilson(16, 21)
    assert (row["ci_low"], row["ci_high"]) == (low, high)
    assert (round(low, 4), round(high, 4)) == (0.5491, 0.8937)  # Wilson, z = 1.96, by hand


def test_verdict_waits_for_the_minimum_votes(human, reviewer):
    vote = comparisons.next_pair(comparison=human, reviewer=reviewer)
    comparisons.vote_cast(comparison=human, vote_id=vote.pk, reviewer=reviewer, choice="left")
    assert comparisons.human_results(human)["pairwise"]["0-1"]["verdict"] == "not enough votes"


def test_member_cannot_review_and_outsiders_get_404(human, member, outsider_api):
    r = ApiClient(member).get(f"/api/comparisons/{human.pk}/next")
    assert r.status_code == 403
    for path in ["", "/next", "/results"]:
        assert outsider_api.get(f"/api/comparisons/{human.pk}{path}").status_code == 404
    for path in ["/votes", "/export-preferences"]:
        assert (
            outsider_api.post(
                f"/api/comparisons/{human.pk}{path}", {"pair": 1, "choice": "left"}
            ).status_code
            == 404
        )
    assert not Vote.objects.exists()


def test_export_preferences_makes_a_dpo_ready_version(human, reviewer, owner, api):
    for _ in range(6):
        vote = comparisons.next_pair(comparison=human, reviewer=reviewer)
        comparisons.vote_cast(
            comparison=human,
            vote_id=vote.pk,
            reviewer=reviewer,
            choice="left" if vote.left_is_a else "right",
        )
    r = api.post(f"/api/comparisons/{human.pk}/export-preferences")
    assert r.status_code == 201, r.content
    version = DatasetVersion.objects.get(dataset_id=r.json()["dataset"], number=1)
    assert version.format == "preference" and version.size > 0
    example = version.examples.first()
    assert example.fields["chosen"] != "nope" and example.fields["rejected"] == "nope"


@pytest.mark.django_db(transaction=True)
def test_exported_preferences_train_a_dpo_run(team, owner, reviewer, tiny_model, cpu_worker):
    from experiments.services import experiment_create, run_enqueue
    from experiments.training.runner import train_next_run

    comparison = good_and_bad(team, owner, n=400)
    while vote := comparisons.next_pair(comparison=comparison, reviewer=reviewer):
        comparisons.vote_cast(
            comparison=comparison,
            vote_id=vote.pk,
            reviewer=reviewer,
            choice="left" if vote.left_is_a else "right",
        )
    preferences = comparisons.export_preferences(comparison=comparison, by=owner)
    assert preferences.size == comparison.pairs.count()
    experiment = experiment_create(
        team=team,
        name="dpo-from-votes",
        dataset_version=preferences,
        base_model=tiny_model,
        technique="dpo",
        hyperparameters={
            "max_steps": 3,
            "per_device_train_batch_size": 2,
            "max_length": 128,
            "logging_steps": 1,
        },
        by=owner,
    )
    run = train_next_run(run_id=run_enqueue(experiment=experiment, by=owner).pk)
    assert run.status == "succeeded" and run.step == 3, run.error


def test_human_results_report_every_count_and_key(human, reviewer):
    """Every field of a pair's row, with ties, both-bad votes and a served pair that was
    never answered (it is not a vote)."""
    for outcome in ["a", "b", "b", "tie", "both_bad", "both_bad"]:
        vote_for(human, reviewer, outcome)
    comparisons.next_pair(comparison=human, reviewer=reviewer)  # served, not answered
    results = comparisons.human_results(human)
    assert results["votes"] == 6 and results["ratings"] is None  # two subjects: no ratings
    row = results["pairwise"]["0-1"]
    low, high = statistics.wilson(1, 3)
    assert row == {
        "a": 0,
        "b": 1,
        "wins_a": 1,
        "wins_b": 2,
        "ties": 1,
        "both_bad": 2,
        "win_rate_a": pytest.approx(1 / 3),
        "ci_low": low,
        "ci_high": high,
        "p_value": statistics.sign_test(1, 2),
        "verdict": "not enough votes",  # 3 decisive votes, 5 needed
    }


def test_a_pair_without_decisive_votes_has_no_win_rate(human, reviewer):
    vote_for(human, reviewer, "tie")
    row = comparisons.human_results(human)["pairwise"]["0-1"]
    assert row["win_rate_a"] is None and row["verdict"] == "not enough votes"


def test_verdicts_at_the_minimum_votes_and_the_significance_line(human, reviewer, team):
    # Exactly min_votes (5) decisive votes, split 3-2: a verdict, and not a significant one.
    for outcome in ["a", "a", "a", "b", "b"]:
        vote_for(human, reviewer, outcome)
    row = comparisons.human_results(human)["pairwise"]["0-1"]
    assert row["p_value"] == 1.0 and row["verdict"] == "no significant difference"
    # Then 12 more for subject b (index 1): 3 against 14, significant, b's way.
    other = second_reviewer(team)
    for _ in range(12):
        vote_for(human, other, "b")
    row = comparisons.human_results(human)["pairwise"]["0-1"]
    assert (row["wins_a"], row["wins_b"]) == (3, 14) and row["p_value"] < 0.05
    assert row["verdict"] == "subject 1 wins"


@pytest.mark.parametrize("winner", ["a", "b"])
def test_three_subjects_get_bradley_terry_ratings(winner, team, owner, reviewer, version, subjects):
    """Three subjects, one side of every pair always preferred (the lower index for "a",
    the higher for "b"): the ratings order the subjects so, each with an interval around
    its score."""
    scored(team, owner, version, "mid", lambda e: e.fields["output"] if e.position % 2 else "x")
    comparison = comparisons.comparison_create(
        team=team,
        subjects=[{"base_model": "good"}, {"base_model": "mid"}, {"base_model": "bad"}],
        dataset_version=version,
        mode="human",
        by=owner,
    )
    while vote := comparisons.next_pair(comparison=comparison, reviewer=reviewer):
        comparisons.vote_cast(
            comparison=comparison,
            vote_id=vote.pk,
            reviewer=reviewer,
            choice="left" if vote.left_is_a == (winner == "a") else "right",
        )
    ratings = comparisons.human_results(comparison)["ratings"]
    assert [r["subject"] for r in ratings] == [0, 1, 2]
    scores = [r["score"] for r in ratings]
    assert scores == sorted(scores, reverse=winner == "a") and len(set(scores)) == 3
    for rating in ratings:
        assert rating["ci_low"] < rating["score"] < rating["ci_high"]


def test_an_automatic_comparison_has_no_pairs_to_review(team, owner, reviewer, version, subjects):
    comparison = automatic(team, owner, version, "good", "bad")
    with pytest.raises(ServiceError) as caught:
        comparisons.next_pair(comparison=comparison, reviewer=reviewer)
    assert (caught.value.status, caught.value.detail) == (
        409,
        "This comparison is automatic; it has no human review",
    )


def test_an_unanswered_pair_of_another_comparison_is_not_served(human, reviewer, team, owner):
    other = comparisons.comparison_create(
        team=team,
        subjects=[{"base_model": "bad"}, {"base_model": "good"}],
        dataset_version=human.dataset_version,
        mode="human",
        by=owner,
    )
    waiting = comparisons.next_pair(comparison=human, reviewer=reviewer)  # left unanswered
    served = comparisons.next_pair(comparison=other, reviewer=reviewer)
    assert served.pair.comparison_id == other.pk and served.pk != waiting.pk


def test_each_reviewer_is_served_their_own_pair(human, reviewer, team):
    other = second_reviewer(team)
    waiting = comparisons.next_pair(comparison=human, reviewer=reviewer)  # left unanswered
    served = comparisons.next_pair(comparison=human, reviewer=other)
    assert served.reviewer == other and served.pk != waiting.pk
    assert comparisons.next_pair(comparison=human, reviewer=reviewer).pk == waiting.pk
