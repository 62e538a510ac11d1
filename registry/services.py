"""Registry writes: models, versions (numbered under a row lock), aliases moved only through
append-only events (promote through the policy, approve, roll back), and deletion rules."""

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from experiments.models import TrainingRun
from finetune_hub.errors import Conflict, PolicyRefused, full_clean, invalid
from finetune_hub.model_files import is_adapter
from finetune_hub.models import Role, Team
from finetune_hub.selectors import membership_require
from finetune_hub.storage import artifact_path
from registry import policy as policies
from registry.export import safetensors_only
from registry.models import (
    Alias,
    AliasEvent,
    Feedback,
    ModelVersion,
    PromotionRequest,
    RegisteredModel,
    ServedGeneration,
)


@transaction.atomic
def model_create(
    *, team: Team, name: str, by, description: str = "", policy: dict | None = None
) -> RegisteredModel:
    membership_require(user=by, team=team, role=Role.MEMBER)
    model = RegisteredModel(
        team=team,
        name=(name or "").strip(),
        description=description,
        policy=policies.parse_for(policy, team=team).model_dump(),
        created_by=by,
    )
    full_clean(model, exclude=["team", "created_by"], validate_unique=False)
    try:
        with transaction.atomic():
            model.save()
    except IntegrityError:
        raise Conflict(f"Team {team.name} has a model named {model.name!r}") from None
    return model


@transaction.atomic
def policy_set(*, model: RegisteredModel, policy: dict, by) -> RegisteredModel:
    membership_require(user=by, team=model.team, role=Role.APPROVER)
    model.policy = policies.parse_for(policy, team=model.team).model_dump()
    model.save(update_fields=["policy"])
    return model


@transaction.atomic
def schedule_set(*, model: RegisteredModel, every_days: int | None, by) -> RegisteredModel:
    membership_require(user=by, team=model.team, role=Role.APPROVER)
    if every_days is not None and not 1 <= every_days <= 365:
        raise invalid(
            "every_days is between 1 and 365, or null to stop", field="every_days", status=422
        )
    model.retrain_every_days = every_days
    model.save(update_fields=["retrain_every_days"])
    return model


def version_register(
    *, model: RegisteredModel, run: TrainingRun, by, description: str = ""
) -> ModelVersion:
    """The next number for this model; concurrent registrations queue on the model's row
    lock, and the unique constraint is the backstop."""
    membership_require(user=by, team=model.team, role=Role.MEMBER)
    if run.experiment.team_id != model.team_id:
        raise invalid("No such run in this team", field="run")
    run.model_require()
    folder = safetensors_only(artifact_path(run.model_path))
    with transaction.atomic():
        RegisteredModel.objects.select_for_update().get(pk=model.pk)
        number = (model.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        return ModelVersion.objects.create(
            registered_model=model,
            number=number,
            source_run=run,
            dataset_version=run.experiment.dataset_version,
            base_model=run.model_base,
            base_model_info=run.base_model_info,
            kind="adapter" if is_adapter(folder) else "full",
            artifact_path=run.model_path,
            artifacts=run.model_files,
            description=description,
            created_by=by,
        )


def _holder(model: RegisteredModel, alias: str) -> ModelVersion | None:
    current = (
        Alias.objects.filter(registered_model=model, name=alias).select_related("version").first()
    )
    return current.version if current else None


def _locked(model: RegisteredModel, alias: str) -> tuple[AliasEvent | None, ModelVersion | None]:
    """Takes the model's row lock (inside the caller's transaction) and reads the alias's last
    event and holder under it. Every decision about a move is made on what this returns: read
    before the lock, two requests at once both saw the old holder, and a double-clicked
    promotion wrote a self-move after which every rollback went nowhere."""
    RegisteredModel.objects.select_for_update().get(pk=model.pk)
    last = (
        AliasEvent.objects.filter(registered_model=model, alias=alias).order_by("-sequence").first()
    )
    return last, _holder(model, alias)


def _refuse_self_move(alias: str, holder: ModelVersion | None, version: ModelVersion) -> None:
    if holder == version:
        raise Conflict(f"{alias} already points at {version}")


def _refuse_second_request(model: RegisteredModel, alias: str, version: ModelVersion) -> None:
    waiting = PromotionRequest.objects.filter(
        registered_model=model, alias=alias, version=version, status=PromotionRequest.Status.PENDING
    ).first()
    if waiting:
        raise Conflict(f"A request to move {alias} to {version} waits for an approver already")


def _move(
    *,
    model: RegisteredModel,
    alias: str,
    version: ModelVersion,
    locked: tuple[AliasEvent | None, ModelVersion | None],
    action: str,
    actor,
    reason: str,
    evidence: dict,
    approved_by=None,
) -> AliasEvent:
    """The one place an alias moves, on the state `_locked` read in the same transaction, so
    the events chain (each from_version is the previous to_version) and none is a self-move."""
    last, holder = locked
    _refuse_self_move(alias, holder, version)
    event = AliasEvent.objects.create(
        registered_model=model,
        alias=alias,
        sequence=(last.sequence + 1) if last else 1,
        action=action,
        from_version=holder,
        to_version=version,
        actor=actor,
        approved_by=approved_by,
        reason=reason,
        evidence=evidence,
    )
    Alias.objects.update_or_create(
        registered_model=model, name=alias, defaults={"version": version}
    )
    return event


def _validate_alias(alias: str) -> str:
    alias = (alias or "").strip().lower()
    if not alias or not alias.replace("-", "").replace("_", "").isalnum() or len(alias) > 50:
        raise invalid("An alias is letters, digits, - and _", field="alias")
    return alias


def _policy_evidence(version: ModelVersion, alias: str, holder: ModelVersion | None) -> dict:
    failures, evidence = policies.check(version, alias, holder)
    if failures:
        raise PolicyRefused(
            f"The policy refuses {version} for {alias}: " + "; ".join(f.message for f in failures),
            errors=failures,
        )
    return evidence


def alias_promote(
    *, model: RegisteredModel, alias: str, version: ModelVersion, by, reason: str
) -> AliasEvent | PromotionRequest:
    """Moves the alias now, or files a request that waits for an approver. Refused with 409
    and every failed rule when the policy says no."""
    membership_require(user=by, team=model.team, role=Role.MEMBER)
    alias = _validate_alias(alias)
    if not (reason or "").strip():
        raise invalid("Say why (reason)", field="reason")
    if version.registered_model_id != model.pk:
        raise invalid("The version belongs to another model", field="version")
    # The policy is checked before the lock (a check may store a comparison's results, which
    # a refusal must not roll back) on the holder read here; under the lock the holder is read
    # again, and checked against once more when another move came in between.
    holder = _holder(model, alias)
    _refuse_self_move(alias, holder, version)
    evidence = _policy_evidence(version, alias, holder)
    with transaction.atomic():
        locked = _locked(model, alias)
        _refuse_self_move(alias, locked[1], version)
        if locked[1] != holder:
            evidence = _policy_evidence(version, alias, locked[1])
        policy = policies.parse(model.policy)
        if alias in policy.gated_aliases and policy.require_approval:
            _refuse_second_request(model, alias, version)
            return PromotionRequest.objects.create(
                registered_model=model,
                alias=alias,
                version=version,
                reason=reason,
                evidence=evidence,
                requested_by=by,
            )
        return _move(
            model=model,
            alias=alias,
            version=version,
            locked=locked,
            action=AliasEvent.Action.PROMOTE,
            actor=by,
            reason=reason,
            evidence=evidence,
        )


@transaction.atomic
def promotion_decide(*, request: PromotionRequest, by, approve: bool) -> PromotionRequest:
    model = request.registered_model
    membership_require(user=by, team=model.team, role=Role.APPROVER)
    request = PromotionRequest.objects.select_for_update().get(pk=request.pk)
    if request.status != PromotionRequest.Status.PENDING:
        raise Conflict(f"The request is {request.status} already")
    if (
        approve
        and policies.parse(model.policy).two_person_rule
        and request.requested_by_id == by.pk
    ):
        raise PolicyRefused(
            "Two-person rule: the requester cannot approve their own request", status=403
        )
    if approve:
        # The evidence may have changed since the request (a new holder): check again.
        locked = _locked(model, request.alias)
        _refuse_self_move(request.alias, locked[1], request.version)
        failures, evidence = policies.check(request.version, request.alias, locked[1])
        if failures:
            raise PolicyRefused(
                "The policy now refuses it: " + "; ".join(f.message for f in failures),
                errors=failures,
            )
        _move(
            model=model,
            alias=request.alias,
            version=request.version,
            locked=locked,
            action=AliasEvent.Action.PROMOTE,
            actor=request.requested_by,
            approved_by=by,
            reason=request.reason,
            evidence=evidence,
        )
    request.status = (
        PromotionRequest.Status.APPLIED if approve else PromotionRequest.Status.REJECTED
    )
    request.decided_by, request.decided_at = by, timezone.now()
    request.save()
    return request


def alias_rollback(
    *,
    model: RegisteredModel,
    alias: str,
    by,
    reason: str,
    from_version: int | None = None,
) -> AliasEvent:
    """Back to the version that held the alias before the current one, in one step; a
    rollback of a rollback goes forward again (as `kubectl rollout undo` does). A caller
    that names the holder it saw (from_version, a version number) gets a 409 when the alias
    moved since: two rollbacks sent at once then move it once."""
    policy = policies.parse(model.policy)
    needed = (
        Role.APPROVER if alias in policy.gated_aliases and policy.require_approval else Role.MEMBER
    )
    membership_require(user=by, team=model.team, role=needed)
    if not (reason or "").strip():
        raise invalid("Say why (reason)", field="reason")
    with transaction.atomic():
        locked = _locked(model, alias)
        last, holder = locked
        if last is None or last.from_version is None:
            raise Conflict(f"{alias} has no previous holder to roll back to")
        if from_version is not None and holder.number != from_version:
            raise Conflict(
                f"{alias} points at v{holder.number}, not v{from_version}: it moved since "
                f"(event #{last.sequence}); nothing was rolled back"
            )
        return _move(
            model=model,
            alias=alias,
            version=last.from_version,
            locked=locked,
            action=AliasEvent.Action.ROLLBACK,
            actor=by,
            reason=reason,
            evidence={"rolled_back_event": last.sequence},
        )


@transaction.atomic
def version_delete(*, version: ModelVersion, by) -> None:
    membership_require(user=by, team=version.registered_model.team, role=Role.ADMIN)
    held = list(version.aliases.values_list("name", flat=True))
    if held:
        raise Conflict(f"{version} holds {', '.join(held)}; move the alias first")
    if (
        AliasEvent.objects.filter(to_version=version).exists()
        or AliasEvent.objects.filter(from_version=version).exists()
    ):
        raise Conflict(f"{version} is in an alias's history, which is kept whole")
    version.delete()


def generate(*, model: RegisteredModel, alias: str, messages: list[dict], max_new_tokens: int, by):
    """Answers with the version the alias holds at this moment, and records the answer."""
    from registry.models import ServedGeneration
    from registry.serving import server

    membership_require(user=by, team=model.team, role=Role.VIEWER)
    if not 1 <= max_new_tokens <= 1024:
        raise invalid(
            "max_new_tokens must be between 1 and 1024", field="max_new_tokens", status=422
        )
    if not messages or any(
        not isinstance(m, dict)
        or m.get("role") not in ("system", "user", "assistant")
        or not isinstance(m.get("content"), str)
        for m in messages
    ):
        raise invalid(
            "Give a prompt, or messages with role and content", field="messages", status=422
        )
    version = _holder(model, alias)
    if version is None:
        raise Conflict(f"No version holds {alias}")
    output, latency = server.generate(version, messages, max_new_tokens)
    return ServedGeneration.objects.create(
        registered_model=model,
        alias=alias,
        version=version,
        messages=messages,
        output=output,
        latency_ms=latency,
        created_by=by,
    )


def feedback_add(*, model: RegisteredModel, generation_id: int, rating: int, by, comment: str = ""):
    membership_require(user=by, team=model.team, role=Role.VIEWER)
    generation = ServedGeneration.objects.filter(pk=generation_id, registered_model=model).first()
    if generation is None:
        raise invalid("No such generation of this model", field="generation")
    if rating not in (-1, 1):
        raise invalid("rating is 1 (thumbs up) or -1 (thumbs down)", field="rating", status=422)
    try:
        with transaction.atomic():
            return Feedback.objects.create(
                generation=generation,
                version=generation.version,
                rating=rating,
                comment=comment[:2000],
                created_by=by,
            )
    except IntegrityError:
        raise Conflict("You rated this answer already") from None


@transaction.atomic
def feedback_to_annotation(*, feedback, by):
    """A rated answer goes to the annotators of the dataset the version was trained on."""
    from datasets_app.annotation import example_add_to_draft

    feedback = Feedback.objects.select_for_update().get(pk=feedback.pk)
    if feedback.version.dataset_version_id is None:
        raise Conflict(
            f"{feedback.version} was trained elsewhere on data this hub does not hold: there is "
            "no dataset to annotate"
        )
    if feedback.sent_to_id:
        raise Conflict("This answer was sent to annotation already")
    example = example_add_to_draft(
        dataset=feedback.version.dataset_version.dataset,
        messages=feedback.generation.messages,
        output=feedback.generation.output,
        flag_reason=f"feedback {feedback.rating:+d}: {feedback.comment}",
        notes=f"From served generation {feedback.generation_id} of {feedback.version}",
        by=by,
    )
    feedback.sent_to = example
    feedback.save(update_fields=["sent_to"])
    return example
