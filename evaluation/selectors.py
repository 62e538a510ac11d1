from django.core.paginator import Paginator
from django.db.models import QuerySet

from datasets_app.selectors import published_versions_for
from evaluation import metrics
from evaluation.models import Comparison, ComparisonSubject, EvaluationRun
from experiments.models import TrainingRun
from finetune_hub.errors import invalid
from finetune_hub.selectors import get_visible, visible_to


def evaluations_for(*, user) -> QuerySet[EvaluationRun]:
    return visible_to(EvaluationRun.objects.select_related("dataset_version__dataset"), user=user)


def form_choices(*, user) -> dict:
    """What the evaluation and comparison forms offer: the user's published dataset
    versions, finished runs (as subjects) and the metric modules."""
    runs = visible_to(
        TrainingRun.objects.filter(status=TrainingRun.Status.SUCCEEDED),
        user=user,
        team_path="experiment__team",
    )
    return {
        "versions": published_versions_for(user=user),
        "runs": runs.select_related("experiment"),
        "metric_names": [*metrics.available(), "loss"],
    }


def evaluation_get(*, user, evaluation_id: int) -> EvaluationRun:
    return get_visible(
        EvaluationRun.objects.select_related("dataset_version__dataset", "team"),
        user=user,
        what="Evaluation",
        pk=evaluation_id,
    )


def samples_page(
    *, evaluation: EvaluationRun, order: str | None = None, page: int = 1, page_size: int = 50
):
    """Per-sample results, by position or by a metric (`-bleu`: best first) to see where
    a subject wins and loses."""
    qs = evaluation.samples.all()
    if order:
        metric = order.lstrip("-")
        if metric not in evaluation.results and metric != "loss":
            raise invalid(f"Cannot order by {metric!r}", field="order", status=422)
        samples = sorted(
            qs, key=lambda s: s.scores.get(metric, float("nan")), reverse=order.startswith("-")
        )
        return Paginator(samples, page_size).get_page(page)
    return Paginator(qs.order_by("position"), page_size).get_page(page)


def comparisons_for(*, user) -> QuerySet[Comparison]:
    return visible_to(Comparison.objects.select_related("dataset_version__dataset"), user=user)


def comparison_get(*, user, comparison_id: int) -> Comparison:
    return get_visible(
        Comparison.objects.select_related("dataset_version__dataset", "team"),
        user=user,
        what="Comparison",
        pk=comparison_id,
    )


def comparison_subjects(*, comparison: Comparison) -> list[ComparisonSubject]:
    return list(comparison.subjects.select_related("evaluation"))
