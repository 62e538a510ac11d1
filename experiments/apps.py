from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"
    verbose_name = "Datasets and experiments"

    def ready(self):
        from experiments import checks  # noqa: F401 (registers the system checks)
