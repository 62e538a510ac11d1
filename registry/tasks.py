from huey import crontab
from huey.contrib.djhuey import db_periodic_task


@db_periodic_task(crontab(minute="7"))
def retrain_scheduled_models():
    from registry.retraining import retrain_due

    return [job.pk for job in retrain_due()]


@db_periodic_task(crontab(minute="*/5"))
def compare_retrained_models():
    from registry.retraining import compare_finished

    return [job.pk for job in compare_finished()]
