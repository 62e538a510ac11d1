import hashlib
from pathlib import PurePath

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from datasets_app import formats, selectors
from datasets_app.models import DataFormat, Dataset, DatasetVersion, Example, Split
from datasets_app.validation import (
    MAX_LENGTH,
    Row,
    assign_splits,
    content_hash,
    reject,
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


def _counts(splits: list[str]) -> dict:
    return {split: splits.count(split) for split in ("train", "eval", "test")}


def _next_number(dataset: Dataset) -> int:
    # The dataset row lock serialises concurrent uploads to one dataset.
    Dataset.objects.select_for_update().get(pk=dataset.pk)
    return (dataset.versions.aggregate(n=Max("number"))["n"] or 0) + 1


def _refuse_same_content(dataset: Dataset, sha256: str) -> None:
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
                _refuse_same_content(dataset, sha256)
                number = _next_number(dataset)
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
        counts=_counts(splits),
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


# Annotation: a draft is a working copy of a published version; publishing freezes it.


@transaction.atomic
def draft_create(*, version: DatasetVersion, by) -> DatasetVersion:
    membership_require(user=by, team=version.dataset.team, role=Role.MEMBER)
    if version.is_draft:
        raise Conflict("A draft is already a working copy")
    Dataset.objects.select_for_update().get(pk=version.dataset_id)
    if version.dataset.versions.filter(status=DatasetVersion.Status.DRAFT).exists():
        raise Conflict("This dataset has an open draft already; publish or discard it first")
    draft = DatasetVersion.objects.create(
        dataset=version.dataset,
        status=DatasetVersion.Status.DRAFT,
        parent=version,
        format=version.format,
        counts=version.counts,
        created_by=by,
        validation_report={"warnings": []},
    )
    Example.objects.bulk_create(
        Example(
            version=draft,
            position=e.position,
            source_line=e.source_line,
            split=e.split,
            fields=e.fields,
            content_hash=e.content_hash,
            status=e.status,
            labels=e.labels,
            annotator=e.annotator,
            reviewed_by=e.reviewed_by,
            notes=e.notes,
            flag_reason=e.flag_reason,
        )
        for e in version.examples.all()
    )
    return draft


def _served_fields(fmt: str, messages: list[dict], output: str) -> dict | None:
    """A served conversation and its answer as an example of the dataset's format."""
    user = "\n".join(m["content"] for m in messages if m["role"] == "user")
    if fmt == DataFormat.CHAT:
        return {"messages": [*messages, {"role": "assistant", "content": output}]}
    if fmt == DataFormat.INSTRUCTION:
        return {"instruction": user, "input": "", "output": output}
    if fmt == DataFormat.COMPLETION:
        return {"prompt": user, "completion": output}
    return None


@transaction.atomic
def example_add_to_draft(
    *, dataset: Dataset, messages: list[dict], output: str, flag_reason: str, notes: str, by
) -> Example:
    """A served answer becomes a flagged example in the dataset's open draft (a draft is
    started from the newest published version when none is open), for annotators to fix."""
    membership_require(user=by, team=dataset.team, role=Role.MEMBER)
    Dataset.objects.select_for_update().get(pk=dataset.pk)
    draft = dataset.versions.filter(status=DatasetVersion.Status.DRAFT).first()
    if draft is None:
        newest = selectors.newest_published(dataset)
        if newest is None:
            raise Conflict("The dataset has no published version to annotate")
        draft = draft_create(version=newest, by=by)
    fields = _served_fields(draft.format, messages, output)
    if fields is None:
        raise Conflict(f"A served answer cannot become a {draft.format} example")
    return Example.objects.create(
        version=draft,
        position=(draft.examples.aggregate(n=Max("position"))["n"] or 0) + 1,
        split=Split.TRAIN,
        fields=fields,
        content_hash=content_hash(fields),
        status=Example.Status.FLAGGED,
        flag_reason=flag_reason[:255],
        notes=notes,
    )


def _require_draft(example: Example) -> None:
    if not example.version.is_draft:
        raise Conflict("Published versions are immutable; start a draft to annotate")


@transaction.atomic
def example_edit(*, example: Example, fields: dict, by, notes: str | None = None) -> Example:
    _require_draft(example)
    membership_require(user=by, team=example.version.dataset.team, role=Role.MEMBER)
    fmt = example.version.format
    errors = formats.check(fmt, fields, example.source_line or 0, example.version.dataset.labels)
    if errors:
        raise reject(errors, "The edit was rejected")
    example.fields = formats.normalise(fmt, fields)
    example.content_hash = content_hash(example.fields)
    if notes is not None:
        example.notes = notes
    example.save()
    return example


REVIEW_ROLES = {
    Example.Status.APPROVED: Role.REVIEWER,
    Example.Status.REJECTED: Role.REVIEWER,
    Example.Status.FLAGGED: Role.MEMBER,
    Example.Status.PENDING: Role.MEMBER,
}


@transaction.atomic
def examples_set_status(*, examples, status: str, by, reason: str = "") -> int:
    """Approve, reject, flag (with a reason) or reopen examples of a draft."""
    examples = list(examples.select_related("version__dataset__team"))
    if status == Example.Status.FLAGGED and not reason.strip():
        raise invalid("Flagging needs a reason", field="reason")
    for example in examples:
        _require_draft(example)
        membership_require(user=by, team=example.version.dataset.team, role=REVIEW_ROLES[status])
    ids = [e.pk for e in examples]
    reviewed = by if status in (Example.Status.APPROVED, Example.Status.REJECTED) else None
    return Example.objects.filter(pk__in=ids).update(
        status=status,
        reviewed_by=reviewed,
        updated_at=timezone.now(),
        flag_reason=reason.strip() if status == Example.Status.FLAGGED else "",
    )


@transaction.atomic
def examples_assign(*, examples, annotator, by) -> int:
    examples = list(examples.select_related("version__dataset__team"))
    for example in examples:
        _require_draft(example)
        team = example.version.dataset.team
        membership_require(user=by, team=team, role=Role.REVIEWER)
        membership_require(user=annotator, team=team, role=Role.MEMBER)
    return Example.objects.filter(pk__in=[e.pk for e in examples]).update(
        annotator=annotator, updated_at=timezone.now()
    )


@transaction.atomic
def draft_publish(*, draft: DatasetVersion, by, message: str = "") -> DatasetVersion:
    """Freezes the draft as the next version. Rejected examples are left out; the draft's
    parent stays recorded, so lineage reaches the version the annotators started from."""
    membership_require(user=by, team=draft.dataset.team, role=Role.REVIEWER)
    if not draft.is_draft:
        raise Conflict("Only a draft can be published")
    draft.examples.filter(status=Example.Status.REJECTED).delete()
    examples = list(draft.examples.order_by("position"))
    if not examples:
        raise Conflict("Every example was rejected; nothing to publish")
    rows = [
        Row(line=e.source_line or 0, fields=e.fields, split=e.split, content_hash=e.content_hash)
        for e in examples
    ]
    splits = [e.split for e in examples]
    sha256 = version_sha256((e.split, e.content_hash) for e in examples)
    _refuse_same_content(draft.dataset, sha256)
    draft.number = _next_number(draft.dataset)
    draft.status = DatasetVersion.Status.PUBLISHED
    draft.sha256 = sha256
    draft.counts = _counts(splits)
    draft.validation_report = {
        "warnings": warnings_for(draft.format, rows, splits),
        "annotation": _annotation_summary(examples),
    }
    draft.message = message
    draft.published_by = by
    draft.published_at = timezone.now()
    draft.save()
    return draft


def _annotation_summary(examples: list[Example]) -> dict:
    summary = {status: 0 for status in Example.Status.values}
    for example in examples:
        summary[example.status] += 1
    return summary


@transaction.atomic
def draft_discard(*, draft: DatasetVersion, by) -> None:
    membership_require(user=by, team=draft.dataset.team, role=Role.REVIEWER)
    if not draft.is_draft:
        raise Conflict("Only a draft can be discarded")
    draft.delete()
