from django.urls import path, register_converter

from registry import views


class ModelNameConverter:
    """A registered model's name: free text (MLflow's "Test Model 1") without '/' or ':'
    (registry.models), so one URL segment."""

    regex = "[^/]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value) -> str:
        return str(value)


register_converter(ModelNameConverter, "model_name")

urlpatterns = [
    path("registry/", views.model_list, name="model_list"),
    path("registry/<model_name:name>/", views.model_detail, name="model_detail"),
    path(
        "registry/<model_name:name>/v/<id:number>/",
        views.version_detail,
        name="registry_version",
    ),
    path(
        "registry/<model_name:name>/v/<id:number>/export/<str:kind>/",
        views.version_export,
        name="registry_export",
    ),
    *(
        path(f"registry/<model_name:name>/{action}/", view, name=f"model_{action}")
        for action, view in views.ACTIONS.items()
    ),
]
