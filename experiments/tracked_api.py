"""The tracked-run API: runs trained anywhere report here (finetune_hub.client and its
TrainerCallback use it). The rules are experiments.tracked's; the routes share the
training router so that POST /api/runs sits beside GET /api/runs."""

from ninja import Status

from experiments import tracked
from experiments.training import selectors
from experiments.training.api import router, run_out
from experiments.training.schemas import (
    ArtifactOut,
    NotesIn,
    ParamsIn,
    PointsIn,
    PointsOut,
    RunEndIn,
    RunOut,
    TagsIn,
    TrackedRunIn,
)
from finetune_hub.api_errors import errors
from finetune_hub.bounds import Id
from finetune_hub.errors import invalid
from finetune_hub.selectors import is_site_admin, membership_require


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
    run = tracked.artifact_put(run=run, name=name, chunks=tracked.chunks(request), by=request.auth)
    return Status(
        201,
        {
            "run": run.pk,
            "name": name,
            "sha256": run.output_files[name],
            "output_path": run.output_path,
        },
    )
