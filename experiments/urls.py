from django.urls import path

from experiments import views as training

urlpatterns = [
    path("experiments/", training.experiment_list, name="experiment_list"),
    path("experiments/new/", training.experiment_new, name="experiment_new"),
    path("experiments/<id:experiment_id>/", training.experiment_detail, name="experiment_detail"),
    path("experiments/<id:experiment_id>/runs/", training.run_queue_new, name="run_queue_new"),
    path(
        "experiments/<id:experiment_id>/restore/",
        training.experiment_restore,
        name="experiment_restore",
    ),
    path("runs/", training.run_queue, name="run_queue"),
    path("runs/compare/", training.run_compare, name="run_compare"),
    path("runs/table/", training.run_table, name="run_table"),
    path("runs/<id:run_id>/", training.run_detail, name="run_detail"),
    path("runs/<id:run_id>/<str:action>/", training.run_action, name="run_action"),
    path("logged-models/<str:model_id>/", training.logged_model_detail, name="logged_model_detail"),
]
