"""The automatic result of an A/B comparison: each subject against the first on every shared
metric (statistics.paired_test), stored once every evaluation has succeeded. The worker that
finishes an evaluation stores the result of each comparison it completes (queue.py); the
comparison's other half, creation and human review, is comparisons.py."""

from django.utils import timezone

from evaluation import statistics
from evaluation.models import Comparison, EvaluationRun
from finetune_hub.errors import Conflict


def evaluations_of(comparison: Comparison) -> list[EvaluationRun]:
    return [s.evaluation for s in comparison.subjects.select_related("evaluation")]


def scored_require(comparison: Comparison) -> list[EvaluationRun]:
    evaluations = evaluations_of(comparison)
    waiting = [e for e in evaluations if e.status != EvaluationRun.Status.SUCCEEDED]
    if waiting:
        raise Conflict(
            "Waiting for evaluations: " + ", ".join(f"{e.pk} ({e.status})" for e in waiting)
        )
    return evaluations


def auto_results(comparison: Comparison) -> dict:
    """Each subject against the first on every shared metric: difference, 95% interval,
    p-value of the paired bootstrap on per-sample statistics."""
    evaluations = scored_require(comparison)
    samples = [{s.example_id: s for s in e.samples.all()} for e in evaluations]
    common = sorted(set.intersection(*(set(s) for s in samples)))
    names = [
        m
        for m in evaluations[0].results
        if all(m in e.results for e in evaluations)
        and "ci_low" in evaluations[0].results[m]
        and m != "perplexity"
    ]
    out = {
        "subjects": [
            {"index": i, "evaluation": e.pk, "label": e.subject_label, "results": e.results}
            for i, e in enumerate(evaluations)
        ],
        "samples": len(common),
        "tests": [],
    }
    for name in names:
        for i in range(1, len(evaluations)):
            out["tests"].append(
                {
                    "metric": name,
                    "baseline": 0,
                    "subject": i,
                    **statistics.paired_test(name, samples[0], samples[i], common),
                }
            )
    return out


def comparison_score(*, comparison: Comparison) -> dict | None:
    """The automatic result as stored: computed and saved the first time every evaluation
    has succeeded (a finished evaluation does not change), read back from then on. None
    while an evaluation is still waiting."""
    if comparison.scored_at is None:
        if any(e.status != EvaluationRun.Status.SUCCEEDED for e in evaluations_of(comparison)):
            return None
        results = auto_results(comparison)
        # Two workers finishing the last evaluations at once may both get here: the first
        # write stands (the other computed the same: the bootstrap is seeded).
        Comparison.objects.filter(pk=comparison.pk, scored_at=None).update(
            results=results, scored_at=timezone.now()
        )
        comparison.refresh_from_db(fields=["results", "scored_at"])
    return comparison.results


def comparisons_score_ready(*, evaluation: EvaluationRun) -> None:
    """Stores the automatic result of each comparison this evaluation was the last to
    finish for."""
    for comparison in Comparison.objects.filter(subjects__evaluation=evaluation, scored_at=None):
        comparison_score(comparison=comparison)
