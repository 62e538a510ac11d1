from django.db.models import QuerySet

from datasets_app.models import DatasetVersion
from experiments.models import Experiment, MetricPoint, TrainingRun, Worker
from experiments.training.workers import live_workers
from finetune_hub.bounds import is_id
from finetune_hub.errors import NotFound, invalid
from finetune_hub.selectors import get_visible, visible_to

DEFAULT_KEYS = (
    "loss",
    "eval_loss",
    "learning_rate",
    "grad_norm",
    "tokens_per_second",
    "mfu",
    "peak_memory_gib",
    "epoch",
)


def experiments_for(*, user, team: int | None = None) -> QuerySet[Experiment]:
    qs = visible_to(
        Experiment.objects.select_related("team", "dataset_version__dataset"), user=user
    )
    return qs.filter(team_id=team) if team is not None else qs


def experiment_get(*, user, experiment_id: int) -> Experiment:
    return get_visible(
        Experiment.objects.select_related("team", "dataset_version__dataset"),
        user=user,
        what="Experiment",
        pk=experiment_id,
    )


def dataset_version_for(*, user, ref) -> DatasetVersion:
    """A version named by its id, or by {"dataset": id, "number": n}."""
    if isinstance(ref, dict) and all(is_id(ref.get(k)) for k in ("dataset", "number")):
        lookup = {"dataset_id": ref["dataset"], "number": ref["number"]}
    elif is_id(ref):
        lookup = {"pk": ref}
    else:
        raise invalid(
            'Name the version by id or {"dataset": id, "number": n}',
            field="dataset_version",
            status=422,
        )
    try:
        return get_visible(
            DatasetVersion.objects.select_related("dataset__team"),
            user=user,
            team_path="dataset__team",
            what="Dataset version",
            **lookup,
        )
    except NotFound:
        raise invalid("No such dataset version in your teams", field="dataset_version") from None


def run_get(*, user, run_id: int) -> TrainingRun:
    return get_visible(
        TrainingRun.objects.select_related("experiment__team", "worker"),
        user=user,
        team_path="experiment__team",
        what="Run",
        pk=run_id,
    )


def runs_of(*, experiment: Experiment) -> QuerySet[TrainingRun]:
    return experiment.runs.select_related("worker").order_by("-queued_at")


def queue_for(*, user) -> QuerySet[TrainingRun]:
    active = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
    qs = visible_to(
        TrainingRun.objects.select_related("experiment", "worker"),
        user=user,
        team_path="experiment__team",
    )
    return qs.filter(status__in=active).order_by("status", "-priority", "queued_at")


def workers_live() -> QuerySet[Worker]:
    return live_workers()


def _thin(points: list[tuple[int, float]], max_points: int) -> list[tuple[int, float]]:
    """Evenly spaced points, the last always kept, so a long run's curve stays cheap."""
    if len(points) <= max_points:
        return points
    stride = len(points) / max_points
    picked = [points[int(i * stride)] for i in range(max_points - 1)]
    return picked + [points[-1]]


def run_metrics(*, run: TrainingRun, keys: list[str] | None = None, max_points: int = 1000) -> dict:
    if not 2 <= max_points <= 100_000:
        raise invalid("max_points must be between 2 and 100000", field="max_points", status=422)
    keys = keys or list(DEFAULT_KEYS)
    rows = MetricPoint.objects.filter(run=run, key__in=keys).order_by("key", "step", "pk")
    series: dict[str, list[tuple[int, float]]] = {key: [] for key in keys}
    for key, step, value in rows.values_list("key", "step", "value"):
        series[key].append((step, value))
    return {
        key: {"steps": [s for s, _ in thin], "values": [v for _, v in thin]}
        for key, points in series.items()
        if (thin := _thin(points, max_points))
    }


def runs_for_compare(
    *, user, ids: list[int], keys: list[str] | None, max_points: int
) -> list[dict]:
    if not ids or len(ids) > 20:
        raise invalid("Give 1 to 20 run ids", field="ids", status=422)
    runs = [run_get(user=user, run_id=run_id) for run_id in ids]
    return [
        {"run": run, "metrics": run_metrics(run=run, keys=keys, max_points=max_points)}
        for run in runs
    ]
