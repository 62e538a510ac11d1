from django.conf import settings
from django.db import models

from experiments.models import TrainingRun
from finetune_hub.models import Team


class RegisteredModel(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="registered_models")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
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
    source_run = models.ForeignKey(TrainingRun, on_delete=models.PROTECT, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "number"], name="model_version_number_unique"
            )
        ]

    def __str__(self):
        return f"{self.registered_model.name} v{self.number}"
