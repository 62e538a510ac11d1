"""MLflow's model-registry routes, included by experiments.mlflow.urls (by name, so the
tracking adapter does not import the registry, a higher layer)."""

from django.urls import path, re_path

from registry.mlflow import views as v

API = "api/2.0/mlflow/"
urlpatterns = [
    path(f"{API}registered-models/create", v.model_create),
    path(f"{API}registered-models/get", v.model_get),
    path(f"{API}registered-models/rename", v.model_rename),
    path(f"{API}registered-models/update", v.model_update),
    path(f"{API}registered-models/delete", v.model_delete),
    path(f"{API}registered-models/search", v.model_search),
    path(f"{API}registered-models/get-latest-versions", v.latest_versions),
    path(f"{API}registered-models/set-tag", v.model_tag_set),
    path(f"{API}registered-models/delete-tag", v.model_tag_delete),
    path(f"{API}registered-models/alias", v.alias),
    path(f"{API}model-versions/create", v.version_create),
    path(f"{API}model-versions/get", v.version_get),
    path(f"{API}model-versions/update", v.version_update),
    path(f"{API}model-versions/delete", v.version_delete),
    path(f"{API}model-versions/search", v.version_search),
    path(f"{API}model-versions/set-tag", v.version_tag_set),
    path(f"{API}model-versions/delete-tag", v.version_tag_delete),
    path(f"{API}model-versions/get-download-uri", v.version_download_uri),
    path(f"{API}model-versions/transition-stage", v.version_stage),
    # MLflow's UI download, at the tracking URI's root; MLflow's clients also write it with
    # '//' after the tracking URI.
    path("model-versions/get-artifact", v.version_artifact),
    re_path(r"^[/]model-versions/get-artifact$", v.version_artifact, name="mlflow_version_file"),
]
