from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class FinetuneHubConfig(AppConfig):
    default = True  # the app's config; HubAdminConfig below is named in INSTALLED_APPS
    name = "finetune_hub"
    verbose_name = "Teams and access"

    def ready(self):
        from django.urls import register_converter

        from finetune_hub import checks  # noqa: F401 (registers the system checks)
        from finetune_hub.bounds import IdConverter

        # <id:...> in the dashboard's and /mlflow's URLs: Django's <int:...> takes any
        # number of digits, and one past int64 reached the database (a 500).
        register_converter(IdConverter, "id")


class HubAdminConfig(admin_apps.AdminConfig):
    """Django's admin, with the site that team roles open (finetune_hub/admin_site.py)."""

    default = False
    default_site = "finetune_hub.admin_site.HubAdminSite"
