"""A/B comparisons of two or more subjects on one split: automatic (paired bootstrap on
per-sample statistics; the result is comparison_results.py) and blind human review (balanced
pairs, randomised sides, one vote per reviewer and pair), and the export of votes as
preference data for DPO."""

import itertools
import json
import random
from collections import defaultdict

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from datasets_app import formats
from datasets_app.models import DataFormat, Dataset
from evaluation import statistics
from evaluation.comparison_results import comparison_score, evaluations_of, scored_require
from evaluation.models import (
    Comparison,
    ComparisonSubject,
    EvaluationRun,
    ReviewPair,
    SampleResult,
    Vote,
)
from evaluation.services import evaluation_create
from evaluation.subjects import Subject
from finetune_hub.errors import Conflict, NotFound, invalid
from finetune_hub.models import Role, Team
from finetune_hub.selectors import membership_require


def _reusable_evaluation(team, subject: Subject, dataset_version, split, generation):
    """The newest evaluation that names exactly this subject (a version's, not its run's:
    the page labels a subject by its evaluation) on the same data, not failed."""
    qs = EvaluationRun.objects.filter(
        subject.evaluations(),
        team=team,
        dataset_version=dataset_version,
        split=split,
        subject_kind=subject.kind,
        status__in=[*EvaluationRun.ACTIVE, EvaluationRun.Status.SUCCEEDED],
    )
    if generation is not None:
        qs = qs.filter(generation=generation)
    return qs.order_by("-created_at").first()


@transaction.atomic
def comparison_create(
    *,
    team: Team,
    subjects: list[Subject | dict],
    dataset_version,
    split: str = "eval",
    mode: str = Comparison.Mode.AUTO,
    by,
    name: str = "",
    metric_names: list[str] | None = None,
    generation: dict | None = None,
    min_votes: int = 20,
) -> Comparison:
    """Each subject is scored by an evaluation on the same version and split: an existing
    one is reused, otherwise one is queued."""
    membership_require(user=by, team=team, role=Role.MEMBER)
    if mode not in Comparison.Mode.values:
        raise invalid(f"mode is auto or human, not {mode!r}", field="mode")
    if len(subjects) < 2 or not all(isinstance(s, dict | Subject) for s in subjects):
        raise invalid(
            "Compare at least two subjects, each {run}, {model_version} or {base_model}",
            field="subjects",
        )
    subjects = [Subject.from_api(s) for s in subjects]
    if len(set(subjects)) != len(subjects):
        raise invalid("The same subject is listed twice", field="subjects")
    if not 1 <= min_votes <= 10_000:
        raise invalid("min_votes must be between 1 and 10000", field="min_votes")
    comparison = Comparison.objects.create(
        team=team,
        name=name,
        dataset_version=dataset_version,
        split=split,
        mode=mode,
        min_votes=min_votes,
        created_by=by,
    )
    for index, subject in enumerate(subjects):
        evaluation = _reusable_evaluation(
            team, subject, dataset_version, split, generation
        ) or evaluation_create(
            team=team,
            subject=subject,
            dataset_version=dataset_version,
            split=split,
            metric_names=metric_names,
            generation_settings=generation,
            by=by,
        )
        ComparisonSubject.objects.create(comparison=comparison, index=index, evaluation=evaluation)
    if mode == Comparison.Mode.HUMAN:
        examples = dataset_version.examples.filter(split=split).values_list("pk", flat=True)
        ReviewPair.objects.bulk_create(
            ReviewPair(comparison=comparison, example_id=e, subject_a=a, subject_b=b)
            for e in examples
            for a, b in itertools.combinations(range(len(subjects)), 2)
        )
    comparison_score(comparison=comparison)  # when every evaluation was done already
    return comparison


# Human review

CALIBRATION_MIN = 5


def _calibration(comparison: Comparison) -> list[int]:
    """The pairs every reviewer judges first, so reviewers meet on the same pairs and their
    agreement (kappa) can be measured: a tenth of the pairs, at least CALIBRATION_MIN."""
    ids = list(comparison.pairs.order_by("pk").values_list("pk", flat=True))
    return ids[: max(CALIBRATION_MIN, len(ids) // 10)]


def next_pair(*, comparison: Comparison, reviewer) -> Vote | None:
    """The caller's next blind pair: their unanswered one if any, else the calibration pairs
    they have not judged, else a pair they have not seen with the fewest votes so far (so
    every pair gets votes). Sides at random."""
    membership_require(user=reviewer, team=comparison.team, role=Role.REVIEWER)
    if comparison.mode != Comparison.Mode.HUMAN:
        raise Conflict("This comparison is automatic; it has no human review")
    scored_require(comparison)
    pending = Vote.objects.filter(pair__comparison=comparison, reviewer=reviewer, choice="").first()
    if pending:
        return pending
    seen = Vote.objects.filter(pair__comparison=comparison, reviewer=reviewer).values("pair_id")
    calibration = _calibration(comparison)
    for _ in range(5):
        unseen = comparison.pairs.exclude(pk__in=seen)
        pair = (
            unseen.filter(pk__in=calibration).order_by("pk").first()
            or unseen.order_by("votes_count", "?").first()
        )
        if pair is None:
            return None
        try:
            with transaction.atomic():
                return Vote.objects.create(
                    pair=pair, reviewer=reviewer, left_is_a=random.random() < 0.5
                )
        except IntegrityError:  # the same reviewer in two tabs: take the next pair
            continue
    return None


def review_progress(*, comparison: Comparison, reviewer) -> dict:
    """How far the reviewer is: pairs answered and pairs in the comparison."""
    answered = (
        Vote.objects.filter(pair__comparison=comparison, reviewer=reviewer)
        .exclude(choice="")
        .count()
    )
    return {"answered": answered, "total": comparison.pairs.count()}


def pair_view(vote: Vote) -> dict:
    """What the reviewer sees: the prompt and two answers, never which subject gave which."""
    pair = vote.pair
    subjects = {s.index: s.evaluation_id for s in pair.comparison.subjects.all()}
    answers = dict(
        SampleResult.objects.filter(
            example_id=pair.example_id,
            evaluation_id__in=[subjects[pair.subject_a], subjects[pair.subject_b]],
        ).values_list("evaluation_id", "prediction")
    )
    a, b = answers[subjects[pair.subject_a]], answers[subjects[pair.subject_b]]
    fmt = pair.comparison.dataset_version.format
    prompt, _ = formats.prompt_and_reference(fmt, pair.example.fields)
    left, right = (a, b) if vote.left_is_a else (b, a)
    return {"pair": vote.pk, "prompt": prompt, "left": left, "right": right}


@transaction.atomic
def vote_cast(
    *, comparison: Comparison, vote_id: int, reviewer, choice: str, comment: str = ""
) -> Vote:
    membership_require(user=reviewer, team=comparison.team, role=Role.REVIEWER)
    vote = Vote.objects.select_for_update().filter(pk=vote_id, pair__comparison=comparison).first()
    if vote is None or vote.reviewer_id != reviewer.pk:
        raise NotFound("No such pair served to you")
    if choice not in Vote.Choice.values:
        raise invalid(
            f"choice is one of {', '.join(Vote.Choice.values)}", field="choice", status=422
        )
    if vote.choice:
        raise Conflict("You voted on this pair already")
    vote.choice, vote.comment, vote.voted_at = choice, comment[:2000], timezone.now()
    vote.save()
    ReviewPair.objects.filter(pk=vote.pair_id).update(votes_count=F("votes_count") + 1)
    return vote


def _outcomes(comparison: Comparison):
    return [
        (v.pair.subject_a, v.pair.subject_b, v.outcome, v.pair_id, v.reviewer_id)
        # In the order they were served: kappa pairs a pair's first and second rater, which
        # an unordered query (PostgreSQL) would swap from pair to pair.
        for v in Vote.objects.filter(pair__comparison=comparison)
        .exclude(choice="")
        .select_related("pair")
        .order_by("pk")
    ]


def human_results(comparison: Comparison) -> dict:
    outcomes = _outcomes(comparison)
    n = comparison.subjects.count()
    pairwise = {}
    for a, b in itertools.combinations(range(n), 2):
        rows = [o for o in outcomes if (o[0], o[1]) == (a, b)]
        wins, losses = sum(o[2] == "a" for o in rows), sum(o[2] == "b" for o in rows)
        ties, both_bad = sum(o[2] == "tie" for o in rows), sum(o[2] == "both_bad" for o in rows)
        low, high = statistics.wilson(wins, wins + losses)
        p = statistics.sign_test(wins, losses)
        decisive = wins + losses
        verdict = "not enough votes"
        if decisive >= comparison.min_votes:
            verdict = (
                "no significant difference"
                if p >= statistics.SIGNIFICANCE
                else f"subject {a} wins"
                if wins > losses
                else f"subject {b} wins"
            )
        pairwise[f"{a}-{b}"] = {
            "a": a,
            "b": b,
            "wins_a": wins,
            "wins_b": losses,
            "ties": ties,
            "both_bad": both_bad,
            "win_rate_a": wins / decisive if decisive else None,
            "ci_low": low,
            "ci_high": high,
            "p_value": p,
            "verdict": verdict,
        }
    return {
        "votes": len(outcomes),
        "pairwise": pairwise,
        "kappa": _kappa(outcomes),
        "ratings": _ratings(outcomes, n) if n > 2 else None,
    }


def _ratings(outcomes, n: int) -> list[dict]:
    games = [(a, b) if o == "a" else (b, a) for a, b, o, *_ in outcomes if o in ("a", "b")]
    scores = statistics.bradley_terry(games, n)
    intervals = statistics.bradley_terry_ci(games, n)
    return [
        {"subject": i, "score": float(scores[i]), "ci_low": lo, "ci_high": hi}
        for i, (lo, hi) in enumerate(intervals)
    ]


def _kappa(outcomes) -> float | None:
    """Cohen's kappa over pairs that two reviewers judged (their first two votes)."""
    by_pair = defaultdict(list)
    for _, _, outcome, pair, _reviewer in outcomes:
        by_pair[pair].append(outcome)
    doubled = [v[:2] for v in by_pair.values() if len(v) >= 2]
    return statistics.cohen_kappa([d[0] for d in doubled], [d[1] for d in doubled])


def side_by_side(comparison: Comparison, a: int = 0, b: int = 1, limit: int = 200) -> list[dict]:
    evaluations = evaluations_of(comparison)
    left = {s.example_id: s for s in evaluations[a].samples.all()}
    right = {s.example_id: s for s in evaluations[b].samples.all()}
    rows = []
    for example_id in sorted(left.keys() & right.keys(), key=lambda x: left[x].position)[:limit]:
        x, y = left[example_id], right[example_id]
        rows.append(
            {
                "position": x.position,
                "reference": x.reference,
                "a": x.prediction,
                "b": y.prediction,
                "scores_a": x.scores,
                "scores_b": y.scores,
            }
        )
    return rows


# Export


@transaction.atomic
def export_preferences(*, comparison: Comparison, by, dataset: Dataset | None = None):
    """Votes with a winner become prompt/chosen/rejected rows in a new version of a
    preference dataset (created beside the source when none is given), for DPO."""
    from datasets_app.services import dataset_create, dataset_version_upload

    membership_require(user=by, team=comparison.team, role=Role.MEMBER)
    rows = _preference_rows(comparison)
    if not rows:
        raise Conflict("No vote chose a winner yet; nothing to export")
    if dataset is None:
        source = comparison.dataset_version.dataset
        name = f"{source.name}-preferences"
        dataset = Dataset.objects.filter(team=comparison.team, name=name).first() or dataset_create(
            team=comparison.team,
            name=name,
            task=DataFormat.PREFERENCE,
            by=by,
            description=f"Human preferences from comparison {comparison.pk}",
        )
    if dataset.task != DataFormat.PREFERENCE or dataset.team_id != comparison.team_id:
        raise invalid("Export into a preference dataset of the same team", field="dataset")
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    return dataset_version_upload(
        dataset=dataset,
        filename=f"comparison-{comparison.pk}.jsonl",
        data=data,
        by=by,
        message=f"Votes of comparison {comparison.pk}",
    )


def _preference_rows(comparison: Comparison) -> list[dict]:
    subjects = {s.index: s.evaluation_id for s in comparison.subjects.all()}
    answers = {
        (s.evaluation_id, s.example_id): s.prediction
        for s in SampleResult.objects.filter(evaluation_id__in=subjects.values())
    }
    fmt = comparison.dataset_version.format
    rows, seen = [], set()
    votes = Vote.objects.filter(
        pair__comparison=comparison, choice__in=["left", "right"]
    ).select_related("pair__example")
    for vote in votes.order_by("pair_id", "pk"):
        pair = vote.pair
        winner, loser = (
            (pair.subject_a, pair.subject_b)
            if vote.outcome == "a"
            else (pair.subject_b, pair.subject_a)
        )
        chosen = answers[(subjects[winner], pair.example_id)]
        rejected = answers[(subjects[loser], pair.example_id)]
        prompt = formats.prompt_and_reference(fmt, pair.example.fields)[0]
        key = (prompt, chosen, rejected)
        if chosen.strip() and rejected.strip() and chosen != rejected and key not in seen:
            seen.add(key)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows
