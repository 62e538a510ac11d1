"""What an evaluation scores: a training run's output, a registered model version, or a bare
base model. The one place a subject is parsed (from the API's dict or the dashboard form's
value), resolved within a team, turned into the query for its evaluations, and labelled."""

from dataclasses import dataclass, replace

from django.db import models
from django.db.models import Q

from experiments.models import TrainingRun
from finetune_hub.bounds import is_id
from finetune_hub.errors import invalid
from inference.base_models import load_config


class Kind(models.TextChoices):
    RUN = "run"
    MODEL_VERSION = "model_version"
    BASE_MODEL = "base_model"


# The form's "run:12", "version:3", "base:embedded"; the kinds' own names work too.
FORM_PREFIXES = {"run": Kind.RUN, "version": Kind.MODEL_VERSION, "base": Kind.BASE_MODEL} | {
    kind.value: kind for kind in Kind
}


def _versions():
    # registry sits above evaluation: its table is reached at call time, not import time.
    from registry.models import ModelVersion

    return ModelVersion.objects


@dataclass(frozen=True)
class Subject:
    """The subject columns of an evaluation. `base_model` is the model it builds on: for a
    bare base model the reference as given; for a run or version it is known once the subject
    is resolved for a team (empty before)."""

    kind: Kind
    run: int | None = None
    version: int | None = None
    base_model: str = ""

    @classmethod
    def from_api(cls, raw) -> "Subject":
        """{"run": id}, {"model_version": id} or {"base_model": text}; a Subject passes through."""
        if isinstance(raw, Subject):
            return raw
        kinds = [k for k in Kind if isinstance(raw, dict) and raw.get(k) is not None]
        if len(kinds) != 1:
            raise invalid(
                "subject needs exactly one of run, model_version or base_model", field="subject"
            )
        kind, value = kinds[0], raw[kinds[0]]
        if kind == Kind.BASE_MODEL:
            if not isinstance(value, str):
                raise invalid(f"subject.{kind} must be text", field=f"subject.{kind}")
            return cls(kind, base_model=value)
        if not is_id(value):
            raise invalid(f"subject.{kind} must be an id", field=f"subject.{kind}")
        return cls(kind, **{"run" if kind == Kind.RUN else "version": value})

    @classmethod
    def from_form(cls, value: str) -> "Subject":
        """The form's value, "run:12", "version:3" or "base:<model>", read as the API's
        dict would be, so that both inputs are refused with the same errors."""
        prefix, _, ref = value.partition(":")
        kind = FORM_PREFIXES.get(prefix)
        if kind is None:
            return cls.from_api({})
        if kind != Kind.BASE_MODEL and ref.isascii() and ref.isdigit():
            return cls.from_api({kind: int(ref)})
        return cls.from_api({kind: ref})

    @classmethod
    def of(cls, evaluation) -> "Subject":
        return cls(
            Kind(evaluation.subject_kind),
            run=evaluation.training_run_id,
            version=evaluation.model_version_id,
            base_model=evaluation.base_model,
        )

    @classmethod
    def of_version(cls, version) -> "Subject":
        return cls(Kind.MODEL_VERSION, version=version.pk, base_model=version.base_model)

    def for_team(self, team) -> "Subject":
        """The subject as an evaluation of `team` may name it: a run or version of another
        team is not found (its existence is not revealed), a run must have trained an
        output, a base model must be one that can be read."""
        if self.kind == Kind.RUN:
            run = (
                TrainingRun.objects.filter(pk=self.run, experiment__team=team)
                .select_related("experiment")
                .first()
            )
            if run is None:
                raise invalid("No such run in this team", field="subject.run")
            run.model_require()
            return replace(self, base_model=run.model_base)
        if self.kind == Kind.MODEL_VERSION:
            version = (
                _versions()
                .filter(pk=self.version, registered_model__team=team)
                .select_related("source_run__experiment")
                .first()
            )
            if version is None:
                raise invalid("No such model version in this team", field="subject.model_version")
            if not version.servable:  # registered through MLflow from a source elsewhere
                raise invalid(
                    f"{version} has no files here: not servable", field="subject.model_version"
                )
            return replace(self, base_model=version.base_model)
        load_config(self.base_model)  # refuses a model that cannot be found
        return self

    @property
    def fields(self) -> dict:
        """The evaluation's subject columns."""
        return {
            "subject_kind": self.kind,
            "training_run_id": self.run,
            "model_version_id": self.version,
            "base_model": self.base_model,
        }

    def evaluations(self) -> Q:
        """The evaluations that score this subject's weights. A version's count whether they
        name the version or its source run (the same weights)."""
        if self.kind == Kind.RUN:
            return Q(training_run_id=self.run)
        if self.kind == Kind.MODEL_VERSION:
            source = _versions().filter(pk=self.version).values("source_run")
            return Q(model_version_id=self.version) | Q(training_run__in=source)
        return Q(subject_kind=Kind.BASE_MODEL, base_model=self.base_model)

    @property
    def form_value(self) -> str:
        """The value the dashboard's forms post for this subject (from_form reads it)."""
        if self.kind == Kind.RUN:
            return f"run:{self.run}"
        if self.kind == Kind.MODEL_VERSION:
            return f"version:{self.version}"
        return f"base:{self.base_model}"

    @property
    def label(self) -> str:
        if self.kind == Kind.RUN:
            return f"run #{self.run}"
        if self.kind == Kind.MODEL_VERSION:
            return f"model version {self.version}"
        return f"base model {self.base_model}"

    def output_path(self) -> str | None:
        """The trained weights under the artifact root (a version's are its source run's);
        None for a bare base model."""
        if self.kind == Kind.RUN:
            return (
                TrainingRun.objects.only("output_path", "output_files").get(pk=self.run).model_path
            )
        if self.kind == Kind.MODEL_VERSION:
            return _versions().values_list("artifact_path", flat=True).get(pk=self.version)
        return None
