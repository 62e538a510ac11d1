"""Huey tasks: thin wrappers that call the evaluation queue (imports inside, as the HackSoft
guide does). The queue sends `evaluate` without importing this module: it finds it on
EvaluationConfig, which ready() sets."""

from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task, on_startup


@db_task()
def evaluate(evaluation_id: int):
    from evaluation.queue import evaluation_execute

    evaluation_execute(evaluation_id=evaluation_id)


@db_periodic_task(crontab(minute="*"))
def reap_stale_evaluations():
    """The training reaper's twin (same period, same window); it lives here because
    experiments does not import evaluation."""
    from evaluation.queue import evaluations_reap_stale, evaluations_redispatch
    from experiments.tasks import STALE_AFTER

    reaped = evaluations_reap_stale(stale_after=STALE_AFTER)
    evaluations_redispatch()  # a token lost with Redis, or in an outage
    return reaped


@on_startup()
def recover_lost_evaluation_tokens():
    from django.db import close_old_connections

    from evaluation.queue import evaluations_redispatch

    evaluations_redispatch()
    close_old_connections()
