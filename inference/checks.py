"""Start-up checks of the operator's model settings."""

from pathlib import Path

from django.conf import settings
from django.core.checks import Error, register


@register()
def model_roots_exclude_artifacts(app_configs=None, **kwargs):
    """A model root that holds the artifact root (or lies inside it) would let any team load
    another team's trained weights by path: refuse to start with one."""
    from inference.base_models import model_roots

    artifacts = Path(settings.ARTIFACT_ROOT).resolve()
    errors = []
    for root in model_roots():
        root = Path(root).resolve()
        if root == artifacts or root in artifacts.parents or artifacts in root.parents:
            errors.append(
                Error(
                    f"The model folder {root} overlaps ARTIFACT_ROOT {artifacts}",
                    hint="BASE_MODEL_DIRS and MODEL_CACHE_DIR must lie outside ARTIFACT_ROOT.",
                    id="finetune_hub.E001",
                )
            )
    return errors
