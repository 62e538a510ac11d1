from django.http import HttpResponse
from ninja import Query, Router, Status

from datasets_app.schemas import VersionOut
from datasets_app.selectors import dataset_version_for
from evaluation import comparisons, selectors, services
from evaluation.general.services import general_set_version
from evaluation.models import Comparison, EvaluationRun
from evaluation.schemas import (
    ComparisonIn,
    ComparisonOut,
    ComparisonResultsOut,
    EvaluationIn,
    EvaluationOut,
    ExportIn,
    PairOut,
    SamplePage,
    VoteIn,
    VoteOut,
)
from finetune_hub.api_errors import errors
from finetune_hub.bounds import Id
from finetune_hub.pagination import PageIn, api_page
from finetune_hub.selectors import membership_require

router = Router(tags=["evaluation and comparisons"])


def evaluation_out(e: EvaluationRun) -> dict:
    return {
        "id": e.pk,
        "team": e.team_id,
        "subject": {
            "kind": e.subject_kind,
            "label": e.subject_label,
            "run": e.training_run_id,
            "model_version": e.model_version_id,
            "base_model": e.base_model,
        },
        "dataset_version": {
            "id": e.dataset_version_id,
            "dataset": e.dataset_version.dataset_id,
            "number": e.dataset_version.number,
        },
        "split": e.split,
        "metrics": e.metrics,
        "generation": e.generation,
        "status": e.status,
        "attempt": e.attempt,
        "max_attempts": e.max_attempts,
        "heartbeat_at": e.heartbeat_at,
        "results": e.results,
        "signatures": e.signatures,
        "error": e.error,
        "samples_done": e.samples_done,
        "samples_total": e.samples_total,
        "tokens_per_second": e.tokens_per_second,
        "created_at": e.created_at,
        "finished_at": e.finished_at,
    }


@router.post("/teams/{team_id}/general-set", response={200: VersionOut, **errors(409)})
def add_general_set(request, team_id: Id):
    """The team's version of the general-capability set shipped with finetune_hub, added the
    first time (later calls answer the same version)."""
    from datasets_app.api import version_out

    team = membership_require(user=request.auth, team=team_id).team
    return version_out(general_set_version(team=team, by=request.auth))


@router.post("/evaluations", response={201: EvaluationOut, **errors(409, 429)})
def create_evaluation(request, payload: EvaluationIn):
    version = dataset_version_for(user=request.auth, ref=payload.dataset_version)
    evaluation = services.evaluation_create(
        team=version.dataset.team,
        subject=payload.subject,
        dataset_version=version,
        split=payload.split,
        metric_names=payload.metrics,
        generation_settings=payload.generation,
        by=request.auth,
    )
    return Status(201, evaluation_out(evaluation))


@router.get("/evaluations", response=list[EvaluationOut])
def list_evaluations(request, response: HttpResponse, paging: Query[PageIn]):
    evaluations = selectors.evaluations_for(user=request.auth).order_by("-created_at", "-pk")
    return [evaluation_out(e) for e in api_page(evaluations, paging, response)]


@router.get("/evaluations/{evaluation_id}", response=EvaluationOut)
def get_evaluation(request, evaluation_id: Id):
    return evaluation_out(selectors.evaluation_get(user=request.auth, evaluation_id=evaluation_id))


@router.get("/evaluations/{evaluation_id}/samples", response=SamplePage)
def get_samples(request, evaluation_id: Id, order: str | None = None, page: Id = 1):
    evaluation = selectors.evaluation_get(user=request.auth, evaluation_id=evaluation_id)
    page_obj = selectors.samples_page(evaluation=evaluation, order=order, page=page)
    return {
        "count": page_obj.paginator.count,
        "page": page_obj.number,
        "pages": page_obj.paginator.num_pages,
        "results": [
            {
                "position": s.position,
                "example": s.example_id,
                "prompt": s.prompt,
                "reference": s.reference,
                "prediction": s.prediction,
                "loss": s.loss,
                "scores": s.scores,
            }
            for s in page_obj.object_list
        ],
    }


@router.post(
    "/evaluations/{evaluation_id}/retry", response={200: EvaluationOut, **errors(409, 429)}
)
def retry_evaluation(request, evaluation_id: Id):
    evaluation = selectors.evaluation_get(user=request.auth, evaluation_id=evaluation_id)
    return evaluation_out(services.evaluation_retry(evaluation=evaluation, by=request.auth))


def comparison_out(c) -> dict:
    return {
        "id": c.pk,
        "team": c.team_id,
        "name": c.name,
        "mode": c.mode,
        "split": c.split,
        "dataset_version": {
            "id": c.dataset_version_id,
            "dataset": c.dataset_version.dataset_id,
            "number": c.dataset_version.number,
        },
        "min_votes": c.min_votes,
        "subjects": [
            {"index": s.index, "evaluation": s.evaluation_id, "status": s.evaluation.status}
            for s in c.subjects.select_related("evaluation")
        ],
    }


@router.post("/comparisons", response={201: ComparisonOut, **errors(409, 429)})
def create_comparison(request, payload: ComparisonIn):
    version = dataset_version_for(user=request.auth, ref=payload.dataset_version)
    comparison = comparisons.comparison_create(
        team=version.dataset.team,
        subjects=payload.subjects,
        dataset_version=version,
        split=payload.split,
        mode=payload.mode,
        name=payload.name,
        metric_names=payload.metrics,
        generation=payload.generation,
        min_votes=payload.min_votes,
        by=request.auth,
    )
    return Status(201, comparison_out(comparison))


@router.get("/comparisons/{comparison_id}", response=ComparisonOut)
def get_comparison(request, comparison_id: Id):
    return comparison_out(selectors.comparison_get(user=request.auth, comparison_id=comparison_id))


@router.get(
    "/comparisons/{comparison_id}/next", response={200: PairOut, 204: None, **errors(403, 409)}
)
def next_pair(request, comparison_id: Id):
    comparison = selectors.comparison_get(user=request.auth, comparison_id=comparison_id)
    vote = comparisons.next_pair(comparison=comparison, reviewer=request.auth)
    if vote is None:
        return Status(204, None)
    return comparisons.pair_view(vote)


@router.post("/comparisons/{comparison_id}/votes", response={201: VoteOut, **errors(409)})
def cast_vote(request, comparison_id: Id, payload: VoteIn):
    comparison = selectors.comparison_get(user=request.auth, comparison_id=comparison_id)
    vote = comparisons.vote_cast(
        comparison=comparison,
        vote_id=payload.pair,
        reviewer=request.auth,
        choice=payload.choice,
        comment=payload.comment,
    )
    return Status(201, {"pair": vote.pk, "choice": vote.choice})


@router.get("/comparisons/{comparison_id}/results", response=ComparisonResultsOut)
def comparison_results(request, comparison_id: Id):
    comparison = selectors.comparison_get(user=request.auth, comparison_id=comparison_id)
    human = comparison.mode == Comparison.Mode.HUMAN
    return {
        "comparison": comparison_out(comparison),
        # Stored once every evaluation has finished (None until then): not recomputed.
        "automatic": comparisons.comparison_score(comparison=comparison),
        "human": comparisons.human_results(comparison) if human else None,
    }


@router.post(
    "/comparisons/{comparison_id}/export-preferences", response={201: VersionOut, **errors(409)}
)
def export_preferences(request, comparison_id: Id, payload: ExportIn = None):
    from datasets_app.api import version_out
    from datasets_app.selectors import dataset_get

    comparison = selectors.comparison_get(user=request.auth, comparison_id=comparison_id)
    dataset = (
        dataset_get(user=request.auth, dataset_id=payload.dataset)
        if payload and payload.dataset
        else None
    )
    version = comparisons.export_preferences(
        comparison=comparison, by=request.auth, dataset=dataset
    )
    return Status(201, version_out(version))
