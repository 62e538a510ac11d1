import json

from django.db.models import Count, Q, QuerySet

from experiments import metric_store
from experiments.models import (
    Experiment,
    MetricPoint,
    MetricSeries,
    Technique,
    TrainingRun,
    Worker,
)
from experiments.workers import live_workers
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


def with_run_counts(experiments: QuerySet[Experiment]) -> QuerySet[Experiment]:
    """Each experiment with n_<status> (runs in that status) and n_runs."""
    counts = {
        f"n_{status}": Count("runs", filter=Q(runs__status=status))
        for status in TrainingRun.Status.values
    }
    return experiments.annotate(n_runs=Count("runs"), **counts)


def experiment_get(*, user, experiment_id: int) -> Experiment:
    return get_visible(
        Experiment.objects.select_related("team", "dataset_version__dataset"),
        user=user,
        what="Experiment",
        pk=experiment_id,
    )


def run_get(*, user, run_id: int) -> TrainingRun:
    return get_visible(
        TrainingRun.objects.select_related("experiment__team", "worker"),
        user=user,
        team_path="experiment__team",
        what="Run",
        pk=run_id,
    )


def reward_run_for(*, user, run_id: int) -> TrainingRun:
    """A reward model the user may estimate a GRPO run with: a finished reward-model run in
    one of the user's teams (checked again against the experiment's team when it is made)."""
    run = _reward_models_visible(user).filter(pk=run_id).select_related("experiment").first()
    if run is None:
        raise invalid(
            f"No finished reward-model run {run_id} in your teams",
            field="hyperparameters.reward_run",
        )
    return run


def reward_run_in(*, team_id: int, run_id: int, trained: bool = False) -> TrainingRun | None:
    """Run `run_id` of the team, with its experiment (None in another team: never revealed);
    with `trained`, only a reward model with its output. The one team-scoped lookup of a GRPO
    experiment's reward model: its check, its lineage and its training."""
    runs = TrainingRun.objects.reward_models() if trained else TrainingRun.objects.all()
    return runs.filter(pk=run_id, experiment__team=team_id).select_related("experiment").first()


def reward_run_of(experiment: Experiment, *, trained: bool = False) -> TrainingRun | None:
    """The reward model a GRPO experiment trains against (its lineage), in its own team."""
    run_id = (experiment.hyperparameters or {}).get("reward_run")
    if not run_id:
        return None
    return reward_run_in(team_id=experiment.team_id, run_id=run_id, trained=trained)


def _reward_models_visible(user) -> QuerySet[TrainingRun]:
    return visible_to(TrainingRun.objects.reward_models(), user=user, team_path="experiment__team")


def reward_runs_for(*, user) -> QuerySet[TrainingRun]:
    """The finished reward models the experiment form offers for GRPO, newest first."""
    return (
        _reward_models_visible(user)
        .select_related("experiment__team")
        .order_by("-finished_at", "-pk")[:100]
    )


def runs_of(*, experiment: Experiment) -> QuerySet[TrainingRun]:
    """The experiment's runs; deleted ones (MLflow's lifecycle) only on a deleted
    experiment's page, where they are its runs as they were."""
    runs = experiment.runs.select_related("worker").order_by("-queued_at")
    return runs if experiment.deleted_at else runs.filter(deleted_at=None)


def queue_for(*, user) -> QuerySet[TrainingRun]:
    active = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
    qs = visible_to(
        TrainingRun.objects.select_related("experiment", "worker"),
        user=user,
        team_path="experiment__team",
    )
    return qs.filter(status__in=active, deleted_at=None).order_by(
        "status", "-priority", "queued_at"
    )


def workers_live() -> QuerySet[Worker]:
    return live_workers()


def gpu_holders(*, user, hosts: list[str]) -> tuple[list[TrainingRun], dict]:
    """The running runs on these hosts, and {(host, GPU index): (run, whether the user may
    see it)} for each GPU one holds."""
    running = list(
        TrainingRun.objects.filter(
            status=TrainingRun.Status.RUNNING, worker__host__in=hosts
        ).select_related("worker")
    )
    visible = set(
        _team_runs(user).filter(pk__in=[r.pk for r in running]).values_list("pk", flat=True)
    )
    held = {
        (run.worker.host, index): (run, run.pk in visible)
        for run in running
        for index in run.gpus or []
    }
    return running, held


def worker_gpus(worker: Worker, held: dict) -> list[dict]:
    """A worker's GPUs, each busy or free, with the run holding it when the user may see it."""
    from experiments.workers import gpus_of

    out = []
    for gpu in gpus_of(worker):
        run, visible = held.get((worker.host, gpu["index"]), (None, False))
        out.append({**gpu, "busy": run is not None, "run": run if visible else None})
    return out


def gpu_hosts(*, user) -> list[dict]:
    """Each live host: its workers, CPU, and GPUs free or held, with the run holding each (a
    run of a team the user is not in shows only as busy). Host names are for site admins;
    others see "host 1", "host 2"."""
    hosts: dict[str, list[Worker]] = {}
    for worker in live_workers():
        hosts.setdefault(worker.host, []).append(worker)
    running, held = gpu_holders(user=user, hosts=list(hosts))
    out = []
    for number, (host, members) in enumerate(sorted(hosts.items()), start=1):
        newest = max(members, key=lambda w: w.heartbeat_at)
        out.append(
            {
                "label": host if user.is_superuser else f"host {number}",
                "workers": len(members),
                "cpu": next((d for d in newest.devices if d.get("type") == "cpu"), {}),
                "gpus": worker_gpus(newest, held),
                "running": sum(1 for r in running if r.worker.host == host),
                "heartbeat_at": newest.heartbeat_at,
            }
        )
    return out


def run_metric_keys(run: TrainingRun, limit: int = 100) -> list[str]:
    """The default keys, then the others the run logged (system metrics, evaluation scores,
    whatever a tracked run sends), at most `limit`."""
    logged = MetricSeries.objects.filter(run=run).order_by("key").values_list("key", flat=True)
    keys = list(DEFAULT_KEYS) + [k for k in logged[:limit] if k not in DEFAULT_KEYS]
    return keys[:limit]


def run_metrics(*, run: TrainingRun, keys: list[str] | None = None, max_points: int = 1000) -> dict:
    """A run's curves: from its thinned series up to SERIES_POINTS points a curve, from its
    raw points (thinned the same way) when more are asked for."""
    if not 2 <= max_points <= 100_000:
        raise invalid("max_points must be between 2 and 100000", field="max_points", status=422)
    keys = keys or list(DEFAULT_KEYS)
    if max_points <= metric_store.SERIES_POINTS:
        return metric_store.series_of([run.pk], keys, max_points)[run.pk]
    # NaN points (value null: logged through MLflow) stay out of the curves
    rows = MetricPoint.objects.filter(run=run, key__in=keys, value__isnull=False)
    rows = rows.order_by("key", "step", "pk")
    series: dict[str, list[tuple[int, float]]] = {key: [] for key in keys}
    for key, step, value in rows.values_list("key", "step", "value"):
        series[key].append((step, value))
    out = {}
    for key, points in series.items():
        if points:
            thin, _ = metric_store.thin(points, max_points)
            out[key] = {"steps": [s for s, _ in thin], "values": [v for _, v in thin]}
    return out


# A comparison page sends at most this many points in all: its runs' curves share it, each
# between MIN_POINTS and the asked max_points (a chart of 2,000 lines has no room for 1,000
# points each). The ids page through in any number.
COMPARE_POINTS = 200_000
MIN_POINTS = 50


def runs_for_compare(
    *, user, ids: list[int], keys: list[str] | None, max_points: int, page: int = 1, limit=100
) -> tuple[list[dict], int]:
    """One page of a comparison of any number of runs: the runs `ids[(page-1)*limit:]` names
    (in the order given) with their curves as JSON text, and the points each curve was
    allowed. Every id must be a run the user sees, or the whole comparison is a 404 naming
    the first that is not (an outsider's run and a missing one read the same). Four queries
    whatever the size."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise invalid("Give at least one run id", field="ids", status=422)
    if not 2 <= max_points <= metric_store.SERIES_POINTS:
        raise invalid(
            f"max_points must be between 2 and {metric_store.SERIES_POINTS}",
            field="max_points",
            status=422,
        )
    keys = keys or list(DEFAULT_KEYS)
    seen = set(_team_runs(user).filter(pk__in=ids).values_list("pk", flat=True))
    if missing := [i for i in ids if i not in seen]:
        raise NotFound(f"Run {missing[0]} not found")
    shown = ids[(page - 1) * limit : page * limit]
    runs = (
        TrainingRun.objects.select_related("experiment", "worker")
        .prefetch_related("checkpoints")
        .in_bulk(shown)
    )
    per_curve = COMPARE_POINTS // max(1, len(shown) * len(keys))
    per_curve = min(max_points, max(MIN_POINTS, per_curve))
    curves = metric_store.series_json(shown, keys, per_curve)
    return [{"run": runs[i], "metrics": curves[i]} for i in shown], per_curve


# ---------------------------------------------------------------------- the run table


def _team_runs(user) -> QuerySet[TrainingRun]:
    return visible_to(TrainingRun.objects, user=user, team_path="experiment__team")


def runs_visible(*, user, ids: list[int]) -> dict[int, TrainingRun]:
    """{id: run} for those of `ids` the user's teams own, in one query."""
    return _team_runs(user).select_related("experiment").in_bulk(ids)


def latest_values(runs: list[TrainingRun], keys: list[str]) -> dict[int, dict[str, float]]:
    """{run: {key: its last logged value}} for a page of runs, in one query."""
    out: dict[int, dict[str, float]] = {run.pk: {} for run in runs}
    rows = MetricSeries.objects.filter(run__in=runs, key__in=keys).values_list(
        "run_id", "key", "last_value"
    )
    for run, key, value in rows:
        out[run][key] = value
    return out


# The figure a technique is judged by, shown at the top of its run's page: (key, label).
HEADLINES = {
    Technique.REWARD: ("eval_pairwise_accuracy", "Held-out pairwise accuracy"),
    Technique.GRPO: ("eval_reward", "Held-out reward"),
}


def run_headline(run: TrainingRun) -> dict | None:
    """{"label", "value"} of the last logged headline figure of a reward model or GRPO run."""
    key, label = HEADLINES.get(run.experiment.technique, (None, None))
    if key is None:
        return None
    value = latest_values([run], [key])[run.pk].get(key)
    return {"label": label, "value": value} if value is not None else None


def run_params(run: TrainingRun) -> dict:
    """What a run was trained with: technique, base model, the experiment's hyperparameters
    and a tracked run's own parameters."""
    return {
        "technique": run.experiment.technique or "",
        "base_model": run.model_base,
        **run.experiment.hyperparameters,
        **run.params,
    }


def param_text(value) -> str:
    """A parameter as a table cell: text as it is, anything else as JSON, absent as ""."""
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def params_table(runs: list[TrainingRun]) -> tuple[list[dict], list[list]]:
    """Columns (name, and whether the runs differ in it: those first) and each run's cells
    (value as text, whether its column differs), for a comparison's parameter table that
    shows what differs."""
    params = [run_params(r) for r in runs]
    names = sorted({k for p in params for k in p})

    differs = {n: len({param_text(p.get(n)) for p in params}) > 1 for n in names}
    names.sort(key=lambda n: not differs[n])
    columns = [{"name": n, "differs": differs[n]} for n in names]
    return columns, [[(param_text(p.get(n)), differs[n]) for n in names] for p in params]


def compared_keys(ids: list[int], limit: int = 200) -> list[str]:
    """The metric keys any of the runs logged (the comparison's metric choices)."""
    keys = (
        MetricSeries.objects.filter(run_id__in=ids)
        .values_list("key", flat=True)
        .distinct()
        .order_by("key")
    )
    return list(keys[:limit])
