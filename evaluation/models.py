from django.conf import settings
from django.db import models

from datasets_app.models import DatasetVersion, Example, Split
from evaluation.subjects import Kind, Subject
from experiments.models import TrainingRun, Worker
from finetune_hub.models import Team


class EvaluationRun(models.Model):
    """Scores of one subject (a training run's output, a model version, or the bare base
    model) on one split of one dataset version."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="evaluations")
    subject_kind = models.CharField(max_length=16, choices=Kind.choices)
    training_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.PROTECT, related_name="evaluations"
    )
    model_version = models.ForeignKey(
        "registry.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="evaluations",
    )
    base_model = models.CharField(max_length=500, help_text="the model the subject builds on")
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="evaluations"
    )
    split = models.CharField(max_length=5, choices=Split.choices, default=Split.EVAL)
    metrics = models.JSONField(help_text="metric module names")
    generation = models.JSONField(help_text="generation settings")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    # Who runs it and when it last reported: the reaper requeues it when both fall silent.
    worker = models.ForeignKey(
        Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    results = models.JSONField(default=dict, help_text="corpus metrics with 95% intervals")
    signatures = models.JSONField(default=dict)
    error = models.TextField(blank=True)
    samples_done = models.PositiveIntegerField(default=0)
    samples_total = models.PositiveIntegerField(default=0)
    tokens_per_second = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(subject_kind="run", training_run__isnull=False)
                | models.Q(subject_kind="model_version", model_version__isnull=False)
                | models.Q(subject_kind="base_model"),
                name="evaluation_subject_present",
            )
        ]

    def __str__(self):
        return f"evaluation {self.pk} of {self.subject_label}"

    @property
    def subject_label(self) -> str:
        return Subject.of(self).label


class SampleResult(models.Model):
    evaluation = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="samples")
    example = models.ForeignKey(Example, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField()
    prompt = models.TextField()
    reference = models.TextField()
    prediction = models.TextField()
    loss = models.FloatField(null=True, blank=True)
    scores = models.JSONField(default=dict, help_text="metric -> per-sample score")
    stats = models.JSONField(default=dict, help_text="metric -> statistics for resampling")

    class Meta:
        ordering = ["evaluation", "position"]
        constraints = [
            # A retried evaluation fills in what is missing; it never duplicates a sample.
            models.UniqueConstraint(fields=["evaluation", "example"], name="one_result_per_example")
        ]

    def __str__(self):
        return f"sample {self.position} of {self.evaluation_id}"


class Comparison(models.Model):
    class Mode(models.TextChoices):
        AUTO = "auto"
        HUMAN = "human"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="comparisons")
    name = models.CharField(max_length=100, blank=True)
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="comparisons"
    )
    split = models.CharField(max_length=5, choices=Split.choices, default=Split.EVAL)
    mode = models.CharField(max_length=5, choices=Mode.choices)
    min_votes = models.PositiveIntegerField(
        default=20, help_text="decisive votes before a human verdict is given"
    )
    # The automatic result, computed once when every evaluation has finished (they do not
    # change after), so a promotion check reads it instead of re-running the bootstraps.
    results = models.JSONField(default=dict, blank=True, help_text="the paired bootstrap tests")
    scored_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.name or f"comparison {self.pk}"


class ComparisonSubject(models.Model):
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="subjects")
    index = models.PositiveIntegerField()
    evaluation = models.ForeignKey(EvaluationRun, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["comparison", "index"]
        constraints = [
            models.UniqueConstraint(fields=["comparison", "index"], name="subject_index_unique")
        ]

    def __str__(self):
        return f"{self.comparison} #{self.index}"


class ReviewPair(models.Model):
    """One example answered by two subjects (a < b), to be judged blind."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="pairs")
    example = models.ForeignKey(Example, on_delete=models.PROTECT, related_name="+")
    subject_a = models.PositiveIntegerField()
    subject_b = models.PositiveIntegerField()
    votes_count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "example", "subject_a", "subject_b"], name="pair_unique"
            )
        ]
        indexes = [models.Index(fields=["comparison", "votes_count"])]

    def __str__(self):
        return f"pair {self.pk}"


class Vote(models.Model):
    """A reviewer's judgement of a pair. The row is made when the pair is served, with the
    sides randomised; the choice is filled in by the vote. One per reviewer and pair."""

    class Choice(models.TextChoices):
        LEFT = "left"
        RIGHT = "right"
        TIE = "tie"
        BOTH_BAD = "both_bad"

    pair = models.ForeignKey(ReviewPair, on_delete=models.CASCADE, related_name="votes")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    left_is_a = models.BooleanField()
    choice = models.CharField(max_length=8, choices=Choice.choices, blank=True)
    comment = models.TextField(blank=True)
    served_at = models.DateTimeField(auto_now_add=True)
    voted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pair", "reviewer"], name="one_vote_per_reviewer")
        ]

    def __str__(self):
        return f"vote {self.pk}"

    @property
    def outcome(self) -> str | None:
        """The choice in terms of the pair's subjects: a, b, tie or both_bad."""
        if self.choice in (self.Choice.TIE, self.Choice.BOTH_BAD):
            return self.choice
        if not self.choice:
            return None
        return "a" if (self.choice == self.Choice.LEFT) == self.left_is_a else "b"
