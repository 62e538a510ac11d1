"""/mlflow: the MLflow-compatible REST subset (experiments/mlflow/views.py), for the token
user's only team, and /mlflow/teams/<id>/ for one team of several."""

from django.urls import include, path, re_path

from experiments.mlflow import lifecycle_views as lv
from experiments.mlflow import logged_models as lm
from experiments.mlflow import views as m

API = "api/2.0/mlflow/"
MODEL = f"{API}logged-models/<str:model_id>"
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
    path(f"{API}runs/log-inputs", lm.log_inputs),
    path(f"{API}runs/outputs", lm.log_outputs),
    path(f"{API}experiments/search-datasets", lm.search_datasets),
    path(f"{API}logged-models", lm.model_create),
    path(f"{API}logged-models/search", lm.model_search_view),
    path(MODEL, lm.model),
    path(f"{MODEL}/params", lm.model_params),
    path(f"{MODEL}/tags", lm.model_tags),
    path(f"{MODEL}/tags/<str:tag_key>", lm.model_tag_delete),
    path(f"{MODEL}/artifacts/directories", lm.model_artifact_list),
    path(f"{MODEL}/artifacts/files", lm.model_artifact_get),
    path("ajax-api/2.0/mlflow/upload-artifact", lm.upload_artifact),
    path("get-artifact", lm.get_artifact),
    path(f"{API}experiments/delete", lv.experiment_delete),
    path(f"{API}experiments/restore", lv.experiment_restore),
    path(f"{API}experiments/update", lv.experiment_update),
    path(f"{API}experiments/set-experiment-tag", lv.experiment_tag_set),
    path(f"{API}experiments/delete-experiment-tag", lv.experiment_tag_delete),
    path(f"{API}runs/delete", lv.run_delete),
    path(f"{API}runs/restore", lv.run_restore),
    path(f"{API}runs/delete-tag", lv.run_tag_delete),
    path(f"{API}metrics/get-history-bulk", lv.metric_history_bulk),
    path(f"{API}metrics/get-history-bulk-interval", lv.metric_history_bulk_interval),
    path(f"{API}artifacts/list", m.run_artifact_list),
    path("api/2.0/mlflow-artifacts/artifacts", m.artifact_list),
    # Named for its upload limit (finetune_hub.uploads.DeclaredLengthMiddleware).
    path("api/2.0/mlflow-artifacts/artifacts/<path:path>", m.artifact, name="mlflow_artifact"),
    # The model registry (registered-models/*, model-versions/*): registry.mlflow, included
    # by name (the registry is a higher layer than this adapter).
    path("", include("registry.mlflow.urls")),
]
# MLflow's UI calls every /api/2.0/mlflow route under /ajax-api/2.0/mlflow as well.
routes += [
    path(f"ajax-{route.pattern}", route.callback)
    for route in list(routes)
    if str(route.pattern).startswith(API)
]
routes.append(path("ajax-", include("registry.mlflow.urls")))
routes.append(re_path(r"^(?P<rest>.*)$", m.not_supported))

urlpatterns = [
    path("teams/<id:team_id>/", include(routes)),
    *routes,
]
