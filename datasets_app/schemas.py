"""What the datasets API takes and answers (datasets_app.api)."""

from typing import Any

from ninja import Schema

from finetune_hub.bounds import Id


class DatasetIn(Schema):
    team: Id
    name: str
    task: str
    description: str = ""
    labels: list[str] = []


class DatasetOut(Schema):
    id: int
    team: int
    name: str
    task: str
    description: str
    labels: list[str]
    versions: list[int]


class VersionOut(Schema):
    dataset: int
    number: int
    parent: int | None
    format: str
    sha256: str
    counts: dict[str, int]  # examples per split
    size: int
    warnings: list[dict[str, Any]]
    validation_report: dict[str, Any]
    source_filename: str
    message: str
    created_by: str
    created_at: str


class VersionRefOut(Schema):
    """A dataset version as other objects (experiments, evaluations) name it."""

    id: int
    dataset: int
    number: int


class ExampleOut(Schema):
    id: int
    position: int
    source_line: int | None
    split: str
    fields: dict[str, Any]
    status: str
    labels: list[str]
    annotator: str | None
    notes: str
    flag_reason: str


class ExamplePage(Schema):
    count: int
    page: int
    pages: int
    results: list[ExampleOut]


class DiffCounts(Schema):
    added: int
    removed: int
    changed: int
    unchanged: int


class ExampleChange(Schema):
    before: ExampleOut
    after: ExampleOut


class DiffOut(Schema):
    counts: DiffCounts
    added: list[ExampleOut]
    removed: list[ExampleOut]
    changed: list[ExampleChange]
