from django.urls import path

from evaluation import views

urlpatterns = [
    path("evaluations/", views.evaluation_list, name="evaluation_list"),
    path("evaluations/new/", views.evaluation_new, name="evaluation_new"),
    path("evaluations/general-set/<id:team_id>/", views.general_set_add, name="general_set_add"),
    path("evaluations/<id:evaluation_id>/", views.evaluation_detail, name="evaluation_detail"),
    path("evaluations/<id:evaluation_id>/retry/", views.evaluation_retry, name="evaluation_retry"),
    path("comparisons/new/", views.comparison_new, name="comparison_new"),
    path("comparisons/<id:comparison_id>/", views.comparison_detail, name="comparison_detail"),
    path(
        "comparisons/<id:comparison_id>/review/", views.comparison_review, name="comparison_review"
    ),
    path(
        "comparisons/<id:comparison_id>/export/", views.comparison_export, name="comparison_export"
    ),
]
