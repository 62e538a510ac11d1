import json

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from datasets_app import annotation, selectors, services
from datasets_app.models import DataFormat, Example, Split
from finetune_hub.bounds import INTEGER
from finetune_hub.errors import ServiceError
from finetune_hub.pagination import paginate
from finetune_hub.selectors import teams_for_user
from finetune_hub.textdiff import word_diff
from finetune_hub.uploads import upload_refusal
from finetune_hub.views import form_int, visible_or_404


def dataset_list(request):
    return render(
        request,
        "datasets/dataset_list.html",
        {"datasets": paginate(request, selectors.datasets_for(user=request.user))},
    )


@require_http_methods(["GET", "POST"])
def dataset_new(request):
    context = {"teams": teams_for_user(user=request.user), "tasks": DataFormat.values}
    if request.method == "POST":
        try:
            team = next(t for t in context["teams"] if str(t.pk) == request.POST.get("team"))
            dataset = services.dataset_create(
                team=team,
                name=request.POST.get("name", ""),
                task=request.POST.get("task", ""),
                description=request.POST.get("description", ""),
                labels=[s for s in request.POST.get("labels", "").split(",") if s.strip()],
                by=request.user,
            )
            return redirect("dataset_detail", dataset_id=dataset.pk)
        except StopIteration:
            context["error"] = ServiceError("Choose one of your teams")
        except ServiceError as exc:
            context["error"] = exc
        return render(request, "datasets/dataset_new.html", context, status=400)
    return render(request, "datasets/dataset_new.html", context)


def dataset_detail(request, dataset_id: int):
    dataset = visible_or_404(selectors.dataset_get, user=request.user, dataset_id=dataset_id)
    return render(
        request,
        "datasets/dataset_detail.html",
        {
            "dataset": dataset,
            "versions": paginate(request, selectors.versions_of(dataset=dataset)),
            "formats": ["auto", *DataFormat.values],
        },
    )


@require_POST
def version_upload(request, dataset_id: int):
    dataset = visible_or_404(selectors.dataset_get, user=request.user, dataset_id=dataset_id)
    upload = request.FILES.get("file")
    try:
        if refusal := upload_refusal(request):
            raise refusal
        if upload is None:
            raise ServiceError("Choose a file to upload", status=400)
        version = services.dataset_version_upload(
            dataset=dataset,
            filename=upload.name,
            data=upload.read(),
            by=request.user,
            fmt=request.POST.get("format", "auto"),
            max_length=form_int(request.POST, "max_length", 2048),
            seed=form_int(request.POST, "seed", 0),
            message=request.POST.get("message", ""),
        )
    except (ServiceError, ValueError) as exc:
        error = exc if isinstance(exc, ServiceError) else ServiceError(f"Invalid number: {exc}")
        return render(
            request,
            "datasets/dataset_detail.html",
            {
                "dataset": dataset,
                "versions": paginate(request, selectors.versions_of(dataset=dataset)),
                "formats": ["auto", *DataFormat.values],
                "upload_error": error,
            },
            status=error.status,
        )
    messages.success(request, f"Version {version.number} stored")
    return redirect("version_detail", dataset_id=dataset.pk, number=version.number)


def version_detail(request, dataset_id: int, number: int):
    version = visible_or_404(
        selectors.version_get, user=request.user, dataset_id=dataset_id, number=number
    )
    split, status = request.GET.get("split") or None, request.GET.get("status") or None
    return render(
        request,
        "datasets/version_detail.html",
        {
            "version": version,
            "dataset": version.dataset,
            "split": split,
            "status": status,
            "splits": Split.values,
            "statuses": Example.Status.values,
            "page": selectors.examples_page(
                version=version, split=split, status=status, page=request.GET.get("page") or 1
            ),
            "draft": selectors.draft_of(dataset=version.dataset),
        },
    )


def version_diff(request, dataset_id: int):
    dataset = visible_or_404(selectors.dataset_get, user=request.user, dataset_id=dataset_id)
    numbers = selectors.version_numbers(dataset)
    context = {"dataset": dataset, "numbers": sorted(numbers)}
    # Two version numbers chosen: each read as every client number is (a 400 past int64);
    # anything else is the page before a choice.
    chosen = all(INTEGER.fullmatch(request.GET.get(n, "")) for n in ("a", "b"))
    if chosen:
        a, b = form_int(request.GET, "a", 0), form_int(request.GET, "b", 0)
        old = visible_or_404(
            selectors.version_get, user=request.user, dataset_id=dataset_id, number=a
        )
        new = visible_or_404(
            selectors.version_get, user=request.user, dataset_id=dataset_id, number=b
        )
        diff = selectors.version_diff(a=old, b=new)
        diff["changed"] = [field_changes(x, y) for x, y in diff["changed"]]
        context.update(a=old, b=new, diff=diff)
    return render(request, "datasets/version_diff.html", context)


def _text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, indent=1, ensure_ascii=False)


def field_changes(before, after) -> dict:
    """One changed example, field by field: the fields that differ with their words marked,
    the ones that do not as they are."""
    fields = []
    for name in dict.fromkeys([*before.fields, *after.fields]):
        old, new = _text(before.fields.get(name)), _text(after.fields.get(name))
        changed = old != new
        marked = word_diff(old, new) if changed else (old, new)
        fields.append({"name": name, "changed": changed, "before": marked[0], "after": marked[1]})
    return {"position": after.position, "fields": fields}


@require_POST
def draft_start(request, dataset_id: int, number: int):
    version = visible_or_404(
        selectors.version_get, user=request.user, dataset_id=dataset_id, number=number
    )
    try:
        draft = annotation.draft_create(version=version, by=request.user)
    except ServiceError as exc:
        messages.error(request, exc.detail)
        return redirect("version_detail", dataset_id=dataset_id, number=number)
    messages.success(request, "Draft created: annotate it in the admin, then publish")
    return redirect(f"/admin/datasets/example/?version__id__exact={draft.pk}")
