"""The annotation desk's writes: a draft is a working copy of a published version; members
edit, flag and assign its examples, reviewers accept or reject them, and publishing freezes
the draft as the dataset's next version (datasets_app.services numbers and stores it)."""

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from datasets_app import formats, selectors
from datasets_app.models import DataFormat, Dataset, DatasetVersion, Example, Split
from datasets_app.services import next_number, refuse_same_content, split_counts, version_sha256
from datasets_app.validation import Row, content_hash, reject, warnings_for
from finetune_hub.errors import Conflict, invalid
from finetune_hub.models import Role
from finetune_hub.selectors import membership_require


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
    refuse_same_content(draft.dataset, sha256)
    draft.number = next_number(draft.dataset)
    draft.status = DatasetVersion.Status.PUBLISHED
    draft.sha256 = sha256
    draft.counts = split_counts(splits)
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
