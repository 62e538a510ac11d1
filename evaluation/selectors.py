import math

from django.core.paginator import Paginator
from django.db.models import QuerySet

from datasets_app.selectors import published_versions_for
from evaluation import metrics
from evaluation.general.services import METRIC as GENERAL_METRIC
from evaluation.general.services import general_version
from evaluation.models import Comparison, ComparisonSubject, EvaluationRun
from experiments.models import TrainingRun
from finetune_hub.errors import invalid
from finetune_hub.selectors import get_visible, teams_for_user, visible_to


def evaluations_for(*, user) -> QuerySet[EvaluationRun]:
    return visible_to(EvaluationRun.objects.select_related("dataset_version__dataset"), user=user)


RUN_CHOICES = 100


def form_choices(*, user) -> dict:
    """What the evaluation and comparison forms offer: the user's published dataset
    versions, the newest RUN_CHOICES finished runs with an output (as subjects; any other
    through the API), the metric modules, and the teams the general set can be added to."""
    runs = visible_to(
        TrainingRun.objects.generators(),
        user=user,
        team_path="experiment__team",
    )
    return {
        "versions": published_versions_for(user=user),
        "runs": runs.select_related("experiment").order_by("-finished_at", "-pk")[:RUN_CHOICES],
        "metric_names": [*metrics.available(), "loss"],
        # Each team with its version of the general set, or None until it is added.
        "general_sets": [(t, general_version(team=t)) for t in teams_for_user(user=user)],
        "general_metric": GENERAL_METRIC,
    }


def evaluation_get(*, user, evaluation_id: int) -> EvaluationRun:
    return get_visible(
        EvaluationRun.objects.select_related(
            "dataset_version__dataset",
            "team",
            "training_run__experiment__dataset_version__dataset",
            "model_version__registered_model",
            "model_version__source_run__experiment__dataset_version__dataset",
        ),
        user=user,
        what="Evaluation",
        pk=evaluation_id,
    )


def samples_page(
    *, evaluation: EvaluationRun, order: str | None = None, page: int = 1, page_size: int = 50
):
    """Per-sample results, by position or by a metric (`-bleu`: highest first, `ter`:
    lowest first) to see where a subject wins and loses; sort_links says which is best."""
    qs = evaluation.samples.select_related("example")
    if order:
        metric = order.lstrip("-")
        if metric not in evaluation.results and metric != "loss":
            raise invalid(f"Cannot order by {metric!r}", field="order", status=422)

        # Samples without a finite score come last either way (NaN compares false with
        # everything, which left sorted() in no order).
        def score(sample):
            value = sample.scores.get(metric)
            return value if isinstance(value, int | float) and math.isfinite(value) else None

        samples = list(qs)
        scored = [s for s in samples if score(s) is not None]
        rest = [s for s in samples if score(s) is None]
        scored.sort(key=score, reverse=order.startswith("-"))
        return Paginator(scored + rest, page_size).get_page(page)
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


def sort_links(evaluation: EvaluationRun) -> list[dict]:
    """For each metric of the evaluation, the order that shows its best samples first and
    the one that shows its worst: lower is better for TER and loss, higher for the rest."""
    from evaluation.metrics import LOWER_IS_BETTER

    links = []
    for name in evaluation.results:
        if name == "perplexity":
            continue  # a corpus figure: no per-sample score
        low_first, high_first = name, f"-{name}"
        best, worst = (
            (low_first, high_first) if name in LOWER_IS_BETTER else (high_first, low_first)
        )
        links.append({"metric": name, "best": best, "worst": worst})
    return links
