import re

from django.contrib import messages
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from datasets_app.selectors import dataset_version_for, published_versions_for
from experiments import forms, lifecycle, logged_models, selectors, services, tracked
from experiments import run_table as table
from experiments.models import Technique, TrainingRun
from experiments.training import guards
from experiments.training.hyperparameters import Hyperparameters
from finetune_hub.bounds import client_ids
from finetune_hub.display import in_field_order
from finetune_hub.errors import ServiceError
from finetune_hub.pagination import paginate
from finetune_hub.selectors import teams_for_user
from finetune_hub.views import form_int, service_errors_as_messages, team_of, visible_or_404


def experiment_list(request):
    return render(
        request,
        "experiments/experiment_list.html",
        {
            # Runs counted by status in the query: a project of 1,000 runs drew 1,000 badges.
            "experiments": paginate(
                request,
                selectors.with_run_counts(
                    selectors.experiments_for(user=request.user)
                    .filter(deleted_at=None)  # deleted through MLflow: on their own page only
                    .order_by("-created_at", "-pk")
                ),
            ),
        },
    )


def _form_context(request, error=None):
    """The form as it was posted: every value kept, each field's errors beside it (the
    others, which name no hyperparameter, at the top), each hyperparameter's default shown."""
    by_field: dict[str, list[str]] = {}
    for e in getattr(error, "errors", None) or []:
        by_field.setdefault(e.field or "", []).append(e.message)
    return {
        "teams": teams_for_user(user=request.user),
        "versions": published_versions_for(user=request.user),
        "techniques": Technique.choices,
        "fields": forms.form_fields(
            request.POST,
            by_field,
            {
                "reward_run": [
                    (run.pk, f"run {run.pk} · {run.experiment.team.name} / {run.experiment.name}")
                    for run in selectors.reward_runs_for(user=request.user)
                ]
            },
        ),
        "field_errors": {k: v for k, v in by_field.items() if k and "." not in k},
        "technique_groups": forms.TECHNIQUE_GROUPS,
        "error": error,
        "post": request.POST,
    }


@require_http_methods(["GET", "POST"])
def experiment_new(request):
    if request.method == "GET":
        return render(request, "experiments/experiment_new.html", _form_context(request))
    try:
        team = team_of(request, request.POST.get("team"))
        version = dataset_version_for(
            user=request.user, ref=form_int(request.POST, "dataset_version", 0)
        )
        experiment = services.experiment_create(
            team=team,
            name=request.POST.get("name", ""),
            dataset_version=version,
            base_model=request.POST.get("base_model", "embedded"),
            technique=request.POST.get("technique", ""),
            hyperparameters=forms.hyperparameters_from(request.POST),
            notes=request.POST.get("notes", ""),
            by=request.user,
        )
    except ServiceError as exc:
        return render(
            request,
            "experiments/experiment_new.html",
            _form_context(request, exc),
            status=exc.status,
        )
    return redirect("experiment_detail", experiment_id=experiment.pk)


def experiment_detail(request, experiment_id: int):
    experiment = visible_or_404(
        selectors.experiment_get, user=request.user, experiment_id=experiment_id
    )
    return render(
        request,
        "experiments/experiment_detail.html",
        {
            "experiment": experiment,
            "hyperparameters": in_field_order(
                experiment.hyperparameters, Hyperparameters.model_fields
            ),
            "runs": paginate(request, selectors.runs_of(experiment=experiment)),
            "reward_run": selectors.reward_run_of(experiment),
            "warnings": (
                guards.warnings(
                    experiment.technique,
                    experiment.hyperparameters,
                    experiment.dataset_version.counts,
                )
                if experiment.dataset_version
                else []
            ),
        },
    )


@require_POST
def experiment_restore(request, experiment_id: int):
    """Brings back an experiment deleted through MLflow, with its runs (team members)."""
    experiment = visible_or_404(
        selectors.experiment_get, user=request.user, experiment_id=experiment_id
    )
    with service_errors_as_messages(request):
        lifecycle.experiment_restore(experiment=experiment, by=request.user)
        messages.success(request, "Experiment restored")
    return redirect("experiment_detail", experiment_id=experiment_id)


@require_POST
def run_queue_new(request, experiment_id: int):
    experiment = visible_or_404(
        selectors.experiment_get, user=request.user, experiment_id=experiment_id
    )
    with service_errors_as_messages(request):
        run = services.run_enqueue(
            experiment=experiment, by=request.user, priority=form_int(request.POST, "priority", 0)
        )
        return redirect("run_detail", run_id=run.pk)
    return redirect("experiment_detail", experiment_id=experiment_id)


def run_detail(request, run_id: int):
    run = visible_or_404(selectors.run_get, user=request.user, run_id=run_id)
    return render(
        request,
        "experiments/run_detail.html",
        {
            "run": run,
            "experiment": run.experiment,
            "active": run.status not in TrainingRun.FINISHED,
            # Every metric the run logged is charted, the defaults too before the first.
            "metric_keys": ",".join(selectors.run_metric_keys(run)),
            "headline": selectors.run_headline(run),
            "logged_models": logged_models.models_of_run(run),
            "datasets": run.dataset_inputs.all(),
        },
    )


def logged_model_detail(request, model_id: str):
    model = visible_or_404(logged_models.model_visible, user=request.user, model_id=model_id)
    return render(
        request,
        "experiments/logged_model_detail.html",
        {"model": model, "metrics": model.metrics.select_related("run"), "files": model.files},
    )


RUN_ACTIONS = {
    "cancel": services.run_cancel,
    "resume": services.run_resume,
    "restore": lifecycle.run_restore,  # a run deleted through MLflow
}


@require_POST
def run_action(request, run_id: int, action: str):
    run = visible_or_404(selectors.run_get, user=request.user, run_id=run_id)
    if action not in (*RUN_ACTIONS, "priority", "annotate"):
        raise Http404
    with service_errors_as_messages(request):
        if action == "annotate":
            with transaction.atomic():
                tags = tracked.tags_from_text(request.POST.get("tags", ""))
                tracked.tags_set(run=run, tags=tags, by=request.user, replace=True)
                tracked.notes_set(run=run, notes=request.POST.get("notes", ""), by=request.user)
            messages.success(request, "Tags and notes saved")
        elif action == "priority":
            services.run_set_priority(
                run=run, priority=form_int(request.POST, "priority", 0), by=request.user
            )
        else:
            RUN_ACTIONS[action](run=run, by=request.user)
    next_url = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        return redirect(next_url)
    return redirect("run_detail", run_id=run_id)


def run_queue(request):
    return render(
        request,
        "experiments/run_queue.html",
        {
            "runs": paginate(request, selectors.queue_for(user=request.user)),
            "hosts": selectors.gpu_hosts(user=request.user),
        },
    )


# The run table's fixed columns a user can hide (the run's id and name always show).
TABLE_COLUMNS = {
    "experiment": "Experiment",
    "technique": "Technique",
    "status": "Status",
    "step": "Step",
    "tags": "Tags",
    "queued": "Queued",
}
MAX_CHOSEN = 12  # metric columns, and parameter columns, a table shows at most


def _names(values: list[str]) -> list[str]:
    """Metric or parameter names from the chooser (each value may list several, comma
    separated, as the old `keys` field did): well-formed ones, once each, at most 12."""
    names = (n.strip() for v in values for n in v.split(","))
    valid = (n for n in names if re.fullmatch(table.NAME, n))
    return list(dict.fromkeys(valid))[:MAX_CHOSEN]


def _table_columns(request) -> dict:
    """The columns the table shows: what the chooser just submitted (kept in the session,
    so they stay while the user filters and pages), else what the session kept, else the
    defaults. `keys=loss,eval_loss` alone sets the metric columns, as links may say."""
    saved = request.session.get("run_table_columns") or {
        "metrics": list(table.TABLE_KEYS),
        "params": [],
        "show": list(TABLE_COLUMNS),
    }
    if "columns" in request.GET:
        saved = {
            "metrics": _names(request.GET.getlist("metric")),
            "params": _names(request.GET.getlist("param")),
            "show": [c for c in TABLE_COLUMNS if c in request.GET.getlist("show")],
        }
        request.session["run_table_columns"] = saved
    elif "keys" in request.GET:
        saved = {**saved, "metrics": _names(request.GET.getlist("keys"))}
    return saved


def _sort_link(query_sort: str, column: str) -> dict:
    """A sortable header: ascending first, descending when it already sorts ascending."""
    ascending = query_sort == column
    return {
        "sort": f"-{column}" if ascending else column,
        "arrow": "▲" if ascending else "▼" if query_sort == f"-{column}" else "",
    }


def run_table(request):
    """Every run of the user's teams, filtered and sorted by any hyperparameter or latest
    metric (the same grammar as GET /api/runs), with the columns the user chose (metrics,
    hyperparameters, fixed ones; each header sorts) and the runs to compare ticked."""
    query = {name: request.GET.get(name, "").strip() for name in ("filter", "sort", "status", "q")}
    columns = _table_columns(request)
    keys, params = columns["metrics"], columns["params"]
    error, runs = None, TrainingRun.objects.none()
    try:
        runs = table.run_table(
            user=request.user,
            filter=query["filter"],
            sort=query["sort"] or "-queued_at",
            status=query["status"] or None,
            q=query["q"],
        )
    except ServiceError as exc:
        error = exc.errors[0].message if exc.errors else exc.detail
    page = paginate(request, runs, per_page=50)
    latest = selectors.latest_values(list(page), keys)
    run_params = {run.pk: selectors.run_params(run) for run in page}
    rows = [
        (
            run,
            [latest[run.pk].get(key) for key in keys],
            [selectors.param_text(run_params[run.pk].get(name)) for name in params],
        )
        for run in page
    ]
    # The chooser offers what this page's runs logged and were trained with, and the chosen.
    # The chosen first, in their order (the columns' order), then the others by name.
    logged = selectors.compared_keys([r.pk for r in page], 100)
    offered_metrics = keys + sorted(set(logged) - set(keys))
    offered_params = params + sorted({n for p in run_params.values() for n in p} - set(params))
    return render(
        request,
        "experiments/run_table.html",
        {
            "page": page,
            "rows": rows,
            "metric_columns": [
                {"name": k, **_sort_link(query["sort"], f"metrics.{k}")} for k in keys
            ],
            "param_columns": [
                {"name": n, **_sort_link(query["sort"], f"params.{n}")} for n in params
            ],
            "id_sort": _sort_link(query["sort"], "id"),
            "show": set(columns["show"]),
            "fixed_columns": [
                {"name": c, "label": label, "checked": c in columns["show"]}
                for c, label in TABLE_COLUMNS.items()
            ],
            "offered_metrics": [{"name": k, "checked": k in keys} for k in offered_metrics],
            "offered_params": [{"name": n, "checked": n in params} for n in offered_params],
            "column_count": 2 + len(columns["show"]) + len(keys) + len(params),
            "query": query,
            "error": error,
            "statuses": TrainingRun.Status.values,
        },
    )


def run_compare(request):
    """Any number of runs: the table a page at a time, the chart from every page of the API."""
    ids = client_ids(request.GET.get("ids", ""), field="ids", status=400)
    visible = selectors.runs_visible(user=request.user, ids=ids)
    if missing := [i for i in ids if i not in visible]:
        raise Http404(f"Run {missing[0]} not found")
    page = paginate(request, ids, per_page=50)
    runs = [visible[i] for i in page]
    columns, rows = selectors.params_table(runs)
    return render(
        request,
        "experiments/run_compare.html",
        {
            "runs": runs,
            "page": page,
            "ids": ",".join(map(str, ids)),
            "count": len(ids),
            "columns": columns,
            "rows": zip(runs, rows, strict=True),
            "metric_keys": selectors.compared_keys(ids),
        },
    )
