from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    # Not "datasets": that is Hugging Face's package, which TRL and evaluate import.
    name = "datasets_app"
    label = "datasets"
    verbose_name = "Datasets"
