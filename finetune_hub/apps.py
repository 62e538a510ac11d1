from django.apps import AppConfig


class FinetuneHubConfig(AppConfig):
    name = "finetune_hub"
    verbose_name = "Teams and access"
