"""The model registry over MLflow's REST API (registered-models/*, model-versions/*,
aliases), onto the registry's own tables and services; mounted by experiments.mlflow.urls."""
