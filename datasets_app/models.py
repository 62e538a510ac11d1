"""Datasets, their immutable versions and the examples in them. The tables keep the names
they had when these models lived in experiments/ (migrations: SeparateDatabaseAndState)."""

from django.conf import settings
from django.db import models

from finetune_hub.models import Team


class DataFormat(models.TextChoices):
    INSTRUCTION = "instruction"
    CHAT = "chat"
    COMPLETION = "completion"
    CLASSIFICATION = "classification"
    PREFERENCE = "preference"


class Split(models.TextChoices):
    TRAIN = "train"
    EVAL = "eval"
    TEST = "test"


class Dataset(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=100)
    task = models.CharField(max_length=16, choices=DataFormat.choices)
    description = models.TextField(blank=True)
    # Declared labels for classification; a label outside them is an upload error.
    labels = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "experiments_dataset"  # the table from before datasets/ was an app
        ordering = ["team__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="dataset_name_unique_in_team")
        ]

    def __str__(self):
        return self.name


class DatasetVersion(models.Model):
    """Immutable once published. A draft is the annotators' working copy of a parent
    version; publishing it gives it the next number and freezes it."""

    class Status(models.TextChoices):
        DRAFT = "draft"
        PUBLISHED = "published"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PUBLISHED)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    format = models.CharField(max_length=16, choices=DataFormat.choices)
    sha256 = models.CharField(max_length=64, blank=True)
    counts = models.JSONField(default=dict, help_text="examples per split")
    validation_report = models.JSONField(default=dict)
    source_filename = models.CharField(max_length=255, blank=True)
    source_path = models.CharField(max_length=500, blank=True, help_text="under ARTIFACT_ROOT")
    message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "experiments_datasetversion"
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="version_number_unique"),
            models.UniqueConstraint(
                fields=["dataset"], condition=models.Q(status="draft"), name="one_draft_per_dataset"
            ),
            models.CheckConstraint(
                condition=models.Q(status="draft", number__isnull=True)
                | models.Q(status="published", number__isnull=False),
                name="published_versions_have_a_number",
            ),
        ]

    def __str__(self):
        return (
            f"{self.dataset.name} v{self.number}" if self.number else f"{self.dataset.name} draft"
        )

    @property
    def is_draft(self) -> bool:
        return self.status == self.Status.DRAFT

    @property
    def size(self) -> int:
        return sum(self.counts.values())


class Example(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        FLAGGED = "flagged"

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="examples")
    position = models.PositiveIntegerField(help_text="order in the version")
    source_line = models.PositiveIntegerField(null=True, blank=True)
    split = models.CharField(max_length=5, choices=Split.choices)
    fields = models.JSONField()
    content_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    labels = models.JSONField(default=list, blank=True, help_text="annotation tags")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_examples",
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    notes = models.TextField(blank=True)
    flag_reason = models.CharField(max_length=255, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "experiments_example"
        ordering = ["version", "position"]
        constraints = [
            models.UniqueConstraint(fields=["version", "position"], name="example_position_unique")
        ]
        indexes = [
            models.Index(fields=["version", "split"]),
            models.Index(fields=["version", "status"]),
        ]

    def __str__(self):
        return f"#{self.position} ({self.split})"
