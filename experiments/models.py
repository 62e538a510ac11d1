from django.conf import settings
from django.db import models

from finetune_hub.models import Team


class Technique(models.TextChoices):
    FULL = "full", "Full fine-tuning"
    LORA = "lora", "LoRA"
    QLORA = "qlora", "QLoRA (4-bit, CUDA)"
    PREFIX = "prefix", "Prefix tuning"
    IA3 = "ia3", "IA3 (learned rescaling vectors)"
    LOHA = "loha", "LoHa (low-rank Hadamard adapter)"
    DPO = "dpo", "DPO (preference data)"
    REWARD = "reward", "Reward model (preference data, RLHF step 1)"
    GRPO = "grpo", "GRPO against a reward model (RLHF step 2)"


class Experiment(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=100)
    # A project of tracked runs (trained elsewhere, reported through the tracking API or the
    # MLflow-compatible one) has no dataset version, base model or technique of its own.
    tracked = models.BooleanField(default=False, help_text="a project of runs trained elsewhere")
    dataset_version = models.ForeignKey(
        "datasets.DatasetVersion",
        on_delete=models.PROTECT,
        related_name="experiments",
        null=True,
        blank=True,
    )
    base_model = models.CharField(max_length=500, blank=True)
    technique = models.CharField(max_length=10, choices=Technique.choices, blank=True)
    hyperparameters = models.JSONField(default=dict, help_text="validated, with defaults filled in")
    estimate = models.JSONField(default=dict, help_text="resource estimate at creation")
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    # MLflow's side of an experiment (experiments/mlflow/): its tags, the artifact location a
    # client gave (kept and returned, never written to: artifacts stay under the artifact
    # root), its lifecycle (deleted: hidden from lists, restorable), and whether it is the
    # team's "Default" (MLflow's experiment 0, one a team).
    tags = models.JSONField(default=dict, blank=True)
    artifact_location = models.CharField(max_length=1000, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    mlflow_default = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="experiment_name_unique_in_team"),
            models.UniqueConstraint(
                fields=["team"],
                condition=models.Q(mlflow_default=True),
                name="one_mlflow_default_experiment_in_team",
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def lifecycle_stage(self) -> str:
        return "deleted" if self.deleted_at else "active"


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


class TrainingRunQuerySet(models.QuerySet):
    def with_output(self) -> "TrainingRunQuerySet":
        """Runs that finished with a trained output."""
        return self.filter(status=TrainingRun.Status.SUCCEEDED).exclude(output_path="")

    def generators(self) -> "TrainingRunQuerySet":
        """Runs whose output writes text: evaluated, compared, registered and served. A reward
        model scores text instead; it is a GRPO experiment's reward_run."""
        return self.with_output().exclude(experiment__technique=Technique.REWARD)

    def reward_models(self) -> "TrainingRunQuerySet":
        """Trained reward models: what a GRPO experiment may name as its reward_run."""
        return self.with_output().filter(experiment__technique=Technique.REWARD)


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Source(models.TextChoices):
        QUEUED = "queued", "trained by a worker"
        TRACKED = "tracked", "trained elsewhere, reported to the tracking API"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    priority = models.IntegerField(default=0, help_text="higher runs first")
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL)
    pid = models.PositiveIntegerField(null=True, blank=True, help_text="training process")
    gpus = models.JSONField(
        default=list, blank=True, help_text="the GPU indices it holds on its worker's host"
    )
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
    stop_reason = models.TextField(
        blank=True, help_text="why training ended before its last step, and what was kept"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.QUEUED)
    name = models.CharField(max_length=200, blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="a tracked run's parameters")
    tags = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True)
    # MLflow's user_id of the run (the client's, "unknown" when it sends none); created_by
    # stays the token's user.
    mlflow_user = models.CharField(max_length=250, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="deleted (MLflow)")
    base_model = models.CharField(
        max_length=500, blank=True, help_text="a tracked run's base model, else the experiment's"
    )

    objects = TrainingRunQuerySet.as_manager()

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

    @property
    def files_folder(self) -> str:
        """Where the run's output files are: a trained run's final folder, or the folder a
        tracked run's uploads go to (experiments.run_files)."""
        return self.output_path or f"{self.folder}/output"

    @property
    def model_base(self) -> str:
        """The base model the run's output builds on."""
        return self.base_model or self.experiment.base_model

    @property
    def tracked(self) -> bool:
        return self.source == self.Source.TRACKED

    @property
    def is_reward_model(self) -> bool:
        return self.experiment.technique == Technique.REWARD

    MODEL_CONFIGS = ("adapter_config.json", "config.json")

    @property
    def model_dir(self) -> str:
        """The folder of the run's tree that holds its model: the top, or, when the top has
        no model config, the shallowest folder that has one (a model MLflow logged under an
        artifact_path, e.g. adapter/); '' for the top."""
        names = self.output_files or {}
        if not names or any(n in self.MODEL_CONFIGS for n in names):
            return ""
        found = sorted(
            (n.rsplit("/", 1)[0] for n in names if n.rsplit("/", 1)[-1] in self.MODEL_CONFIGS),
            key=lambda d: (d.count("/"), d),
        )
        return found[0] if found else ""

    @property
    def model_path(self) -> str:
        """Where the run's model is under the artifact root (its output folder, or the
        folder of it that model_dir names)."""
        sub = self.model_dir
        return f"{self.output_path}/{sub}" if sub and self.output_path else self.output_path

    @property
    def model_files(self) -> dict:
        """The model's files (name under model_path -> sha256)."""
        sub = self.model_dir
        if not sub:
            return dict(self.output_files)
        return {
            n.removeprefix(f"{sub}/"): h
            for n, h in self.output_files.items()
            if n.startswith(f"{sub}/")
        }

    def model_require(self) -> None:
        """The one rule for a run used as a model (evaluated, compared, registered): it
        succeeded with an output, it names its base model, and it writes answers (a reward
        model scores them instead). Refuses with a 409 that says which part is missing."""
        from finetune_hub.errors import Conflict

        if self.status != self.Status.SUCCEEDED or not self.output_path:
            raise Conflict(f"Run {self.pk} has no trained output ({self.status})")
        if self.is_reward_model:
            raise Conflict(
                f"Run {self.pk} trained a reward model: it scores answers rather than writing "
                "them, so it is not evaluated, compared or registered as a generator; use it as "
                "a GRPO experiment's reward_run"
            )
        if not self.model_base:
            raise Conflict(
                f"Run {self.pk} names no base model: a tracked run declares it when it starts"
            )


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
    # Raw points, written only by experiments.metric_store.points_ingest for a run its caller
    # holds (the training process's own run, or a tracked run locked for the batch). No
    # database-level foreign key: its per-row check cost a third of ingestion on PostgreSQL,
    # and the (run, key, step) index serves every lookup by run. Deleting a run still
    # deletes its points (the ORM's cascade).
    run = models.ForeignKey(
        TrainingRun,
        on_delete=models.CASCADE,
        related_name="metrics",
        db_constraint=False,
        db_index=False,
    )
    step = models.BigIntegerField(help_text="int64, negative too (MLflow's)")
    key = models.CharField(max_length=250)
    value = models.FloatField(null=True, help_text="null: NaN (kept out of the curves)")
    attempt = models.PositiveIntegerField(default=1)
    timestamp = models.BigIntegerField(null=True, help_text="milliseconds since the epoch")

    class Meta:
        indexes = [models.Index(fields=["run", "key", "step"])]

    def __str__(self):
        return f"{self.key}@{self.step}={self.value if self.value is None else f'{self.value:g}'}"


class MetricSeries(models.Model):
    """One run's curve of one metric, thinned when written (experiments/metric_store.py): at most
    SERIES_POINTS points that keep each step bucket's first, last, lowest and highest point,
    ready to send. Charts, comparisons and run tables read these; MetricPoint keeps every
    point for full-resolution history."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="series")
    key = models.CharField(max_length=250)
    count = models.PositiveIntegerField(default=0, help_text="points logged")
    size = models.PositiveIntegerField(default=0, help_text="points stored, thinned")
    width = models.PositiveIntegerField(default=1, help_text="steps per bucket")
    points = models.TextField(default='{"steps":[],"values":[]}', help_text="JSON, thinned")
    last_step = models.BigIntegerField(null=True)
    last_value = models.FloatField(null=True)
    min_value = models.FloatField(null=True)
    max_value = models.FloatField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "key"], name="one_series_per_run_key")
        ]
        indexes = [models.Index(fields=["key", "last_value"])]

    def __str__(self):
        return f"{self.key} of run {self.run_id}"


class LoggedModel(models.Model):
    """A model logged from a run or on its own (MLflow 3's logged model): its files under the
    artifact root (models/<id>/), its params and tags, and the metrics runs logged against it.
    Team-scoped through its experiment. The source run is the text a client gave (MLflow
    accepts any); the run page lists the models whose source or output it is."""

    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        FAILED = "failed"

    id = models.CharField(primary_key=True, max_length=34, help_text='"m-" and 32 hex digits')
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="logged_models"
    )
    name = models.CharField(max_length=500)
    model_type = models.CharField(max_length=500, blank=True)
    source_run_id = models.CharField(max_length=64, blank=True, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    status_message = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    files = models.JSONField(default=dict, blank=True, help_text="relative path -> sha256")
    deleted = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["experiment", "deleted", "created_at"])]

    def __str__(self):
        return f"{self.name} ({self.pk})"

    @property
    def folder(self) -> str:
        return f"models/{self.pk}"


class LoggedModelMetric(models.Model):
    """A metric a run logged against a logged model (MLflow's metric with model_id, and the
    dataset it was measured on)."""

    model = models.ForeignKey(LoggedModel, on_delete=models.CASCADE, related_name="metrics")
    run = models.ForeignKey(TrainingRun, null=True, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=250)
    value = models.FloatField()
    timestamp = models.BigIntegerField(help_text="milliseconds since the epoch")
    step = models.BigIntegerField(default=0)
    dataset_name = models.CharField(max_length=500, blank=True)
    dataset_digest = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["model", "pk"]

    def __str__(self):
        return f"{self.key}={self.value} of {self.model_id}"


class RunDataset(models.Model):
    """A dataset a run read (MLflow's dataset input): what MLflow's client sends about it,
    kept as text; the input's tags (mlflow.data.context: train, eval...) in their order."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="dataset_inputs")
    name = models.CharField(max_length=500)
    digest = models.CharField(max_length=500)
    source_type = models.CharField(max_length=500)
    source = models.TextField()
    schema = models.TextField(blank=True)
    profile = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True, help_text="[[key, value], ...]")

    class Meta:
        ordering = ["run", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "name", "digest"], name="one_dataset_input_per_run"
            )
        ]

    def __str__(self):
        return f"{self.name} ({self.digest})"


class RunModelLink(models.Model):
    """A logged model a run read (input) or wrote (output, at a step)."""

    class Direction(models.TextChoices):
        INPUT = "input"
        OUTPUT = "output"

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="model_links")
    model = models.ForeignKey(LoggedModel, on_delete=models.CASCADE, related_name="run_links")
    direction = models.CharField(max_length=6, choices=Direction.choices)
    step = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["run", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "model", "direction"], name="one_model_link_per_direction"
            )
        ]

    def __str__(self):
        return f"{self.direction} {self.model_id} of run {self.run_id}"
