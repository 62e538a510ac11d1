"""Promotion policy per registered model, and the check of a version against it. Each
failed rule is reported by name, so a refused promotion (409) says what to fix."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from datasets_app.models import DatasetVersion
from evaluation.general.forgetting import base_of, paired
from evaluation.general.generate import SPLIT
from evaluation.general.services import METRIC as GENERAL_METRIC
from evaluation.general.services import general_version
from evaluation.models import Comparison, EvaluationRun
from evaluation.subjects import Subject
from finetune_hub.errors import FieldError, ServiceError, from_pydantic, invalid


class Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self):
        if self.min is None and self.max is None:
            raise ValueError(f"threshold on {self.metric} needs min or max")
        return self


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gated_aliases: list[str] = Field(default_factory=lambda: ["production"])
    evaluation_dataset_version: int | None = None
    evaluation_split: Literal["train", "eval", "test"] = "eval"
    thresholds: list[Threshold] = Field(default_factory=list)
    require_ab_win: bool = False
    ab_metric: str = "chrf"
    require_approval: bool = False
    two_person_rule: bool = False
    # The forgetting check: the version's general-set score must not be significantly below
    # its base model's (paired bootstrap, 95%), on chrF unless named: the embedded base model
    # scores 0 by exact match on the set, where no drop can be seen.
    require_no_general_drop: bool = False
    general_metric: str = GENERAL_METRIC

    @model_validator(mode="after")
    def _evaluation_named(self):
        if (self.thresholds or self.require_ab_win) and self.evaluation_dataset_version is None:
            raise ValueError("thresholds and the A/B rule need evaluation_dataset_version")
        return self


def parse(raw: dict | None) -> Policy:
    try:
        return Policy.model_validate(raw or {})
    except ValidationError as exc:
        raise ServiceError(
            "Invalid policy", status=422, errors=from_pydantic(exc, under="policy")
        ) from None


def parse_for(raw: dict | None, *, team) -> Policy:
    """A policy to store on a model of `team`: the data it judges by must be the team's own
    (a policy naming another team's dataset version by id was accepted)."""
    policy = parse(raw)
    data = policy.evaluation_dataset_version
    if data is not None and not DatasetVersion.objects.filter(pk=data, dataset__team=team).exists():
        raise invalid(
            "No such dataset version in your teams", field="policy.evaluation_dataset_version"
        )
    return policy


def _evaluations_of(version, policy: Policy):
    """The version's finished evaluations on the policy's data, whether they name the
    version or its source run."""
    return EvaluationRun.objects.filter(
        Subject.of_version(version).evaluations(),
        status=EvaluationRun.Status.SUCCEEDED,
        dataset_version_id=policy.evaluation_dataset_version,
        split=policy.evaluation_split,
    )


def latest_evaluation(version, policy: Policy) -> EvaluationRun | None:
    return _evaluations_of(version, policy).order_by("-finished_at").first()


def ab_evidence(version, holder, policy: Policy) -> dict | None:
    """The newest automatic comparison in which the version beat the holder significantly
    on the policy's metric, or None. Reads each comparison's stored result."""
    from evaluation.comparisons import comparison_score

    comparisons = Comparison.objects.filter(
        dataset_version_id=policy.evaluation_dataset_version,
        split=policy.evaluation_split,
        team=version.registered_model.team,
    ).order_by("-created_at")
    versions_own = set(_evaluations_of(version, policy).values_list("pk", flat=True))
    holders_own = set(_evaluations_of(holder, policy).values_list("pk", flat=True))
    for comparison in comparisons[:20]:
        subjects = dict(comparison.subjects.values_list("index", "evaluation_id"))
        mine = [i for i, e in subjects.items() if e in versions_own]
        theirs = [i for i, e in subjects.items() if e in holders_own]
        results = comparison_score(comparison=comparison) if mine and theirs else None
        if results is None:  # not between these two, or an evaluation is still waiting
            continue
        for test in results["tests"]:
            if test["metric"] != policy.ab_metric or not test["significant"]:
                continue
            # auto tests compare subject i against subject 0
            if (test["subject"] in mine and 0 in theirs and test["subject_better"]) or (
                test["subject"] in theirs and 0 in mine and not test["subject_better"]
            ):
                return {"comparison": comparison.pk, **test}
    return None


def check(version, alias: str, holder) -> tuple[list[FieldError], dict]:
    """(failed rules, evidence) for moving `alias` to `version` under the model's policy."""
    policy = parse(version.registered_model.policy)
    if alias not in policy.gated_aliases:
        return [], {"policy": "not gated"}
    failures, evidence = [], {"policy": policy.model_dump()}
    if policy.thresholds:
        evaluation = latest_evaluation(version, policy)
        if evaluation is None:
            failures.append(
                FieldError(
                    field="thresholds",
                    message=(
                        f"No finished evaluation of {version} on dataset version "
                        f"{policy.evaluation_dataset_version} / {policy.evaluation_split}"
                    ),
                )
            )
        else:
            evidence["evaluation"] = {"id": evaluation.pk, "results": evaluation.results}
            failures += _threshold_failures(policy, evaluation)
    if policy.require_ab_win and holder is not None and holder != version:
        found = ab_evidence(version, holder, policy)
        if found is None:
            failures.append(
                FieldError(
                    field="require_ab_win",
                    message=(
                        f"No comparison shows {version} significantly better than the holder "
                        f"{holder} on {policy.ab_metric}"
                    ),
                )
            )
        else:
            evidence["comparison"] = found
    if policy.require_no_general_drop:
        failure, found = _general_drop(version, policy)
        failures += failure
        if found is not None:
            evidence["general"] = found
    return failures, evidence


def _general_drop(version, policy: Policy) -> tuple[list[FieldError], dict | None]:
    """The forgetting check's general-set row of the version against its base model: a
    failure when an evaluation is missing or the version is significantly worse."""
    team = version.registered_model.team
    general = general_version(team=team)
    if general is None:
        return [
            FieldError(
                field="require_no_general_drop",
                message=f"The general-capability set is not in team {team.name}; add it and "
                f"evaluate {version} and its base model on it",
            )
        ], None
    subject = Subject.of_version(version)
    row = paired(team, subject, base_of(subject), general, SPLIT, policy.general_metric)
    if row["test"] is None:
        missing = " and ".join(s.label for s in row["missing"]) or f"{version}"
        return [
            FieldError(
                field="require_no_general_drop",
                message=f"No finished evaluation of {missing} on {general} / {SPLIT} "
                f"with {policy.general_metric}",
            )
        ], None
    evidence = {
        "dataset_version": general.pk,
        "evaluation": row["subject_evaluation"].pk,
        "base_evaluation": row["base_evaluation"].pk,
        "metric": row["metric"],
        "score": row["subject_score"],
        "base_score": row["base_score"],
        **row["test"],
    }
    if not row["drop"]:
        return [], evidence
    test = row["test"]
    return [
        FieldError(
            field="require_no_general_drop",
            message=f"{version} scores {policy.general_metric} {row['subject_score']:.4g} on "
            f"the general set against {row['base_score']:.4g} for its base model: "
            f"significantly worse by {abs(test['difference']):.4g} (difference "
            f"{test['difference']:.4g}, 95% interval {test['ci_low']:.4g} to "
            f"{test['ci_high']:.4g}, p {test['p_value']:.3g})",
        )
    ], evidence


def _threshold_failures(policy: Policy, evaluation: EvaluationRun) -> list[FieldError]:
    failures = []
    for rule in policy.thresholds:
        result = evaluation.results.get(rule.metric)
        if result is None:
            failures.append(
                FieldError(
                    field=f"thresholds.{rule.metric}",
                    message=f"evaluation {evaluation.pk} has no {rule.metric}",
                )
            )
            continue
        score = result["score"]
        if rule.min is not None and score < rule.min:
            failures.append(
                FieldError(
                    field=f"thresholds.{rule.metric}",
                    message=f"{rule.metric} {score:.4g} is below {rule.min}",
                )
            )
        if rule.max is not None and score > rule.max:
            failures.append(
                FieldError(
                    field=f"thresholds.{rule.metric}",
                    message=f"{rule.metric} {score:.4g} is above {rule.max}",
                )
            )
    return failures
