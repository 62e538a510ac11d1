"""The HTTP handlers of MLflow's lifecycle calls (experiments.lifecycle): experiments
delete, restore, update (rename), set-experiment-tag, delete-experiment-tag; runs delete,
restore, delete-tag; and the metric history MLflow's UI reads in bulk
(experiments.mlflow.history)."""

from django.http import JsonResponse

from experiments import lifecycle
from experiments.mlflow import history
from experiments.mlflow import messages as m
from experiments.mlflow.protocol import endpoint, experiment_of, run_of_message


@endpoint("POST", message=m.ExperimentRef)
def experiment_delete(request, user, team, message):
    experiment = experiment_of(team, message.experiment_id, user)
    lifecycle.experiment_delete(experiment=experiment, by=user)
    return JsonResponse({})


@endpoint("POST", message=m.ExperimentRef)
def experiment_restore(request, user, team, message):
    experiment = experiment_of(team, message.experiment_id, user)
    lifecycle.experiment_restore(experiment=experiment, by=user)
    return JsonResponse({})


@endpoint("POST", message=m.UpdateExperiment)
def experiment_update(request, user, team, message):
    experiment = experiment_of(team, message.experiment_id, user)
    lifecycle.experiment_rename(experiment=experiment, name=message.new_name, by=user)
    return JsonResponse({})


@endpoint("POST", message=m.SetExperimentTag)
def experiment_tag_set(request, user, team, message):
    experiment = experiment_of(team, message.experiment_id, user)
    lifecycle.experiment_tag_set(
        experiment=experiment, key=message.key, value=message.value, by=user
    )
    return JsonResponse({})


@endpoint("POST", message=m.DeleteExperimentTag)
def experiment_tag_delete(request, user, team, message):
    experiment = experiment_of(team, message.experiment_id, user)
    lifecycle.experiment_tag_delete(experiment=experiment, key=message.key, by=user)
    return JsonResponse({})


@endpoint("POST", message=m.RunRef)
def run_delete(request, user, team, message):
    lifecycle.run_delete(run=run_of_message(team, message), by=user)
    return JsonResponse({})


@endpoint("POST", message=m.RunRef)
def run_restore(request, user, team, message):
    lifecycle.run_restore(run=run_of_message(team, message), by=user)
    return JsonResponse({})


@endpoint("POST", message=m.DeleteTag)
def run_tag_delete(request, user, team, message):
    lifecycle.run_tag_delete(run=run_of_message(team, message), key=message.key, by=user)
    return JsonResponse({})


@endpoint("GET", message=history.GetMetricHistoryBulk)
def metric_history_bulk(request, user, team, message):
    return JsonResponse(history.bulk(team, message))


@endpoint("GET", message=history.GetMetricHistoryBulkInterval)
def metric_history_bulk_interval(request, user, team, message):
    return JsonResponse(history.bulk_interval(team, message))
