from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from datasets_app.formats import to_messages
from datasets_app.selectors import dataset_version_for
from evaluation import comparisons, selectors, services
from evaluation.general.forgetting import comparison_cards
from evaluation.general.services import general_set_version
from evaluation.models import Comparison, EvaluationRun
from evaluation.services import Generation
from evaluation.subjects import Subject
from finetune_hub.display import in_field_order, model_info_rows
from finetune_hub.errors import ServiceError
from finetune_hub.pagination import paginate
from finetune_hub.selectors import membership_require
from finetune_hub.textdiff import word_diff
from finetune_hub.views import form_int, service_errors_as_messages, visible_or_404


def evaluation_list(request):
    return render(
        request,
        "evaluation/evaluation_list.html",
        {
            "evaluations": paginate(request, selectors.evaluations_for(user=request.user)),
            "comparisons": paginate(
                request, selectors.comparisons_for(user=request.user), param="comparisons"
            ),
            **selectors.form_choices(user=request.user),
        },
    )


@require_POST
def general_set_add(request, team_id: int):
    team = visible_or_404(membership_require, user=request.user, team=team_id).team
    with service_errors_as_messages(request):
        version = general_set_version(team=team, by=request.user)
        messages.success(
            request, f"{version} ({version.counts['eval']} questions) is in team {team.name}"
        )
    return redirect("evaluation_list")


@require_POST
def evaluation_new(request):
    try:
        version = dataset_version_for(
            user=request.user, ref=form_int(request.POST, "dataset_version", 0)
        )
        evaluation = services.evaluation_create(
            team=version.dataset.team,
            subject=Subject.from_form(request.POST.get("subject", "")),
            dataset_version=version,
            split=request.POST.get("split", "eval"),
            metric_names=request.POST.getlist("metrics") or None,
            generation_settings={"max_new_tokens": form_int(request.POST, "max_new_tokens", 64)},
            by=request.user,
        )
    except (ServiceError, ValueError) as exc:
        messages.error(request, getattr(exc, "detail", str(exc)))
        return redirect("evaluation_list")
    return redirect("evaluation_detail", evaluation_id=evaluation.pk)


def evaluation_detail(request, evaluation_id: int):
    evaluation = visible_or_404(
        selectors.evaluation_get, user=request.user, evaluation_id=evaluation_id
    )
    order = request.GET.get("order") or None
    try:
        page = selectors.samples_page(
            evaluation=evaluation, order=order, page=request.GET.get("page") or 1
        )
    except ServiceError:
        order, page = None, selectors.samples_page(evaluation=evaluation)
    fmt = evaluation.dataset_version.format
    samples = [
        # What the model was given, as the conversation it was (the rendered prompt with
        # the template's special tokens is kept in SampleResult.prompt for the API).
        (s, to_messages(fmt, s.example.fields)[:-1])
        for s in page
    ]
    return render(
        request,
        "evaluation/evaluation_detail.html",
        {
            "evaluation": evaluation,
            **_subject(evaluation),
            "page": page,
            "samples": samples,
            "order": order,
            "sort_links": selectors.sort_links(evaluation),
            "active": evaluation.status in EvaluationRun.ACTIVE,
        },
    )


def _subject(evaluation: EvaluationRun) -> dict:
    """What was evaluated, as readable lineage: the run (its experiment, technique and
    training data) or the model version (and the run it came from), and what was recorded of
    the base model it builds on."""
    run = evaluation.training_run
    version = evaluation.model_version
    if version is not None:
        run = version.source_run
    info = (version or run).base_model_info if (version or run) else {}
    return {
        "generation": in_field_order(evaluation.generation, Generation.model_fields),
        "subject_run": run,
        "subject_version": version,
        "base_model_rows": model_info_rows({"ref": evaluation.base_model, **info}),
    }


@require_POST
def evaluation_retry(request, evaluation_id: int):
    evaluation = visible_or_404(
        selectors.evaluation_get, user=request.user, evaluation_id=evaluation_id
    )
    try:
        services.evaluation_retry(evaluation=evaluation, by=request.user)
    except ServiceError as exc:
        messages.error(request, exc.detail)
    return redirect("evaluation_detail", evaluation_id=evaluation_id)


@require_POST
def comparison_new(request):
    try:
        version = dataset_version_for(
            user=request.user, ref=form_int(request.POST, "dataset_version", 0)
        )
        subjects = [Subject.from_form(v) for v in request.POST.getlist("subjects") if v]
        comparison = comparisons.comparison_create(
            team=version.dataset.team,
            subjects=subjects,
            dataset_version=version,
            split=request.POST.get("split", "eval"),
            mode=request.POST.get("mode", "auto"),
            name=request.POST.get("name", ""),
            by=request.user,
            min_votes=form_int(request.POST, "min_votes", 20),
        )
    except (ServiceError, ValueError) as exc:
        messages.error(request, getattr(exc, "detail", str(exc)))
        return redirect("evaluation_list")
    return redirect("comparison_detail", comparison_id=comparison.pk)


def comparison_detail(request, comparison_id: int):
    comparison = visible_or_404(
        selectors.comparison_get, user=request.user, comparison_id=comparison_id
    )
    subjects = selectors.comparison_subjects(comparison=comparison)
    automatic = comparisons.comparison_score(comparison=comparison)
    ready = automatic is not None
    try:
        a, b = form_int(request.GET, "a", 0), form_int(request.GET, "b", 1)
    except ServiceError:
        a, b = 0, 1
    rows = []
    if ready and {a, b} <= set(range(len(subjects))) and a != b:
        for row in comparisons.side_by_side(comparison, a, b):
            row["diff_a"], row["diff_b"] = word_diff(row["a"], row["b"])
            rows.append(row)
    return render(
        request,
        "evaluation/comparison_detail.html",
        {
            "comparison": comparison,
            "subjects": subjects,
            "ready": ready,
            "a": a,
            "b": b,
            "automatic": automatic,
            "human": comparisons.human_results(comparison)
            if comparison.mode == Comparison.Mode.HUMAN
            else None,
            "rows": rows,
            "forgetting": comparison_cards(comparison) if ready else [],
        },
    )


@require_http_methods(["GET", "POST"])
def comparison_review(request, comparison_id: int):
    comparison = visible_or_404(
        selectors.comparison_get, user=request.user, comparison_id=comparison_id
    )
    try:
        if request.method == "POST":
            comparisons.vote_cast(
                comparison=comparison,
                vote_id=form_int(request.POST, "pair", 0),
                reviewer=request.user,
                choice=request.POST.get("choice", ""),
                comment=request.POST.get("comment", ""),
            )
            return redirect("comparison_review", comparison_id=comparison_id)
        vote = comparisons.next_pair(comparison=comparison, reviewer=request.user)
    except ServiceError as exc:
        messages.error(request, exc.detail)
        return redirect("comparison_detail", comparison_id=comparison_id)
    progress = comparisons.review_progress(comparison=comparison, reviewer=request.user)
    return render(
        request,
        "evaluation/review.html",
        {
            "comparison": comparison,
            "view": comparisons.pair_view(vote) if vote else None,
            "number": progress["answered"] + 1,
            "total": progress["total"],
        },
    )


@require_POST
def comparison_export(request, comparison_id: int):
    comparison = visible_or_404(
        selectors.comparison_get, user=request.user, comparison_id=comparison_id
    )
    try:
        version = comparisons.export_preferences(comparison=comparison, by=request.user)
    except ServiceError as exc:
        messages.error(request, exc.detail)
        return redirect("comparison_detail", comparison_id=comparison_id)
    messages.success(request, f"Exported {version.size} preference pairs as {version}")
    return redirect("version_detail", dataset_id=version.dataset_id, number=version.number)
