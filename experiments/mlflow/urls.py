"""/mlflow: the MLflow-compatible REST subset (experiments/mlflow/views.py), for the token
user's only team, and /mlflow/teams/<id>/ for one team of several."""

from django.urls import include, path, re_path

from experiments.mlflow import logged_models as lm
from experiments.mlflow import views as m


def logged_model_routes(api: str) -> list:
    """Family B's calls (experiments.mlflow.logged_models), under /api and /ajax-api."""
    model = f"{api}logged-models/<str:model_id>"
    return [
        path(f"{api}runs/log-inputs", lm.log_inputs),
        path(f"{api}runs/outputs", lm.log_outputs),
        path(f"{api}experiments/search-datasets", lm.search_datasets),
        path(f"{api}logged-models", lm.model_create),
        path(f"{api}logged-models/search", lm.model_search_view),
        path(model, lm.model),
        path(f"{model}/params", lm.model_params),
        path(f"{model}/tags", lm.model_tags),
        path(f"{model}/tags/<str:tag_key>", lm.model_tag_delete),
        path(f"{model}/artifacts/directories", lm.model_artifact_list),
        path(f"{model}/artifacts/files", lm.model_artifact_get),
    ]


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
    *logged_model_routes("api/2.0/mlflow/"),
    *logged_model_routes("ajax-api/2.0/mlflow/"),
    path("ajax-api/2.0/mlflow/upload-artifact", lm.upload_artifact),
    path("get-artifact", lm.get_artifact),
    path("api/2.0/mlflow-artifacts/artifacts", m.artifact_list),
    # Named for its upload limit (finetune_hub.uploads.DeclaredLengthMiddleware).
    path("api/2.0/mlflow-artifacts/artifacts/<path:path>", m.artifact, name="mlflow_artifact"),
    re_path(r"^(?P<rest>.*)$", m.not_supported),
]

urlpatterns = [
    path("teams/<id:team_id>/", include(routes)),
    *routes,
]
