import hashlib
from pathlib import PurePath

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from datasets_app.models import DataFormat, Dataset, DatasetVersion, Example
from datasets_app.validation import (
    MAX_LENGTH,
    Row,
    assign_splits,
    validate_upload,
    warnings_for,
)
from finetune_hub.errors import Conflict, full_clean, invalid
from finetune_hub.models import Role, Team
from finetune_hub.selectors import membership_require
from finetune_hub.storage import incoming, move_into_place, remove_artifact
from inference import base_models


@transaction.atomic
def dataset_create(
    *, team: Team, name: str, task: str, by, description: str = "", labels: list[str] | None = None
) -> Dataset:
    membership_require(user=by, team=team, role=Role.MEMBER)
    if task not in DataFormat.values:
        raise invalid(f"Unknown task {task!r}; one of {', '.join(DataFormat.values)}", field="task")
    labels = [str(label).strip() for label in labels or [] if str(label).strip()]
    dataset = Dataset(
        team=team,
        name=(name or "").strip(),
        task=task,
        description=description,
        labels=labels,
        created_by=by,
    )
    full_clean(dataset, exclude=["team", "created_by"], validate_unique=False)
    try:
        with transaction.atomic():
            dataset.save()
    except IntegrityError:
        raise Conflict(f"Team {team.name} has a dataset named {dataset.name!r} already") from None
    return dataset


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise invalid(f"{name} must be between 0 and 1", field=name, status=422)


def dataset_version_upload(
    *,
    dataset: Dataset,
    filename: str,
    data: bytes,
    by,
    fmt: str = "auto",
    base_model: str | None = None,
    max_length: int = 2048,
    seed: int = 0,
    eval_fraction: float = 0.1,
    test_fraction: float = 0.1,
    message: str = "",
) -> DatasetVersion:
    """Validates the whole file first; a rejected upload stores no row and no file."""
    membership_require(user=by, team=dataset.team, role=Role.MEMBER)
    _check_fraction("eval_fraction", eval_fraction)
    _check_fraction("test_fraction", test_fraction)
    if eval_fraction + test_fraction >= 1:
        raise invalid(
            "eval_fraction + test_fraction must leave examples for train",
            field="test_fraction",
            status=422,
        )
    if not 1 <= max_length <= MAX_LENGTH:
        raise invalid(
            f"max_length must be between 1 and {MAX_LENGTH:,}", field="max_length", status=422
        )
    tokenizer = base_models.load_tokenizer(base_model or settings.DEFAULT_BASE_MODEL)
    upload = validate_upload(
        filename=filename,
        data=data,
        fmt=fmt,
        task=dataset.task,
        labels=dataset.labels,
        tokenizer=tokenizer,
        max_length=max_length,
        max_bytes=settings.DATASET_MAX_UPLOAD_BYTES,
    )
    splits = assign_splits(
        upload.rows, seed=seed, eval_fraction=eval_fraction, test_fraction=test_fraction
    )
    report = {
        "warnings": warnings_for(upload.format, upload.rows, splits),
        **upload.stats,
        "split_seed": seed,
        "base_model": base_model or settings.DEFAULT_BASE_MODEL,
    }
    return _store_version(
        dataset=dataset,
        fmt=upload.format,
        rows=upload.rows,
        splits=splits,
        report=report,
        by=by,
        message=message,
        display_name=PurePath(filename).name[:100] or "upload",
        data=data,
        extension=upload.syntax,
    )


def version_sha256(fields_and_splits) -> str:
    digest = hashlib.sha256()
    for split, digest_of_example in fields_and_splits:
        digest.update(f"{split}:{digest_of_example}\n".encode())
    return digest.hexdigest()


def split_counts(splits: list[str]) -> dict:
    return {split: splits.count(split) for split in ("train", "eval", "test")}


def next_number(dataset: Dataset) -> int:
    # The dataset row lock serialises concurrent uploads to one dataset.
    Dataset.objects.select_for_update().get(pk=dataset.pk)
    return (dataset.versions.aggregate(n=Max("number"))["n"] or 0) + 1


def refuse_same_content(dataset: Dataset, sha256: str) -> None:
    same = dataset.versions.filter(sha256=sha256, status=DatasetVersion.Status.PUBLISHED).first()
    if same:
        raise Conflict(f"The content is identical to version {same.number}")


def _store_version(
    *, dataset, fmt, rows: list[Row], splits, report, by, message, display_name, data, extension
) -> DatasetVersion:
    """The file is stored under its own SHA-256 and the extension of the syntax it was read
    as; the client's filename is display text only and never part of a path. The version's
    folder is written whole before the row lock is taken and renamed into place before the
    commit: a crash leaves a partial in the incoming area or a folder with no row, never a
    row without its file."""
    sha256 = version_sha256((s, r.content_hash) for s, r in zip(splits, rows, strict=True))
    stored_name = f"{hashlib.sha256(data).hexdigest()}.{extension}"
    folder = None
    with incoming() as partial:
        partial.mkdir()
        (partial / stored_name).write_bytes(data)
        try:
            with transaction.atomic():
                refuse_same_content(dataset, sha256)
                number = next_number(dataset)
                folder = f"datasets/{dataset.pk}/v{number}"
                version = _version_create(
                    dataset=dataset,
                    number=number,
                    fmt=fmt,
                    sha256=sha256,
                    rows=rows,
                    splits=splits,
                    report=report,
                    by=by,
                    message=message,
                    display_name=display_name,
                    source_path=f"{folder}/{stored_name}",
                )
                # No row has this number yet (the dataset is locked): a folder there was
                # renamed into place by an upload that crashed before its commit.
                remove_artifact(folder)
                move_into_place(partial, folder)
        except BaseException:
            if folder:
                remove_artifact(folder)
            raise
    return version


def _version_create(
    *, dataset, number, fmt, sha256, rows, splits, report, by, message, display_name, source_path
) -> DatasetVersion:
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=number,
        format=fmt,
        sha256=sha256,
        counts=split_counts(splits),
        validation_report=report,
        source_filename=display_name,
        source_path=source_path,
        message=message,
        created_by=by,
        published_by=by,
        published_at=timezone.now(),
    )
    Example.objects.bulk_create(
        Example(
            version=version,
            position=i,
            source_line=row.line,
            split=split,
            fields=row.fields,
            content_hash=row.content_hash,
        )
        for i, (row, split) in enumerate(zip(rows, splits, strict=True))
    )
    return version
