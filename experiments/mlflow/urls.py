"""/mlflow: the MLflow-compatible REST subset (experiments/mlflow/views.py), for the token
user's only team, and /mlflow/teams/<id>/ for one team of several."""

from django.urls import include, path, re_path

from experiments.mlflow import views as m

API = "api/2.0/mlflow/"
routes = [
    path(f"{API}experiments/get-by-name", m.experiment_get_by_name),
    path(f"{API}experiments/get", m.experiment_get),
    path(f"{API}experiments/create", m.experiment_create),
    path(f"{API}experiments/search", m.experiment_search),
    path(f"{API}runs/create", m.run_create),
    path(f"{API}runs/update", m.run_update),
    path(f"{API}runs/get", m.run_get),
    path(f"{API}runs/search", m.run_search),
    path(f"{API}runs/log-batch", m.log_batch),
    path(f"{API}runs/log-metric", m.log_metric),
    path(f"{API}runs/log-parameter", m.log_parameter),
    path(f"{API}runs/set-tag", m.set_tag),
    path(f"{API}metrics/get-history", m.metric_history),
    path("api/2.0/mlflow-artifacts/artifacts", m.artifact_list),
    # Named for its upload limit (finetune_hub.uploads.DeclaredLengthMiddleware).
    path("api/2.0/mlflow-artifacts/artifacts/<path:path>", m.artifact, name="mlflow_artifact"),
    # The model registry (registered-models/*, model-versions/*): registry.mlflow.
    path("", include("registry.mlflow.urls")),
    re_path(r"^(?P<rest>.*)$", m.not_supported),
]

urlpatterns = [
    path("teams/<id:team_id>/", include(routes)),
    *routes,
]
