"""The admin site, opened by team roles rather than Django's staff flag: a reviewer or
annotator of a team works at the annotation desk on that team's data without being made
site staff. What each screen shows and allows stays with its ModelAdmin (team-scoped rows,
writes through the services, which check the role); the screens over every tenant remain
for site admins (finetune_hub.admin.SiteAdminOnly)."""

from django.contrib.admin import AdminSite
from django.contrib.auth.forms import AuthenticationForm


def has_team_role(user) -> bool:
    from finetune_hub.models import Membership

    return bool(
        user.is_active
        and user.is_authenticated
        and (user.is_staff or Membership.objects.filter(user=user).exists())
    )


class HubAdminSite(AdminSite):
    site_header = "finetune_hub: annotation desk and site administration"
    site_title = "finetune_hub admin"
    # Any active user may sign in here; has_permission then asks for staff or a team role
    # (Django's admin form refuses everyone who is not staff before that).
    login_form = AuthenticationForm

    def has_permission(self, request):
        return has_team_role(request.user)
