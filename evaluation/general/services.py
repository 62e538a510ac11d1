"""The general-capability set as one of a team's datasets: uploaded once through the normal
upload service, so every evaluation path (the API, the evaluations page, comparisons) takes
it like any task set."""

import hashlib
from functools import cache

from django.db import transaction

from datasets_app.models import DataFormat, Dataset, DatasetVersion
from datasets_app.services import dataset_create, dataset_version_upload
from evaluation.general.generate import FILE
from finetune_hub.errors import Conflict
from finetune_hub.models import Role, Team
from finetune_hub.selectors import membership_require

NAME = "general-capability"
# The metric the general set is scored on by the forgetting check (its general row, the
# button that queues a missing evaluation) and by the promotion policy's general_metric
# default. A graded one: a base model that answers in sentences ("The capital of France is
# Paris.") scores 0 by exact match, and a drop below 0 cannot be seen; chrF gives credit for
# the answer inside the sentence and falls when fine-tuning garbles it.
METRIC = "chrf"


@cache
def _shipped() -> tuple[bytes, str]:
    data = FILE.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def general_version(*, team: Team) -> DatasetVersion | None:
    """The team's version uploaded from the shipped file (stored under the file's SHA-256),
    None until the set is added. A file written again with other questions is a new one."""
    return (
        DatasetVersion.objects.filter(
            dataset__team=team,
            dataset__name=NAME,
            status=DatasetVersion.Status.PUBLISHED,
            source_path__endswith=f"/{_shipped()[1]}.jsonl",
        )
        .select_related("dataset", "created_by")
        .order_by("-number")
        .first()
    )


def _dataset(team: Team, by) -> Dataset:
    dataset = Dataset.objects.filter(team=team, name=NAME).first()
    if dataset is None:
        try:
            dataset = dataset_create(
                team=team,
                name=NAME,
                task=DataFormat.INSTRUCTION,
                by=by,
                description="General-capability questions shipped with finetune_hub",
            )
        except Conflict:  # created by a concurrent call a moment ago
            dataset = Dataset.objects.get(team=team, name=NAME)
    if dataset.task != DataFormat.INSTRUCTION:
        raise Conflict(
            f"Team {team.name} has a {dataset.task} dataset named {NAME!r}; "
            "rename it to add the general-capability set"
        )
    return dataset


@transaction.atomic
def general_set_version(*, team: Team, by) -> DatasetVersion:
    """The team's published version of the general set, uploaded the first time. Concurrent
    calls upload it once: the second waits on the dataset's row lock, then finds it."""
    membership_require(user=by, team=team, role=Role.MEMBER)
    dataset = _dataset(team, by)
    Dataset.objects.select_for_update().get(pk=dataset.pk)
    return general_version(team=team) or dataset_version_upload(
        dataset=dataset,
        filename=FILE.name,
        data=_shipped()[0],
        by=by,
        fmt=DataFormat.INSTRUCTION,
        message="The general-capability set shipped with finetune_hub",
    )
