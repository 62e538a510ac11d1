from django.urls import path

from experiments import views
from experiments.training import views as training

urlpatterns = [
    path("datasets/", views.dataset_list, name="dataset_list"),
    path("datasets/new/", views.dataset_new, name="dataset_new"),
    path("datasets/<int:dataset_id>/", views.dataset_detail, name="dataset_detail"),
    path("datasets/<int:dataset_id>/upload/", views.version_upload, name="version_upload"),
    path("datasets/<int:dataset_id>/diff/", views.version_diff, name="version_diff"),
    path("datasets/<int:dataset_id>/v/<int:number>/", views.version_detail, name="version_detail"),
    path(
        "datasets/<int:dataset_id>/v/<int:number>/annotate/", views.draft_start, name="draft_start"
    ),
    path("experiments/", training.experiment_list, name="experiment_list"),
    path("experiments/new/", training.experiment_new, name="experiment_new"),
    path("experiments/<int:experiment_id>/", training.experiment_detail, name="experiment_detail"),
    path("experiments/<int:experiment_id>/runs/", training.run_queue_new, name="run_queue_new"),
    path("runs/", training.run_queue, name="run_queue"),
    path("runs/compare/", training.run_compare, name="run_compare"),
    path("runs/<int:run_id>/", training.run_detail, name="run_detail"),
    path("runs/<int:run_id>/<str:action>/", training.run_action, name="run_action"),
]
