from django.contrib import admin
from django.urls import include, path

from finetune_hub import views
from finetune_hub.api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("teams/<int:team_id>/", views.team_detail, name="team_detail"),
    path("teams/new/", views.team_new, name="team_new"),
    path("tokens/", views.tokens, name="tokens"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("", include("experiments.urls")),
    path("", include("evaluation.urls")),
    path("", include("registry.urls")),
]
