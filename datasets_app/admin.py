"""The annotation desk. Annotators work on a draft (a working copy of a version); every
change goes through the services, which check the team role and keep published versions
immutable."""

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from django.utils.html import format_html

from datasets_app import annotation, formats
from datasets_app.models import Dataset, DatasetVersion, Example
from finetune_hub.admin_site import has_team_role
from finetune_hub.errors import ServiceError
from finetune_hub.models import Team
from finetune_hub.selectors import visible_to

# From each model the desk shows or offers to the user who may see the row (a member of
# its team). Users are visible to those they share a team with.
TEAM_PATHS = {
    Team: "pk",
    Dataset: "team",
    DatasetVersion: "dataset__team",
    Example: "version__dataset__team",
    get_user_model(): "memberships__team",
}


def scoped(queryset: QuerySet, user) -> QuerySet:
    """The rows of `queryset` a staff user may see: those of their teams (all for a
    superuser). A model without a known path gives nothing rather than everything."""
    if user.is_superuser:
        return queryset
    path = TEAM_PATHS.get(queryset.model)
    if path is None:
        return queryset.none()
    # A user with memberships in two of the viewer's teams is one row, not two.
    return visible_to(queryset, user=user, team_path=path).distinct()


class ScopedRelatedFilter(admin.RelatedOnlyFieldListFilter):
    """Filter choices: related rows that the visible rows use and that are themselves in
    the user's teams; Django's own related filters list every row of the table."""

    def field_choices(self, field, request, model_admin):
        related = field.remote_field.model._default_manager.all()
        used = model_admin.get_queryset(request).values_list(f"{self.field_path}__pk", flat=True)
        visible = scoped(related, request.user).values("pk")
        return field.get_choices(
            include_blank=False,
            limit_choices_to=Q(pk__in=used) & Q(pk__in=visible),
            ordering=self.field_admin_ordering(field, request, model_admin),
        )


class TeamScopedAdmin(admin.ModelAdmin):
    """Team roles decide what a staff user may do here, not Django's per-model permissions:
    rows, filters and choices are limited to the user's teams and every write goes through
    a service."""

    def has_module_permission(self, request):
        return has_team_role(request.user)

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_delete_permission(self, request, obj=None):
        # Nothing is deleted here: a draft is discarded and an example rejected (actions,
        # through the services); published versions are immutable. Offering Django's
        # delete only to refuse it for a missing model permission was a dead end.
        return False

    def get_queryset(self, request):
        return scoped(super().get_queryset(request), request.user)

    @staticmethod
    def _choices(db_field, request) -> QuerySet:
        return scoped(db_field.remote_field.model._default_manager.all(), request.user)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        kwargs["queryset"] = self._choices(db_field, request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        kwargs["queryset"] = self._choices(db_field, request)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def run(self, request, fn, **kwargs):
        try:
            result = fn(by=request.user, **kwargs)
        except ServiceError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
            return None
        return result


@admin.register(Dataset)
class DatasetAdmin(TeamScopedAdmin):
    list_display = ["name", "team", "task", "created_by", "created_at"]
    list_filter = ["task", ("team", ScopedRelatedFilter)]
    search_fields = ["name"]
    readonly_fields = ["created_by", "created_at"]

    def has_add_permission(self, request):
        return False  # created through the dashboard or API, which check the team role


@admin.register(DatasetVersion)
class DatasetVersionAdmin(TeamScopedAdmin):
    list_display = ["__str__", "status", "parent", "format", "size", "created_by", "created_at"]
    list_filter = ["status", "format", ("dataset", ScopedRelatedFilter)]
    actions = ["publish", "discard"]
    readonly_fields = [f.name for f in DatasetVersion._meta.fields if f.name != "message"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return obj is None or obj.is_draft

    @admin.action(description="Publish the selected drafts as new versions")
    def publish(self, request, queryset):
        for draft in queryset:
            version = self.run(
                request, annotation.draft_publish, draft=draft, message=draft.message
            )
            if version:
                self.message_user(request, f"Published {version}")

    @admin.action(description="Discard the selected drafts")
    def discard(self, request, queryset):
        for draft in queryset:
            self.run(request, annotation.draft_discard, draft=draft)


class LabelFilter(admin.SimpleListFilter):
    title = "label"
    parameter_name = "label"

    def lookups(self, request, model_admin):
        datasets = scoped(Dataset.objects.exclude(labels=[]), request.user)
        labels = datasets.values_list("labels", flat=True)
        return [(label, label) for label in sorted({x for ls in labels for x in ls})]

    def queryset(self, request, queryset):
        return queryset.filter(fields__label=self.value()) if self.value() else queryset


class ExampleActionForm(ActionForm):
    reason = forms.CharField(required=False, help_text="for flagging")
    # Its options are set per request (ExampleAdmin.changelist_view): the user's team mates.
    annotator = forms.IntegerField(required=False, widget=forms.Select, help_text="for assigning")


class ExampleForm(forms.ModelForm):
    """One text box per field of the version's format, so an output is edited as text."""

    class Meta:
        model = Example
        fields = ["notes"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.format = self.instance.version.format
        for key in formats.REQUIRED[self.format] + formats.OPTIONAL.get(self.format, ()):
            value = self.instance.fields.get(key, "")
            if key == "messages":
                value = json.dumps(value, indent=2, ensure_ascii=False)
            self.fields[key] = forms.CharField(
                initial=value,
                required=key != "input",
                widget=forms.Textarea(attrs={"rows": 4}),
                strip=False,
            )

    def edited_fields(self) -> dict:
        out = {}
        for key in formats.REQUIRED[self.format] + formats.OPTIONAL.get(self.format, ()):
            value = self.cleaned_data.get(key, "")
            if key == "messages":
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise forms.ValidationError({"messages": f"Invalid JSON: {exc.msg}"}) from None
            out[key] = value
        return out

    def clean(self):
        cleaned = super().clean()
        errors = formats.check(
            self.format, self.edited_fields(), 0, self.instance.version.dataset.labels
        )
        for error in errors:
            self.add_error(error.field if error.field in self.fields else None, error.message)
        return cleaned


@admin.register(Example)
class ExampleAdmin(TeamScopedAdmin):
    form = ExampleForm
    action_form = ExampleActionForm
    list_display = [
        "position",
        "version",
        "split",
        "status_badge",
        "preview",
        "annotator",
        "flag_reason",
    ]
    list_filter = [
        "status",
        "split",
        LabelFilter,
        ("annotator", ScopedRelatedFilter),
        ("version", ScopedRelatedFilter),
    ]
    search_fields = ["fields", "notes"]
    list_select_related = ["version__dataset", "annotator"]
    readonly_fields = [
        "version",
        "position",
        "source_line",
        "split",
        "status",
        "annotator",
        "reviewed_by",
        "flag_reason",
    ]
    actions = ["approve", "reject", "flag", "reopen", "assign"]
    list_per_page = 50

    def has_add_permission(self, request):
        return False

    def format_keys(self, obj) -> list[str]:
        if obj is None:
            return []
        fmt = obj.version.format
        return [*formats.REQUIRED[fmt], *formats.OPTIONAL.get(fmt, ())]

    def get_fields(self, request, obj=None):
        # The format's fields are added by ExampleForm per example; listed here, they are
        # rendered (the admin draws only the fields its fieldsets name).
        return [*self.format_keys(obj), "notes", *self.get_readonly_fields(request, obj)]

    def get_form(self, request, obj=None, change=False, **kwargs):
        # The model form is built on its one model field; the format's fields are the form's.
        kwargs["fields"] = ["notes"]
        return super().get_form(request, obj, change, **kwargs)

    def annotators(self, request) -> QuerySet:
        users = get_user_model().objects.filter(is_active=True)
        return scoped(users, request.user).order_by("username")

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        form = getattr(response, "context_data", {}).get("action_form")
        if form is not None:
            form.fields["annotator"].widget.choices = [
                ("", "---------"),
                *self.annotators(request).values_list("pk", "username"),
            ]
        return response

    def has_change_permission(self, request, obj=None):
        return obj is None or obj.version.is_draft

    @admin.display(description="status")
    def status_badge(self, obj):
        return obj.status

    @admin.display(description="example")
    def preview(self, obj):
        prompt, reference = formats.prompt_and_reference(obj.version.format, obj.fields)
        return format_html("{}<br><b>→</b> {}", prompt[:120], reference[:160])

    def save_model(self, request, obj, form, change):
        self.run(
            request,
            annotation.example_edit,
            example=obj,
            fields=form.edited_fields(),
            notes=form.cleaned_data.get("notes"),
        )

    def _set_status(self, request, queryset, status):
        reason = request.POST.get("reason", "")
        n = self.run(
            request, annotation.examples_set_status, examples=queryset, status=status, reason=reason
        )
        if n is not None:
            self.message_user(request, f"{n} examples {status}")

    @admin.action(description="Approve selected examples (reviewer)")
    def approve(self, request, queryset):
        self._set_status(request, queryset, Example.Status.APPROVED)

    @admin.action(description="Reject selected examples (reviewer)")
    def reject(self, request, queryset):
        self._set_status(request, queryset, Example.Status.REJECTED)

    @admin.action(description="Flag selected examples (give a reason)")
    def flag(self, request, queryset):
        self._set_status(request, queryset, Example.Status.FLAGGED)

    @admin.action(description="Reopen selected examples (pending)")
    def reopen(self, request, queryset):
        self._set_status(request, queryset, Example.Status.PENDING)

    @admin.action(description="Assign selected examples to the chosen annotator")
    def assign(self, request, queryset):
        annotator_id = request.POST.get("annotator", "")
        annotator = (
            self.annotators(request).filter(pk=annotator_id).first()
            if annotator_id.isdigit()
            else None
        )
        if annotator is None:
            self.message_user(request, "Choose an annotator of your team", messages.ERROR)
            return
        n = self.run(request, annotation.examples_assign, examples=queryset, annotator=annotator)
        if n is not None:
            self.message_user(request, f"{n} examples assigned to {annotator}")
