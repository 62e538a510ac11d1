import json

from django.http import HttpResponse
from ninja import Query, Router, Status

from datasets_app.selectors import dataset_version_for
from experiments import run_files, run_table, selectors, services, tracked
from experiments.schemas import (
    ArtifactOut,
    CompareIn,
    EstimateIn,
    EstimateOut,
    ExperimentDetailOut,
    ExperimentIn,
    ExperimentOut,
    LogsOut,
    NotesIn,
    ParamsIn,
    PointsIn,
    PointsOut,
    PriorityIn,
    RunCompareOut,
    RunEndIn,
    RunIn,
    RunMetricsOut,
    RunOut,
    RunRowOut,
    TagsIn,
    TrackedRunIn,
    VersionRef,
    WorkerOut,
    experiment_out,
    run_out,
)
from experiments.training import guards
from finetune_hub.api_errors import errors
from finetune_hub.bounds import Id, Int64, client_ids
from finetune_hub.errors import invalid
from finetune_hub.pagination import PageIn, api_page
from finetune_hub.selectors import is_site_admin, membership_require
from inference import base_models

router = Router(tags=["experiments and runs"])


def _version_ref(ref):
    return ref.dict() if isinstance(ref, VersionRef) else ref


@router.post("/experiments/estimate", response=EstimateOut)
def estimate_experiment(request, payload: EstimateIn):
    """The validated hyperparameters and the resource estimate, before anything is created."""
    from experiments.training import hyperparameters as hp

    config = base_models.load_config(payload.base_model)
    params = hp.validate(
        payload.technique, payload.hyperparameters, context_length=services.context_length(config)
    )
    warnings = []
    if payload.dataset_version is not None:
        version = dataset_version_for(user=request.auth, ref=payload.dataset_version)
        warnings = guards.warnings(payload.technique, params, version.counts)
    reward_run = None
    if params["reward_run"] is not None:  # GRPO: the reward model, in one of the user's teams
        reward_run = selectors.reward_run_for(user=request.auth, run_id=params["reward_run"])
    return {
        "hyperparameters": params,
        "estimate": services.estimates_for(config, payload.technique, params, reward_run),
        "warnings": warnings,
    }


@router.post("/experiments", response={201: ExperimentOut, **errors(404, 409)})
def create_experiment(request, payload: ExperimentIn):
    team = membership_require(user=request.auth, team=payload.team).team
    version = dataset_version_for(user=request.auth, ref=_version_ref(payload.dataset_version))
    experiment = services.experiment_create(
        team=team,
        name=payload.name,
        dataset_version=version,
        base_model=payload.base_model,
        technique=payload.technique,
        hyperparameters=payload.hyperparameters,
        notes=payload.notes,
        by=request.auth,
    )
    return Status(201, experiment_out(experiment))


@router.get("/experiments", response=list[ExperimentOut])
def list_experiments(
    request, response: HttpResponse, paging: Query[PageIn], team: Id | None = None
):
    experiments = selectors.experiments_for(user=request.auth, team=team).order_by(
        "-created_at", "-pk"
    )
    return [experiment_out(e) for e in api_page(experiments, paging, response)]


@router.get("/experiments/{experiment_id}", response=ExperimentDetailOut)
def get_experiment(request, experiment_id: Id):
    experiment = selectors.experiment_get(user=request.auth, experiment_id=experiment_id)
    runs = selectors.runs_of(experiment=experiment)
    return experiment_out(experiment, runs, is_site_admin(request.auth))


@router.post("/experiments/{experiment_id}/runs", response={201: RunOut, **errors(409, 429)})
def queue_run(request, experiment_id: Id, payload: RunIn = None):
    experiment = selectors.experiment_get(user=request.auth, experiment_id=experiment_id)
    run = services.run_enqueue(
        experiment=experiment, by=request.auth, priority=payload.priority if payload else 0
    )
    return Status(201, run_out(run, is_site_admin(request.auth)))


def _keys(keys: str | None) -> list[str] | None:
    return [k.strip() for k in keys.split(",") if k.strip()] if keys else None


# `keys` is read through an alias: a field named keys would shadow the mapping protocol.
KEYS = Query(None, alias="keys", description="comma-separated metric names")


def _compare(request, run_ids, keys, max_points, paging: PageIn) -> HttpResponse:
    compared, per_curve = selectors.runs_for_compare(
        user=request.auth,
        ids=run_ids,
        keys=keys,
        max_points=max_points,
        page=paging.page,
        limit=paging.limit,
    )
    admin = is_site_admin(request.auth)
    # The curves are stored as JSON text and sent as stored: 200,000 points a page are
    # spliced, not parsed and re-serialised. The shape is RunCompareOut's.
    rows = []
    for c in compared:
        run = RunOut.model_validate(run_out(c["run"], admin)).model_dump_json()
        curves = ",".join(f"{json.dumps(key)}:{text}" for key, text in c["metrics"].items())
        rows.append(f'{{"run":{run},"metrics":{{{curves}}}}}')
    body = ",".join(rows)
    out = HttpResponse(f"[{body}]", content_type="application/json")
    out["X-Total-Count"] = str(len(dict.fromkeys(run_ids)))
    out["X-Points-Per-Curve"] = str(per_curve)
    return out


@router.get("/runs/compare", response={200: list[RunCompareOut], **errors(404)})
def compare_runs(
    request,
    ids: str,
    paging: Query[PageIn],
    metric_keys: str | None = KEYS,
    max_points: Id = 1000,
):
    """Curves of any number of runs, `limit` runs a page (X-Total-Count: how many in all).
    All the page's curves share 200,000 points: X-Points-Per-Curve says how many each got
    (at most max_points, each bucket's first, last, lowest and highest kept)."""
    run_ids = client_ids(ids, field="ids")
    return _compare(request, run_ids, _keys(metric_keys), max_points, paging)


@router.post("/runs/compare", response={200: list[RunCompareOut], **errors(404)})
def compare_runs_post(request, payload: CompareIn):
    """The same comparison with the ids in the body, for lists too long for a URL."""
    paging = PageIn(page=payload.page, limit=payload.limit)
    return _compare(request, payload.ids, payload.keys, payload.max_points, paging)


@router.get("/runs", response={200: list[RunRowOut], **errors(422)})
def list_runs(
    request,
    response: HttpResponse,
    paging: Query[PageIn],
    experiment: Id | None = None,
    status: str | None = None,
    filter: str = "",
    sort: str = "-queued_at",
    metric_keys: str | None = KEYS,
    q: str = "",
):
    """Every run of the caller's teams, a page at a time (X-Total-Count: how many match).
    q: words in a run's name, its experiment's name, notes, tags or base model.
    filter: clauses joined by " and ", each `metrics.<key> <op> <value>`,
    `params.<name> <op> <value>` or `tags.<name> <op> <text>`, op one of = != < <= > >=
    (params are the experiment's hyperparameters, technique and base_model, and a tracked
    run's own params). sort: queued_at, started_at, finished_at,
    step, status, id, metrics.<key> or params.<name>, - first for descending. Each row
    carries the last value of each of `keys` (default loss and eval_loss)."""
    runs = run_table.run_table(
        user=request.auth, experiment=experiment, status=status, filter=filter, sort=sort, q=q
    )
    page = list(api_page(runs.prefetch_related("checkpoints"), paging, response))
    keys = _keys(metric_keys) or list(run_table.TABLE_KEYS)
    latest = selectors.latest_values(page, keys)
    admin = is_site_admin(request.auth)
    return [
        {
            **run_out(run, admin),
            "experiment_name": run.experiment.name,
            "technique": run.experiment.technique,
            "params": {**run.experiment.hyperparameters, **run.params},
            "metrics": {key: latest[run.pk].get(key) for key in keys},
        }
        for run in page
    ]


@router.get("/runs/queue", response=list[RunOut])
def run_queue(request, response: HttpResponse, paging: Query[PageIn]):
    admin = is_site_admin(request.auth)
    runs = api_page(selectors.queue_for(user=request.auth), paging, response)
    return [run_out(r, admin) for r in runs]


@router.get("/workers", response=list[WorkerOut])
def list_workers(request):
    """Live workers and their devices, so users see what a run can get. Host and PID
    (the name is host:pid) are for site admins only."""
    admin = is_site_admin(request.auth)
    live = list(selectors.workers_live())
    _, held = selectors.gpu_holders(user=request.auth, hosts=[w.host for w in live])
    return [
        {
            "name": w.name if admin else None,
            "host": w.host if admin else None,
            "pid": w.pid if admin else None,
            "cuda": w.cuda,
            "devices": w.devices,
            "gpus": [
                {
                    "index": g["index"],
                    "name": g["name"],
                    "memory_bytes": g["memory_bytes"],
                    "memory_free_bytes": g.get("memory_free_bytes"),
                    "busy": g["busy"],
                    "run": g["run"].pk if g["run"] else None,
                }
                for g in selectors.worker_gpus(w, held)
            ],
            "heartbeat_at": w.heartbeat_at,
        }
        for w in live
    ]


@router.get("/runs/{run_id}", response=RunOut)
def get_run(request, run_id: Id):
    return run_out(selectors.run_get(user=request.auth, run_id=run_id), is_site_admin(request.auth))


@router.get("/runs/{run_id}/metrics", response=RunMetricsOut)
def get_metrics(request, run_id: Id, metric_keys: str | None = KEYS, max_points: Id = 1000):
    run = selectors.run_get(user=request.auth, run_id=run_id)
    metrics = selectors.run_metrics(run=run, keys=_keys(metric_keys), max_points=max_points)
    return {
        "run": run.pk,
        "metrics": metrics,
        "overfitting": guards.diverging(metrics.get("loss"), metrics.get("eval_loss")),
    }


@router.get("/runs/{run_id}/logs", response=LogsOut)
def get_logs(request, run_id: Id, tail: Int64 = 200):
    run = selectors.run_get(user=request.auth, run_id=run_id)
    lines = run.log_tail.splitlines()[-max(1, min(tail, 1000)) :]
    return {"run": run.pk, "status": run.status, "lines": lines}


@router.post("/runs/{run_id}/cancel", response={200: RunOut, **errors(409)})
def cancel_run(request, run_id: Id):
    run = selectors.run_get(user=request.auth, run_id=run_id)
    return run_out(services.run_cancel(run=run, by=request.auth), is_site_admin(request.auth))


@router.post("/runs/{run_id}/resume", response={200: RunOut, **errors(409, 429)})
def resume_run(request, run_id: Id):
    run = selectors.run_get(user=request.auth, run_id=run_id)
    return run_out(services.run_resume(run=run, by=request.auth), is_site_admin(request.auth))


@router.post("/runs/{run_id}/priority", response={200: RunOut, **errors(409)})
def set_priority(request, run_id: Id, payload: PriorityIn):
    run = selectors.run_get(user=request.auth, run_id=run_id)
    run = services.run_set_priority(run=run, priority=payload.priority, by=request.auth)
    return run_out(run, is_site_admin(request.auth))


# Runs trained elsewhere (finetune_hub.client and its TrainerCallback report here): POST
# /runs sits beside GET /runs; the rules are experiments.tracked's.
@router.post("/runs", response={201: RunOut, **errors(404, 409)})
def start_tracked_run(request, payload: TrackedRunIn):
    """Starts a run trained elsewhere, in an experiment of the team or in a project (made
    when the team has no experiment of that name). It is running until its process ends it."""
    team = membership_require(user=request.auth, team=payload.team).team
    if (payload.experiment is None) == (payload.project is None):
        raise invalid("give exactly one of experiment or project", field="project", status=422)
    if payload.experiment is not None:
        experiment = selectors.experiment_get(user=request.auth, experiment_id=payload.experiment)
        if experiment.team_id != team.pk:
            raise invalid("No such experiment in this team", field="experiment", status=422)
    else:
        experiment = tracked.project_for(team=team, name=payload.project, by=request.auth)
    run = tracked.run_start(
        experiment=experiment,
        by=request.auth,
        name=payload.name,
        params=payload.params,
        tags=payload.tags,
        base_model=payload.base_model,
    )
    return Status(201, run_out(run, is_site_admin(request.auth)))


@router.post("/runs/{run_id}/metrics", response={200: PointsOut, **errors(404, 409, 413)})
def log_points(request, run_id: Id, payload: PointsIn):
    """A batch of points (step, key, value, timestamp in ms), all written or none; up to
    10,000 a batch. Keys starting with system/ are system metrics (memory, utilisation)."""
    run = selectors.run_get(user=request.auth, run_id=run_id)
    points = [(p.step, p.key, p.value, p.timestamp) for p in payload.points]
    return {"run": run.pk, "written": tracked.points_log(run=run, points=points, by=request.auth)}


@router.post("/runs/{run_id}/params", response={200: RunOut, **errors(404, 409)})
def log_params(request, run_id: Id, payload: ParamsIn):
    run = selectors.run_get(user=request.auth, run_id=run_id)
    run = tracked.params_log(run=run, params=payload.params, by=request.auth)
    return run_out(run, is_site_admin(request.auth))


@router.post("/runs/{run_id}/tags", response={200: RunOut, **errors(404, 409)})
def set_tags(request, run_id: Id, payload: TagsIn):
    """Tags on any run, queued or tracked: added to its tags, or replacing them."""
    run = selectors.run_get(user=request.auth, run_id=run_id)
    run = tracked.tags_set(run=run, tags=payload.tags, by=request.auth, replace=payload.replace)
    return run_out(run, is_site_admin(request.auth))


@router.post("/runs/{run_id}/notes", response={200: RunOut, **errors(404)})
def set_notes(request, run_id: Id, payload: NotesIn):
    """A run's free-text notes, on any run."""
    run = selectors.run_get(user=request.auth, run_id=run_id)
    run = tracked.notes_set(run=run, notes=payload.notes, by=request.auth)
    return run_out(run, is_site_admin(request.auth))


@router.post("/runs/{run_id}/end", response={200: RunOut, **errors(404, 409)})
def end_run(request, run_id: Id, payload: RunEndIn):
    """Ends a tracked run: succeeded, failed or cancelled (again with the same status: a
    no-op). A succeeded run with uploaded weights is evaluable and registrable."""
    run = selectors.run_get(user=request.auth, run_id=run_id)
    run = tracked.run_end(run=run, status=payload.status, error=payload.error, by=request.auth)
    return run_out(run, is_site_admin(request.auth))


@router.put("/runs/{run_id}/artifacts/{name}", response={201: ArtifactOut, **errors(404, 409, 413)})
def upload_artifact(request, run_id: Id, name: str):
    """One output file of a tracked run, as the raw request body (streamed to disk):
    weights as .safetensors, configs and tokenizer files as .json, .txt, .jinja, .md or
    .model. Each name is written once."""
    run = selectors.run_get(user=request.auth, run_id=run_id)
    run = run_files.artifact_put(
        run=run, name=name, chunks=run_files.chunks(request), by=request.auth
    )
    return Status(
        201,
        {
            "run": run.pk,
            "name": name,
            "sha256": run.output_files[name],
            "output_path": run.output_path,
        },
    )
