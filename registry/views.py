import json

from django.contrib import messages
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from experiments.models import TrainingRun
from experiments.training.selectors import run_get
from finetune_hub.errors import ServiceError
from finetune_hub.pagination import paginate
from finetune_hub.selectors import teams_for_user, visible_to
from finetune_hub.views import form_int, visible_or_404
from registry import export, selectors, services
from registry.models import PromotionRequest


@require_http_methods(["GET", "POST"])
def model_list(request):
    if request.method == "POST":
        try:
            team = next(
                (
                    t
                    for t in teams_for_user(user=request.user)
                    if str(t.pk) == request.POST.get("team")
                ),
                None,
            )
            if team is None:
                raise ServiceError("Choose one of your teams", status=400)
            model = services.model_create(
                team=team,
                name=request.POST.get("name", ""),
                by=request.user,
                description=request.POST.get("description", ""),
            )
            return redirect("model_detail", name=model.name)
        except ServiceError as exc:
            messages.error(request, exc.detail)
    return render(
        request,
        "registry/model_list.html",
        {
            "models": paginate(
                request,
                selectors.models_for(user=request.user)
                .order_by("team__name", "name", "pk")
                .prefetch_related("aliases__version"),
            ),
            "teams": teams_for_user(user=request.user),
        },
    )


def _model(request, name):
    return visible_or_404(selectors.model_get, user=request.user, name=name)


# The newest succeeded runs offered for registration; an older one is registered by id (API).
RUN_CHOICES = 100


def model_detail(request, name: str):
    model = _model(request, name)
    versions = model.versions.select_related("source_run__experiment").prefetch_related("aliases")
    pending = model.promotion_requests.filter(status=PromotionRequest.Status.PENDING)
    runs = visible_to(
        TrainingRun.objects.filter(status="succeeded"),
        user=request.user,
        team_path="experiment__team",
    )
    return render(
        request,
        "registry/model_detail.html",
        {
            "model": model,
            "versions": paginate(request, versions.order_by("-number"), param="versions"),
            "aliases": paginate(request, selectors.aliases_of(model), param="aliases"),
            "history": paginate(request, selectors.model_history(model=model), param="history"),
            "requests": paginate(
                request, pending.select_related("version", "requested_by"), param="requests"
            ),
            "feedback": selectors.feedback_by_version(model),
            "runs": runs.select_related("experiment").order_by("-finished_at", "-pk")[:RUN_CHOICES],
            "policy": json.dumps(model.policy, indent=2),
        },
    )


def version_detail(request, name: str, number: int):
    model = _model(request, name)
    version = visible_or_404(selectors.version_get, model=model, number=number)
    return render(
        request,
        "registry/version_detail.html",
        {
            "model": model,
            "version": version,
            "lineage": selectors.lineage(version),
            "evaluations": selectors.evaluations_of(version),
        },
    )


def _run(request, fn, **kwargs):
    try:
        return fn(by=request.user, **kwargs)
    except (ServiceError, ValueError) as exc:
        messages.error(request, getattr(exc, "detail", str(exc)))
        return None


ACTIONS = {"register", "promote", "rollback", "approve", "reject", "policy", "generate", "feedback"}


@require_POST
def model_action(request, name: str, action: str):
    model = _model(request, name)
    if action not in ACTIONS:
        raise Http404
    try:
        _dispatch(request, model, action)
    except ServiceError as exc:
        messages.error(request, exc.detail)
    return redirect("model_detail", name=name)


def _dispatch(request, model, action: str) -> None:
    post = request.POST
    if action == "register":
        run = visible_or_404(run_get, user=request.user, run_id=form_int(post, "run", 0))
        if version := _run(request, services.version_register, model=model, run=run):
            messages.success(request, f"Registered {version}")
    elif action == "promote":
        version = visible_or_404(
            selectors.version_get, model=model, number=form_int(post, "version", 0)
        )
        result = _run(
            request,
            services.alias_promote,
            model=model,
            alias=post.get("alias", ""),
            version=version,
            reason=post.get("reason", ""),
        )
        if isinstance(result, PromotionRequest):
            messages.success(request, "Promotion requested: it waits for an approver")
    elif action == "rollback":
        _run(
            request,
            services.alias_rollback,
            model=model,
            alias=post.get("alias", ""),
            reason=post.get("reason", ""),
        )
    elif action in ("approve", "reject"):
        promotion = model.promotion_requests.filter(pk=post.get("request")).first()
        if promotion:
            _run(request, services.promotion_decide, request=promotion, approve=action == "approve")
    elif action == "policy":
        try:
            policy = json.loads(post.get("policy") or "{}")
        except json.JSONDecodeError as exc:
            messages.error(request, f"Policy is not JSON: {exc.msg} (line {exc.lineno})")
            return
        _run(request, services.policy_set, model=model, policy=policy)
    elif action == "generate":
        served = _run(
            request,
            services.generate,
            model=model,
            alias=post.get("alias", "production"),
            messages=[{"role": "user", "content": post.get("prompt", "")}],
            max_new_tokens=form_int(post, "max_new_tokens", 64),
        )
        if served:
            request.session["last_generation"] = {
                "id": served.pk,
                "output": served.output,
                "version": served.version.number,
            }
    elif action == "feedback":
        item = _run(
            request,
            services.feedback_add,
            model=model,
            generation_id=form_int(post, "generation", 0),
            rating=form_int(post, "rating", 0),
            comment=post.get("comment", ""),
        )
        if item and post.get("annotate"):
            _run(request, services.feedback_to_annotation, feedback=item)
            messages.success(request, "Sent to the dataset's annotation draft")


def version_export(request, name: str, number: int, kind: str):
    model = _model(request, name)
    version = visible_or_404(selectors.version_get, model=model, number=number)
    try:
        path = export.archive(version, kind)
    except ServiceError as exc:
        messages.error(request, exc.detail)
        return redirect("registry_version", name=name, number=number)
    return FileResponse(
        open(path, "rb"), as_attachment=True, filename=f"{name}-v{number}-{kind}.zip"
    )
