"""Scheduled retraining: a periodic task retrains the production version's experiment on the
newest version of its dataset, and once the run has finished opens an automatic comparison of
the new run against production. Promotion stays a person's decision, through the policy."""

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from datasets_app.selectors import newest_published
from evaluation.comparisons import comparison_create
from experiments.models import TrainingRun
from experiments.services import experiment_create, run_enqueue
from finetune_hub.errors import ServiceError
from registry.models import Alias, RegisteredModel, RetrainJob

log = logging.getLogger(__name__)


def models_due(now):
    scheduled = RegisteredModel.objects.filter(retrain_every_days__isnull=False)
    return [
        m
        for m in scheduled
        if m.last_retrain_at is None
        or m.last_retrain_at <= now - timedelta(days=m.retrain_every_days)
    ]


@transaction.atomic
def retrain(model: RegisteredModel, now) -> RetrainJob | None:
    model.last_retrain_at = now
    model.save(update_fields=["last_retrain_at"])
    production = (
        Alias.objects.filter(registered_model=model, name="production")
        .select_related("version")
        .first()
    )
    if production is None:
        return None
    version = production.version
    if version.source_run is None:
        return None  # registered through MLflow from a source elsewhere: no recipe here
    experiment = version.source_run.experiment
    if experiment.dataset_version_id is None or experiment.tracked:
        return None  # trained elsewhere: there is no recipe here to run again
    newest = newest_published(experiment.dataset_version.dataset)
    if newest is None or newest.pk == version.dataset_version_id:
        return None  # no newer data: nothing to learn
    retrained = experiment_create(
        team=model.team,
        name=f"{experiment.name}-retrain-{now:%Y%m%d%H%M}",
        dataset_version=newest,
        base_model=experiment.base_model,
        technique=experiment.technique,
        hyperparameters=experiment.hyperparameters,
        by=model.created_by,
        notes=f"Scheduled retraining of {version} on {newest}",
    )
    run = run_enqueue(experiment=retrained, by=model.created_by)
    return RetrainJob.objects.create(registered_model=model, production=version, run=run)


def retrain_due(now=None) -> list[RetrainJob]:
    now = now or timezone.now()
    jobs = []
    for model in models_due(now):
        try:
            if job := retrain(model, now):
                jobs.append(job)
        except ServiceError as exc:  # e.g. no live worker can take it: try again next time
            RegisteredModel.objects.filter(pk=model.pk).update(last_retrain_at=None)
            log.warning("Retraining %s postponed: %s", model, exc.detail)
    return jobs


def compare_finished() -> list[RetrainJob]:
    """Opens the comparison for each retraining whose run has finished."""
    done = []
    jobs = (
        RetrainJob.objects.filter(status=RetrainJob.Status.TRAINING)
        .filter(Q(run__status__in=TrainingRun.FINISHED))
        .select_related("run", "production")
    )
    for job in jobs:
        if job.run.status != TrainingRun.Status.SUCCEEDED:
            RetrainJob.objects.filter(pk=job.pk).update(status=RetrainJob.Status.FAILED)
            continue
        with transaction.atomic():
            job.comparison = comparison_create(
                team=job.registered_model.team,
                by=job.registered_model.created_by,
                subjects=[{"model_version": job.production.pk}, {"run": job.run_id}],
                dataset_version=job.run.experiment.dataset_version,
                name=f"scheduled retraining of {job.registered_model.name}",
            )
            job.status = RetrainJob.Status.COMPARED
            job.save()
        done.append(job)
    return done
