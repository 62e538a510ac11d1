from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class FinetuneHubConfig(AppConfig):
    default = True  # the app's config; HubAdminConfig below is named in INSTALLED_APPS
    name = "finetune_hub"
    verbose_name = "Teams and access"

    def ready(self):
        from finetune_hub import checks  # noqa: F401 (registers the system checks)


class HubAdminConfig(admin_apps.AdminConfig):
    """Django's admin, with the site that team roles open (finetune_hub/admin_site.py)."""

    default = False
    default_site = "finetune_hub.admin_site.HubAdminSite"
