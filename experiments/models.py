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


class Technique(models.TextChoices):
    FULL = "full", "Full fine-tuning"
    LORA = "lora", "LoRA"
    QLORA = "qlora", "QLoRA (4-bit, CUDA)"
    PREFIX = "prefix", "Prefix tuning"
    DPO = "dpo", "DPO (preference data)"


class Experiment(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=100)
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="experiments"
    )
    base_model = models.CharField(max_length=500)
    technique = models.CharField(max_length=10, choices=Technique.choices)
    hyperparameters = models.JSONField(help_text="validated, with defaults filled in")
    estimate = models.JSONField(default=dict, help_text="resource estimate at creation")
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="experiment_name_unique_in_team")
        ]

    def __str__(self):
        return self.name


class Worker(models.Model):
    """A Huey consumer process that reports itself and its devices with a heartbeat."""

    name = models.CharField(max_length=200, unique=True, help_text="host:pid")
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    devices = models.JSONField(default=list)
    cuda = models.BooleanField(default=False)
    memory_bytes = models.BigIntegerField(help_text="largest device memory (GPU, else RAM)")
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField()

    class Meta:
        ordering = ["-heartbeat_at"]

    def __str__(self):
        return self.name


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    priority = models.IntegerField(default=0, help_text="higher runs first")
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL)
    pid = models.PositiveIntegerField(null=True, blank=True, help_text="training process")
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    eta_seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    base_model_info = models.JSONField(default=dict)
    output_path = models.CharField(max_length=500, blank=True, help_text="under ARTIFACT_ROOT")
    output_files = models.JSONField(default=dict, help_text="file name -> sha256")
    peak_memory_bytes = models.BigIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)

    class Meta:
        ordering = ["-queued_at"]
        indexes = [models.Index(fields=["status", "-priority", "queued_at"])]

    def __str__(self):
        return f"run {self.pk} of {self.experiment}"

    @property
    def progress(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    @property
    def folder(self) -> str:
        return f"runs/{self.pk}"


class Checkpoint(models.Model):
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    path = models.CharField(max_length=500, help_text="under ARTIFACT_ROOT")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step"], name="one_checkpoint_per_step")
        ]

    def __str__(self):
        return f"checkpoint-{self.step}"


class MetricPoint(models.Model):
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    key = models.CharField(max_length=50)
    value = models.FloatField()
    attempt = models.PositiveIntegerField(default=1)

    class Meta:
        indexes = [models.Index(fields=["run", "key", "step"])]

    def __str__(self):
        return f"{self.key}@{self.step}={self.value:g}"
