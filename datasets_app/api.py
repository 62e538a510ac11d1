from typing import Annotated

from ninja import File, Form, Router, Status, UploadedFile

from datasets_app import selectors, services
from datasets_app.models import DatasetVersion, Example
from datasets_app.schemas import DatasetIn, DatasetOut, DiffOut, ExamplePage, VersionOut
from finetune_hub.api_errors import errors
from finetune_hub.bounds import Id, Int64
from finetune_hub.selectors import membership_require
from finetune_hub.uploads import upload_refusal

router = Router(tags=["datasets"])


def dataset_out(dataset) -> dict:
    numbers = dataset.versions.filter(number__isnull=False).values_list("number", flat=True)
    return {
        "id": dataset.pk,
        "team": dataset.team_id,
        "name": dataset.name,
        "task": dataset.task,
        "description": dataset.description,
        "labels": dataset.labels,
        "versions": sorted(numbers),
    }


def version_out(version: DatasetVersion) -> dict:
    return {
        "dataset": version.dataset_id,
        "number": version.number,
        "parent": version.parent.number if version.parent else None,
        "format": version.format,
        "sha256": version.sha256,
        "counts": version.counts,
        "size": version.size,
        "warnings": version.validation_report.get("warnings", []),
        "validation_report": version.validation_report,
        "source_filename": version.source_filename,
        "message": version.message,
        "created_by": version.created_by.username,
        "created_at": version.created_at.isoformat(),
    }


def example_out(example: Example) -> dict:
    return {
        "id": example.pk,
        "position": example.position,
        "source_line": example.source_line,
        "split": example.split,
        "fields": example.fields,
        "status": example.status,
        "labels": example.labels,
        "annotator": example.annotator.username if example.annotator else None,
        "notes": example.notes,
        "flag_reason": example.flag_reason,
    }


@router.post("/datasets", response={201: DatasetOut, **errors(404, 409)})
def create_dataset(request, payload: DatasetIn):
    team = membership_require(user=request.auth, team=payload.team).team
    dataset = services.dataset_create(
        team=team,
        name=payload.name,
        task=payload.task,
        description=payload.description,
        labels=payload.labels,
        by=request.auth,
    )
    return Status(201, dataset_out(dataset))


@router.get("/datasets", response=list[DatasetOut])
def list_datasets(request, team: Id | None = None):
    return [dataset_out(d) for d in selectors.datasets_for(user=request.auth, team=team)]


@router.get("/datasets/{dataset_id}", response=DatasetOut)
def get_dataset(request, dataset_id: Id):
    return dataset_out(selectors.dataset_get(user=request.auth, dataset_id=dataset_id))


@router.post("/datasets/{dataset_id}/versions", response={201: VersionOut, **errors(409)})
def upload_version(
    request,
    dataset_id: Id,
    file: File[UploadedFile],
    # Form(default) inside Annotated: ninja drops a default given after `=` when the type
    # carries bounds of its own.
    max_length: Annotated[Int64, Form(2048)],
    seed: Annotated[Int64, Form(0)],
    format: Form[str] = "auto",
    base_model: Form[str] = "",
    eval_fraction: Form[float] = 0.1,
    test_fraction: Form[float] = 0.1,
    message: Form[str] = "",
):
    if refusal := upload_refusal(request):
        raise refusal
    dataset = selectors.dataset_get(user=request.auth, dataset_id=dataset_id)
    version = services.dataset_version_upload(
        dataset=dataset,
        filename=file.name or "upload",
        data=file.read(),
        fmt=format,
        base_model=base_model or None,
        max_length=max_length,
        seed=seed,
        eval_fraction=eval_fraction,
        test_fraction=test_fraction,
        message=message,
        by=request.auth,
    )
    return Status(201, version_out(version))


@router.get("/datasets/{dataset_id}/versions/{number}", response=VersionOut)
def get_version(request, dataset_id: Id, number: Id):
    return version_out(
        selectors.version_get(user=request.auth, dataset_id=dataset_id, number=number)
    )


@router.get("/datasets/{dataset_id}/versions/{number}/examples", response=ExamplePage)
def list_examples(
    request,
    dataset_id: Id,
    number: Id,
    split: str | None = None,
    status: str | None = None,
    page: Id = 1,
):
    version = selectors.version_get(user=request.auth, dataset_id=dataset_id, number=number)
    page_obj = selectors.examples_page(version=version, split=split, status=status, page=page)
    return {
        "count": page_obj.paginator.count,
        "page": page_obj.number,
        "pages": page_obj.paginator.num_pages,
        "results": [example_out(e) for e in page_obj.object_list],
    }


@router.get("/datasets/{dataset_id}/diff", response=DiffOut)
def diff_versions(request, dataset_id: Id, a: Id, b: Id):
    old = selectors.version_get(user=request.auth, dataset_id=dataset_id, number=a)
    new = selectors.version_get(user=request.auth, dataset_id=dataset_id, number=b)
    diff = selectors.version_diff(a=old, b=new)
    return {
        "counts": diff["counts"],
        "added": [example_out(e) for e in diff["added"]],
        "removed": [example_out(e) for e in diff["removed"]],
        "changed": [
            {"before": example_out(x), "after": example_out(y)} for x, y in diff["changed"]
        ],
    }
