from django.core.paginator import Paginator
from django.db.models import Count, QuerySet

from datasets_app import formats
from datasets_app.models import Dataset, DatasetVersion
from finetune_hub.bounds import is_id
from finetune_hub.errors import NotFound, invalid
from finetune_hub.selectors import get_visible, visible_to

PAGE_SIZE = 50


def datasets_for(*, user, team: int | None = None) -> QuerySet[Dataset]:
    qs = visible_to(Dataset.objects.select_related("team"), user=user)
    if team is not None:
        qs = qs.filter(team_id=team)
    return qs.annotate(version_count=Count("versions", distinct=True)).order_by(
        "team__name", "name"
    )


def dataset_get(*, user, dataset_id: int) -> Dataset:
    return get_visible(
        Dataset.objects.select_related("team"), user=user, what="Dataset", pk=dataset_id
    )


def versions_of(*, dataset: Dataset) -> QuerySet[DatasetVersion]:
    return dataset.versions.select_related("created_by", "parent").order_by("status", "-number")


def version_get(*, user, dataset_id: int, number: int) -> DatasetVersion:
    dataset = dataset_get(user=user, dataset_id=dataset_id)
    version = dataset.versions.filter(number=number).select_related("parent").first()
    if version is None:
        raise NotFound("Dataset version not found")
    return version


def draft_of(*, dataset: Dataset) -> DatasetVersion | None:
    return dataset.versions.filter(status=DatasetVersion.Status.DRAFT).first()


def examples_page(
    *,
    version: DatasetVersion,
    split: str | None = None,
    status: str | None = None,
    page: int = 1,
    page_size: int = PAGE_SIZE,
):
    qs = version.examples.select_related("annotator").order_by("position")
    if split:
        qs = qs.filter(split=split)
    if status:
        qs = qs.filter(status=status)
    return Paginator(qs, page_size).get_page(page)


def _key(fmt: str, fields: dict) -> str:
    return formats.prompt_and_reference(fmt, fields)[0]


def version_diff(*, a: DatasetVersion, b: DatasetVersion, limit: int = 200) -> dict:
    """Examples added, removed and changed from a to b. An example 'changed' when its
    prompt is in both versions with a different content; otherwise it was added or removed."""
    if a.dataset_id != b.dataset_id:
        raise invalid("Both versions must belong to the same dataset", field="b")
    old = {e.content_hash: e for e in a.examples.all()}
    new = {e.content_hash: e for e in b.examples.all()}
    gone = {_key(a.format, e.fields): e for h, e in old.items() if h not in new}
    came = {_key(b.format, e.fields): e for h, e in new.items() if h not in old}
    changed = [(gone[k], came[k]) for k in gone.keys() & came.keys()]
    removed = [e for k, e in gone.items() if k not in came]
    added = [e for k, e in came.items() if k not in gone]
    return {
        "counts": {
            "added": len(added),
            "removed": len(removed),
            "changed": len(changed),
            "unchanged": len(old.keys() & new.keys()),
        },
        "added": sorted(added, key=lambda e: e.position)[:limit],
        "removed": sorted(removed, key=lambda e: e.position)[:limit],
        "changed": sorted(changed, key=lambda pair: pair[1].position)[:limit],
    }


def newest_published(dataset: Dataset) -> DatasetVersion | None:
    return (
        dataset.versions.filter(status=DatasetVersion.Status.PUBLISHED).order_by("-number").first()
    )


def version_numbers(dataset: Dataset) -> list[int]:
    """The published version numbers, newest first."""
    return list(
        dataset.versions.filter(number__isnull=False)
        .order_by("-number")
        .values_list("number", flat=True)
    )


def published_versions_for(*, user) -> QuerySet[DatasetVersion]:
    """Every published version in the user's teams: what an experiment or evaluation can use."""
    return (
        visible_to(
            DatasetVersion.objects.filter(status=DatasetVersion.Status.PUBLISHED),
            user=user,
            team_path="dataset__team",
        )
        .select_related("dataset__team")
        .order_by("dataset__name", "-number")
    )


def dataset_version_for(*, user, ref) -> DatasetVersion:
    """A version named by its id, or by {"dataset": id, "number": n}."""
    if isinstance(ref, dict) and all(is_id(ref.get(k)) for k in ("dataset", "number")):
        lookup = {"dataset_id": ref["dataset"], "number": ref["number"]}
    elif is_id(ref):
        lookup = {"pk": ref}
    else:
        raise invalid(
            'Name the version by id or {"dataset": id, "number": n}',
            field="dataset_version",
            status=422,
        )
    try:
        return get_visible(
            DatasetVersion.objects.select_related("dataset__team"),
            user=user,
            team_path="dataset__team",
            what="Dataset version",
            **lookup,
        )
    except NotFound:
        raise invalid("No such dataset version in your teams", field="dataset_version") from None
