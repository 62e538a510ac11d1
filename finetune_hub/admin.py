from django.contrib import admin

from finetune_hub.models import ApiToken, Membership, Team


class SiteAdminOnly(admin.ModelAdmin):
    """Screens over every tenant (all teams, all users' tokens): site admins (superusers)
    only, whatever Django permissions a staff user holds. Staff team members manage their
    own teams in the dashboard, where team roles apply."""

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_change_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_delete_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_add_permission(self, request):
        return self.has_module_permission(request)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(SiteAdminOnly):
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(ApiToken)
class ApiTokenAdmin(SiteAdminOnly):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at"]
    readonly_fields = ["user", "name", "prefix", "token_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request):
        return False  # tokens are made by the user (UI or create_api_token): shown once
