from django.urls import path

from datasets_app import views

urlpatterns = [
    path("datasets/", views.dataset_list, name="dataset_list"),
    path("datasets/new/", views.dataset_new, name="dataset_new"),
    path("datasets/<id:dataset_id>/", views.dataset_detail, name="dataset_detail"),
    path("datasets/<id:dataset_id>/upload/", views.version_upload, name="version_upload"),
    path("datasets/<id:dataset_id>/diff/", views.version_diff, name="version_diff"),
    path("datasets/<id:dataset_id>/v/<id:number>/", views.version_detail, name="version_detail"),
    path("datasets/<id:dataset_id>/v/<id:number>/annotate/", views.draft_start, name="draft_start"),
]
