from django.urls import path

from registry import views

urlpatterns = [
    path("registry/", views.model_list, name="model_list"),
    path("registry/<slug:name>/", views.model_detail, name="model_detail"),
    path("registry/<slug:name>/v/<id:number>/", views.version_detail, name="registry_version"),
    path(
        "registry/<slug:name>/v/<id:number>/export/<str:kind>/",
        views.version_export,
        name="registry_export",
    ),
    *(
        path(f"registry/<slug:name>/{action}/", view, name=f"model_{action}")
        for action, view in views.ACTIONS.items()
    ),
]
