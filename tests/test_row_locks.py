"""Every read-then-write that must serialise takes its row lock inside its transaction.

The race tests (tests/support/concurrency.py) prove the locks work, but only on PostgreSQL: SQLite's
IMMEDIATE transactions serialise writers whatever the code does. These tests record each
select_for_update() the service evaluates and the transaction it runs in, so a removed or
misplaced lock fails on both databases."""

from contextlib import contextmanager
from unittest import mock

import pytest
from django.db import connection
from django.db.models.query import QuerySet

from datasets_app.models import Dataset
from datasets_app.services import dataset_version_upload
from experiments import services as training
from experiments.models import TrainingRun
from registry import services as registry
from registry.models import PromotionRequest, RegisteredModel
from tests.support.data import examples, jsonl
from tests.support.registry_helpers import trained_run
from tests.support.training_helpers import make_experiment


@contextmanager
def recorded_locks():
    """(model, in a transaction) for each select_for_update queryset the code evaluates."""
    locks = []
    original = QuerySet.select_for_update

    def select_for_update(self, *args, **kwargs):
        locks.append((self.model, connection.in_atomic_block))
        return original(self, *args, **kwargs)

    with mock.patch.object(QuerySet, "select_for_update", select_for_update):
        yield locks


@pytest.fixture
def run(team, owner, tiny_model):
    return trained_run(team, owner, tiny_model, seed=1)


@pytest.fixture
def model(team, owner):
    return registry.model_create(team=team, name="locked", by=owner)


def test_registration_locks_the_model_row(model, run, owner):
    with recorded_locks() as locks:
        registry.version_register(model=model, run=run, by=owner)
    assert (RegisteredModel, True) in locks


@pytest.mark.parametrize("operation", ["promote", "rollback"])
def test_every_alias_move_locks_the_model_row(model, run, owner, operation):
    first = registry.version_register(model=model, run=run, by=owner)
    second = registry.version_register(model=model, run=run, by=owner)
    registry.alias_promote(model=model, alias="staging", version=first, by=owner, reason="1")
    if operation == "rollback":
        registry.alias_promote(model=model, alias="staging", version=second, by=owner, reason="2")
    with recorded_locks() as locks:
        if operation == "promote":
            registry.alias_promote(
                model=model, alias="staging", version=second, by=owner, reason="2"
            )
        else:
            registry.alias_rollback(model=model, alias="staging", by=owner, reason="back")
    assert (RegisteredModel, True) in locks


def test_deciding_a_promotion_request_locks_the_request(model, run, owner, team):
    version = registry.version_register(model=model, run=run, by=owner)
    request = PromotionRequest.objects.create(
        registered_model=model, alias="production", version=version, requested_by=owner
    )
    with recorded_locks() as locks:
        registry.promotion_decide(request=request, by=owner, approve=False)
    assert (PromotionRequest, True) in locks


@pytest.mark.parametrize(
    "status, action",
    [("running", training.run_cancel), ("failed", training.run_resume)],
    ids=["cancel", "resume"],
)
def test_cancel_and_resume_lock_the_run(team, owner, tiny_model, status, action):
    experiment = make_experiment(team, owner, tiny_model)
    run = TrainingRun.objects.create(experiment=experiment, created_by=owner, status=status)
    with recorded_locks() as locks:
        action(run=run, by=owner)
    assert (TrainingRun, True) in locks


def test_a_dataset_version_upload_locks_the_dataset(team, owner):
    dataset = Dataset.objects.create(team=team, name="d", task="instruction", created_by=owner)
    with recorded_locks() as locks:
        dataset_version_upload(
            dataset=dataset,
            filename="d.jsonl",
            data=jsonl(examples("instruction", 8)).encode(),
            by=owner,
        )
    assert (Dataset, True) in locks
