from datetime import datetime

from django.http import FileResponse, HttpResponse
from ninja import Query, Router, Status

from experiments.selectors import run_get
from finetune_hub.api_errors import errors
from finetune_hub.errors import invalid
from finetune_hub.pagination import PageIn, api_page
from finetune_hub.selectors import membership_require
from registry import export, selectors, services
from registry.models import AliasEvent, ModelVersion, PromotionRequest
from registry.policy import Policy
from registry.schemas import (
    AliasAtOut,
    AliasEventOut,
    FeedbackCountOut,
    FeedbackIn,
    FeedbackOut,
    GenerateIn,
    GenerationOut,
    ModelIn,
    ModelListOut,
    ModelOut,
    ModelVersionDetailOut,
    ModelVersionOut,
    PolicyOut,
    PromoteIn,
    PromotionRequestOut,
    RollbackIn,
    ScheduleIn,
    ScheduleOut,
    VersionIn,
)

router = Router(tags=["registry"])


def version_out(v: ModelVersion, full: bool = False) -> dict:
    out = {
        "model": v.registered_model.name,
        "number": v.number,
        "run": v.source_run_id,
        "kind": v.kind,
        "source": v.source,
        "base_model": v.base_model,
        "base_model_info": v.base_model_info,
        "dataset_version": {
            "dataset": v.dataset_version.dataset_id,
            "number": v.dataset_version.number,
        }
        if v.dataset_version_id
        else None,
        "artifacts": v.artifacts,
        "aliases": list(v.aliases.values_list("name", flat=True)),
        "created_by": v.created_by.username,
        "created_at": v.created_at,
    }
    if full:
        out["lineage"] = selectors.lineage(v)
        out["evaluations"] = [
            {
                "id": e.pk,
                "dataset": e.dataset_version.dataset.name,
                "number": e.dataset_version.number,
                "split": e.split,
                "results": e.results,
            }
            for e in selectors.evaluations_of(v)
        ]
    return out


def event_out(e: AliasEvent) -> dict:
    return {
        "sequence": e.sequence,
        "alias": e.alias,
        "action": e.action,
        "from_version": e.from_version.number if e.from_version else None,
        "to_version": e.to_version.number if e.to_version else None,
        "actor": e.actor.username,
        "approved_by": e.approved_by.username if e.approved_by else None,
        "reason": e.reason,
        "evidence": e.evidence,
        "time": e.created_at,
    }


def request_out(r: PromotionRequest) -> dict:
    return {
        "request": r.pk,
        "status": r.status,
        "alias": r.alias,
        "version": r.version.number,
        "requested_by": r.requested_by.username,
        "reason": r.reason,
        "decided_by": r.decided_by.username if r.decided_by else None,
    }


# The export answers a zip archive, not JSON.
ARCHIVE = {
    "responses": {
        200: {
            "description": "A zip of the weights and a manifest.json with their SHA-256",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        }
    }
}


def _model(request, name, team=None):
    return selectors.model_get(user=request.auth, name=name, team=team)


@router.post("/registry/models", response={201: ModelOut, **errors(404, 409)})
def create_model(request, payload: ModelIn):
    team = membership_require(user=request.auth, team=payload.team).team
    model = services.model_create(
        team=team,
        name=payload.name,
        description=payload.description,
        policy=payload.policy.model_dump() if payload.policy else None,
        by=request.auth,
    )
    return Status(
        201, {"id": model.pk, "team": team.pk, "name": model.name, "policy": model.policy}
    )


@router.get("/registry/models", response=list[ModelListOut])
def list_models(request, response: HttpResponse, paging: Query[PageIn]):
    models = selectors.models_for(user=request.auth).order_by("team_id", "name", "pk")
    return [
        {
            "id": m.pk,
            "team": m.team_id,
            "name": m.name,
            "aliases": {a.name: a.version.number for a in selectors.aliases_of(m)},
        }
        for m in api_page(models, paging, response)
    ]


@router.put("/registry/models/{name}/policy", response=PolicyOut)
def set_policy(request, name: str, payload: Policy, team: int | None = None):
    """Replaces the promotion policy with the JSON body (fields left out take defaults)."""
    model = services.policy_set(
        model=_model(request, name, team), policy=payload.model_dump(), by=request.auth
    )
    return {"name": model.name, "policy": model.policy}


@router.put("/registry/models/{name}/schedule", response=ScheduleOut)
def set_schedule(request, name: str, payload: ScheduleIn, team: int | None = None):
    """Scheduled retraining of production on the newest data, then a comparison."""
    model = services.schedule_set(
        model=_model(request, name, team), every_days=payload.every_days, by=request.auth
    )
    return {"name": model.name, "retrain_every_days": model.retrain_every_days}


@router.post("/registry/models/{name}/versions", response={201: ModelVersionOut, **errors(409)})
def register_version(request, name: str, payload: VersionIn, team: int | None = None):
    model = _model(request, name, team)
    run = run_get(user=request.auth, run_id=payload.run)
    version = services.version_register(
        model=model, run=run, by=request.auth, description=payload.description
    )
    return Status(201, version_out(version))


@router.get("/registry/models/{name}/versions/{number}", response=ModelVersionDetailOut)
def get_version(request, name: str, number: int, team: int | None = None):
    return version_out(
        selectors.version_get(model=_model(request, name, team), number=number), full=True
    )


@router.delete("/registry/models/{name}/versions/{number}", response={204: None, **errors(409)})
def delete_version(request, name: str, number: int, team: int | None = None):
    version = selectors.version_get(model=_model(request, name, team), number=number)
    services.version_delete(version=version, by=request.auth)
    return Status(204, None)


@router.get(
    "/registry/models/{name}/versions/{number}/export",
    response={200: None, **errors(409)},
    openapi_extra=ARCHIVE,
)
def export_version(request, name: str, number: int, kind: str = "adapter", team: int | None = None):
    version = selectors.version_get(model=_model(request, name, team), number=number)
    path = export.archive(version, kind)
    return FileResponse(
        open(path, "rb"),
        as_attachment=True,
        filename=path.name.replace(kind, f"{name}-v{number}-{kind}"),
    )


@router.put(
    "/registry/models/{name}/aliases/{alias}",
    response={200: AliasEventOut, 202: PromotionRequestOut, **errors(409, policy=True)},
)
def promote(request, name: str, alias: str, payload: PromoteIn, team: int | None = None):
    model = _model(request, name, team)
    version = selectors.version_get(model=model, number=payload.version)
    result = services.alias_promote(
        model=model, alias=alias, version=version, by=request.auth, reason=payload.reason
    )
    if isinstance(result, PromotionRequest):
        return Status(202, request_out(result))
    return Status(200, event_out(result))


@router.post(
    "/registry/models/{name}/aliases/{alias}/rollback", response={200: AliasEventOut, **errors(409)}
)
def rollback(request, name: str, alias: str, payload: RollbackIn, team: int | None = None):
    event = services.alias_rollback(
        model=_model(request, name, team),
        alias=alias,
        by=request.auth,
        reason=payload.reason,
        from_version=payload.from_version,
    )
    return event_out(event)


@router.get("/registry/models/{name}/aliases/{alias}/history", response=list[AliasEventOut])
def alias_history(
    request,
    name: str,
    alias: str,
    response: HttpResponse,
    paging: Query[PageIn],
    team: int | None = None,
):
    """The alias's events, oldest first, a page at a time (X-Total-Count: how many)."""
    events = selectors.history(model=_model(request, name, team), alias=alias)
    return [event_out(e) for e in api_page(events, paging, response)]


@router.get("/registry/models/{name}/aliases/{alias}/at", response=AliasAtOut)
def alias_at(request, name: str, alias: str, time: str, team: int | None = None):
    try:
        when = datetime.fromisoformat(time.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(
            "time must be ISO 8601, e.g. 2026-11-28T12:00:00Z", field="time", status=422
        ) from None
    if when.tzinfo is None:
        raise invalid("time needs a timezone (Z or +00:00)", field="time", status=422)
    event = selectors.holder_at(model=_model(request, name, team), alias=alias, when=when)
    return {
        "alias": alias,
        "time": when,
        "version": event.to_version.number if event and event.to_version else None,
        "event": event_out(event) if event else None,
    }


@router.get("/registry/models/{name}/promotions", response=list[PromotionRequestOut])
def list_promotions(
    request, name: str, response: HttpResponse, paging: Query[PageIn], team: int | None = None
):
    requests = _model(request, name, team).promotion_requests.order_by("-created_at", "-pk")
    return [request_out(r) for r in api_page(requests, paging, response)]


@router.post(
    "/registry/models/{name}/promotions/{request_id}/{decision}",
    response={200: PromotionRequestOut, **errors(403, 409, policy=True)},
)
def decide_promotion(request, name: str, request_id: int, decision: str, team: int | None = None):
    model = _model(request, name, team)
    promotion = model.promotion_requests.filter(pk=request_id).first()
    if promotion is None or decision not in ("approve", "reject"):
        from finetune_hub.errors import NotFound

        raise NotFound("No such promotion request")
    decided = services.promotion_decide(
        request=promotion, by=request.auth, approve=decision == "approve"
    )
    return request_out(decided)


@router.post(
    "/registry/models/{name}/aliases/{alias}/generate", response={200: GenerationOut, **errors(409)}
)
def generate(request, name: str, alias: str, payload: GenerateIn, team: int | None = None):
    messages = payload.messages or (
        [{"role": "user", "content": payload.prompt}] if payload.prompt else []
    )
    served = services.generate(
        model=_model(request, name, team),
        alias=alias,
        messages=messages,
        max_new_tokens=payload.max_new_tokens,
        by=request.auth,
    )
    return {
        "generation": served.pk,
        "alias": alias,
        "version": served.version.number,
        "output": served.output,
        "latency_ms": round(served.latency_ms, 1),
    }


@router.post("/registry/models/{name}/feedback", response={201: FeedbackOut, **errors(409)})
def feedback(request, name: str, payload: FeedbackIn, team: int | None = None):
    item = services.feedback_add(
        model=_model(request, name, team),
        generation_id=payload.generation,
        rating=payload.rating,
        comment=payload.comment,
        by=request.auth,
    )
    return Status(201, {"feedback": item.pk, "version": item.version.number, "rating": item.rating})


@router.get("/registry/models/{name}/feedback", response=list[FeedbackCountOut])
def feedback_summary(request, name: str, team: int | None = None):
    return selectors.feedback_by_version(_model(request, name, team))
