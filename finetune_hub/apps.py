from django.apps import AppConfig


class FinetuneHubConfig(AppConfig):
    name = "finetune_hub"
    verbose_name = "Teams and access"

    def ready(self):
        from finetune_hub import checks  # noqa: F401 (registers the system checks)
