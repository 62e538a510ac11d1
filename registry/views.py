import json
from functools import wraps

from django.contrib import messages
from django.http import FileResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from experiments.selectors import run_get
from finetune_hub.display import model_info_rows
from finetune_hub.errors import invalid
from finetune_hub.pagination import paginate
from finetune_hub.selectors import teams_for_user
from finetune_hub.views import form_int, service_errors_as_messages, team_of, visible_or_404
from registry import export, selectors, services
from registry.models import PromotionRequest


@require_http_methods(["GET", "POST"])
def model_list(request):
    if request.method == "POST":
        with service_errors_as_messages(request):
            model = services.model_create(
                team=team_of(request, request.POST.get("team")),
                name=request.POST.get("name", ""),
                by=request.user,
                description=request.POST.get("description", ""),
            )
            return redirect("model_detail", name=model.name)
    return render(
        request,
        "registry/model_list.html",
        {
            "models": paginate(request, selectors.models_for_page(user=request.user)),
            "teams": teams_for_user(user=request.user),
        },
    )


def _model(request, name):
    return visible_or_404(selectors.model_get, user=request.user, name=name)


# The newest succeeded runs offered for registration; an older one is registered by id (API).
RUN_CHOICES = 100


def model_detail(request, name: str):
    model = _model(request, name)
    return render(
        request,
        "registry/model_detail.html",
        {
            "model": model,
            "versions": paginate(request, selectors.versions_of(model), param="versions"),
            "aliases": paginate(request, selectors.aliases_of(model), param="aliases"),
            "history": paginate(request, selectors.model_history(model=model), param="history"),
            "requests": paginate(request, selectors.pending_requests(model), param="requests"),
            "feedback": selectors.feedback_by_version(model),
            "runs": selectors.registrable_runs(user=request.user, model=model)[:RUN_CHOICES],
            "policy": json.dumps(model.policy, indent=2),
        },
    )


def version_detail(request, name: str, number: int):
    model = _model(request, name)
    version = visible_or_404(selectors.version_get, model=model, number=number)
    lineage = selectors.lineage(version)
    return render(
        request,
        "registry/version_detail.html",
        {
            "model": model,
            "version": version,
            "lineage": lineage,
            "base_model_rows": model_info_rows(lineage["base_model"]),
            "evaluations": selectors.evaluations_of(version),
            "forgetting": selectors.forgetting_cards(version),
        },
    )


def model_action(view):
    """A POST on a model the user sees; a ServiceError becomes the page's message, and the
    answer is the model page again."""

    @require_POST
    @wraps(view)
    def action(request, name: str):
        model = _model(request, name)
        with service_errors_as_messages(request):
            view(request, model, request.POST)
        return redirect("model_detail", name=name)

    return action


@model_action
def register(request, model, post):
    run_id = form_int(post, "run", 0)
    if run_id < 1:
        raise invalid("Choose a run to register", field="run")
    run = run_get(user=request.user, run_id=run_id)  # another team's: a message, not a page
    version = services.version_register(model=model, run=run, by=request.user)
    messages.success(request, f"Registered {version}")


@model_action
def promote(request, model, post):
    number = form_int(post, "version", 0)
    if number < 1:
        raise invalid("Choose a version to promote", field="version")
    version = selectors.version_get(model=model, number=number)
    result = services.alias_promote(
        model=model,
        alias=post.get("alias", ""),
        version=version,
        reason=post.get("reason", ""),
        by=request.user,
    )
    if isinstance(result, PromotionRequest):
        messages.success(request, "Promotion requested: it waits for an approver")
    else:
        messages.success(request, f"{result.alias} now points at v{version.number}")


@model_action
def rollback(request, model, post):
    event = services.alias_rollback(
        model=model,
        alias=post.get("alias", ""),
        reason=post.get("reason", ""),
        by=request.user,
        from_version=form_int(post, "from_version", 0) or None,
    )
    messages.success(request, f"Rolled {event.alias} back to v{event.to_version.number}")


def _decide(request, model, post, approve: bool):
    promotion = selectors.pending_request(model=model, request_id=form_int(post, "request", 0))
    services.promotion_decide(request=promotion, approve=approve, by=request.user)
    what = f"{promotion.alias} -> v{promotion.version.number}"
    messages.success(request, f"Approved: {what}" if approve else f"Rejected: {what}")


@model_action
def approve(request, model, post):
    _decide(request, model, post, approve=True)


@model_action
def reject(request, model, post):
    _decide(request, model, post, approve=False)


@model_action
def policy(request, model, post):
    try:
        value = json.loads(post.get("policy") or "{}")
    except json.JSONDecodeError as exc:
        raise invalid(
            f"Policy is not JSON: {exc.msg} (line {exc.lineno})", field="policy"
        ) from None
    services.policy_set(model=model, policy=value, by=request.user)
    messages.success(request, "Policy saved")


@model_action
def generate(request, model, post):
    served = services.generate(
        model=model,
        alias=post.get("alias", "production"),
        messages=[{"role": "user", "content": post.get("prompt", "")}],
        max_new_tokens=form_int(post, "max_new_tokens", 64),
        by=request.user,
    )
    request.session["last_generation"] = {
        "id": served.pk,
        "output": served.output,
        "version": served.version.number,
    }


@model_action
def feedback(request, model, post):
    item = services.feedback_add(
        model=model,
        generation_id=form_int(post, "generation", 0),
        rating=form_int(post, "rating", 0),
        comment=post.get("comment", ""),
        by=request.user,
    )
    if post.get("annotate"):
        services.feedback_to_annotation(feedback=item, by=request.user)
        messages.success(
            request, "Thanks: feedback saved and sent to the dataset's annotation draft"
        )
    else:
        messages.success(request, "Thanks: feedback saved")


ACTIONS = {
    view.__name__: view
    for view in (register, promote, rollback, approve, reject, policy, generate, feedback)
}


def version_export(request, name: str, number: int, kind: str):
    model = _model(request, name)
    version = visible_or_404(selectors.version_get, model=model, number=number)
    with service_errors_as_messages(request):
        path = export.archive(version, kind)
        return FileResponse(
            open(path, "rb"), as_attachment=True, filename=f"{name}-v{number}-{kind}.zip"
        )
    return redirect("registry_version", name=name, number=number)
