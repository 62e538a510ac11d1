from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from datasets_app.models import DatasetVersion
from experiments.models import TrainingRun
from finetune_hub.models import Team


class RegisteredModel(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="registered_models")
    # Free text up to MLflow's limit ("Test Model 1"); MLflow refuses '/' and ':' in it, so
    # a name is one segment of a dashboard URL (registry/urls.py).
    name = models.CharField(
        max_length=256,
        validators=[
            RegexValidator(
                r"^(?!\.\.|\.\Z)[^/:]+\Z",
                "A model name cannot contain '/' or ':', be '.' or start with '..'",
            )
        ],
    )
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    policy = models.JSONField(default=dict, help_text="promotion policy (registry.policy)")
    retrain_every_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="retrain production on the newest data this often"
    )
    last_retrain_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="registered_model_name_unique")
        ]

    def __str__(self):
        return self.name


class ModelVersion(models.Model):
    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="versions"
    )
    number = models.PositiveIntegerField()
    # The run of this hub the version came from (lineage); None for a version registered
    # through MLflow from a source elsewhere, which is a registry entry without local files.
    source_run = models.ForeignKey(
        TrainingRun, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    # MLflow's fields, as given: the source URI, the run id and link, the logged model id.
    source = models.TextField(blank=True)
    run_ref = models.CharField(max_length=64, blank=True)
    run_link = models.TextField(blank=True)
    logged_model_id = models.CharField(max_length=100, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, default="READY")
    stage = models.CharField(max_length=20, default="None", help_text="MLflow's (deprecated)")
    updated_at = models.DateTimeField(null=True, blank=True)
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    base_model = models.CharField(max_length=500)
    base_model_info = models.JSONField(default=dict, help_text="path, hash or revision, dtype")
    kind = models.CharField(max_length=8, blank=True, help_text="adapter or full")
    artifact_path = models.CharField(
        max_length=500, blank=True, help_text="under ARTIFACT_ROOT; empty: no files"
    )
    artifacts = models.JSONField(default=dict, help_text="file name -> sha256")
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["registered_model", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "number"], name="model_version_number_unique"
            )
        ]

    def __str__(self):
        return f"{self.registered_model.name} v{self.number}"

    @property
    def servable(self) -> bool:
        """Has weights here: a version recorded from a source elsewhere has none."""
        return bool(self.artifact_path)


class Alias(models.Model):
    """A name that points at one version. The unique constraint makes "production" have
    exactly one holder; every move is an AliasEvent."""

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="aliases"
    )
    name = models.SlugField(max_length=50)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "name"], name="one_holder_per_alias"
            )
        ]

    def __str__(self):
        return f"{self.registered_model.name}@{self.name}"


class AliasEvent(models.Model):
    """Append-only history: sequence numbers per alias chain without gaps."""

    class Action(models.TextChoices):
        PROMOTE = "promote"
        ROLLBACK = "rollback"
        REMOVE = "remove"

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="alias_events"
    )
    alias = models.SlugField(max_length=50)
    sequence = models.PositiveIntegerField()
    action = models.CharField(max_length=10, choices=Action.choices)
    from_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # None: the alias was removed (MLflow's delete alias).
    to_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.TextField()
    evidence = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["registered_model", "alias", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "alias", "sequence"], name="alias_event_sequence_unique"
            ),
            # A self-move would make the next rollback a no-op (it returns to from_version).
            models.CheckConstraint(
                condition=~models.Q(from_version=models.F("to_version")),
                name="alias_event_moves",
            ),
        ]

    def __str__(self):
        return f"{self.alias} #{self.sequence}"


class PromotionRequest(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        APPLIED = "applied"
        REJECTED = "rejected"

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="promotion_requests"
    )
    alias = models.SlugField(max_length=50)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    evidence = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"promote {self.version} to {self.alias} ({self.status})"


class ServedGeneration(models.Model):
    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="generations"
    )
    alias = models.SlugField(max_length=50)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="generations")
    messages = models.JSONField()
    output = models.TextField()
    latency_ms = models.FloatField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"generation {self.pk} by {self.version}"


class Feedback(models.Model):
    generation = models.ForeignKey(
        ServedGeneration, on_delete=models.CASCADE, related_name="feedback"
    )
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="feedback")
    rating = models.SmallIntegerField(help_text="+1 thumbs up, -1 thumbs down")
    comment = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_to = models.ForeignKey(
        "datasets.Example", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(rating__in=[-1, 1]), name="rating_is_a_thumb"
            ),
            models.UniqueConstraint(fields=["generation", "created_by"], name="one_feedback_each"),
        ]

    def __str__(self):
        return f"{'+' if self.rating > 0 else '-'}1 on {self.version}"


class RetrainJob(models.Model):
    """A scheduled retraining: production's experiment on newer data, then a comparison."""

    class Status(models.TextChoices):
        TRAINING = "training"
        COMPARED = "compared"
        FAILED = "failed"

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="retrain_jobs"
    )
    production = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    run = models.ForeignKey(TrainingRun, on_delete=models.PROTECT, related_name="+")
    comparison = models.ForeignKey(
        "evaluation.Comparison", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.TRAINING)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"retrain {self.registered_model} ({self.status})"
