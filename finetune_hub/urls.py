from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from finetune_hub import views
from finetune_hub.api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("teams/<id:team_id>/", views.team_detail, name="team_detail"),
    path("teams/new/", views.team_new, name="team_new"),
    path("teams/<int:team_id>/leave/", views.team_leave, name="team_leave"),
    path("teams/<int:team_id>/default/", views.team_default, name="team_default"),
    path(
        "teams/<int:team_id>/invitations/<int:invitation_id>/withdraw/",
        views.team_invitation_withdraw,
        name="team_invitation_withdraw",
    ),
    path("invitations/", views.invitations, name="invitations"),
    path(
        "invitations/<int:invitation_id>/accept/",
        views.invitation_accept_view,
        name="invitation_accept",
    ),
    path(
        "invitations/<int:invitation_id>/decline/",
        views.invitation_decline_view,
        name="invitation_decline",
    ),
    path("tokens/", views.tokens, name="tokens"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    # Browsers ask for /favicon.ico on pages that link no icon (the admin, the API docs).
    path("favicon.ico", RedirectView.as_view(url=static("finetune_hub/favicon.svg"))),
    path("api/", api.urls),
    # The MLflow-compatible tracking API: MLFLOW_TRACKING_URI=http://<host>/mlflow
    path("mlflow/", include("experiments.mlflow.urls")),
    path("", include("datasets_app.urls")),
    path("", include("experiments.urls")),
    path("", include("evaluation.urls")),
    path("", include("registry.urls")),
]

# JSON under /api/, Django's pages elsewhere (DEBUG off; with DEBUG on Django shows its own).
handler400 = "finetune_hub.api_errors.bad_request"
handler403 = "finetune_hub.api_errors.permission_denied"
handler404 = "finetune_hub.api_errors.page_not_found"
handler500 = "finetune_hub.api_errors.server_error"
