"""An alias's history against a model of it: every move is decided under the model's row
lock, a promotion to the holder and a rollback of an alias that moved since are 409s, and
the history never holds a self-move (after one, every rollback went nowhere)."""

import threading
from functools import partial
from unittest import mock

import pytest
from django.db import IntegrityError, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune_hub.errors import Conflict
from registry import services
from registry.models import Alias, AliasEvent
from tests.support.concurrency import race
from tests.support.registry_helpers import trained_run


@pytest.fixture
def model(team, owner):
    return services.model_create(team=team, name="history", by=owner)


@pytest.fixture
def versions(model, team, owner, tiny_model):
    run = trained_run(team, owner, tiny_model, seed=3)
    return [services.version_register(model=model, run=run, by=owner) for _ in range(4)]


def promote(model, version, owner, alias="production"):
    return services.alias_promote(model=model, alias=alias, version=version, by=owner, reason="p")


def rollback(model, owner, alias="production", **kwargs):
    return services.alias_rollback(model=model, alias=alias, by=owner, reason="r", **kwargs)


def chain(model, alias="production") -> list[tuple]:
    return list(
        AliasEvent.objects.filter(registered_model=model, alias=alias)
        .order_by("sequence")
        .values_list("action", "from_version__number", "to_version__number")
    )


def test_rollback_returns_to_the_holder_before_the_current_one_not_the_first(
    model, versions, owner
):
    v1, v2, v3, v4 = versions
    for version in (v1, v2, v3, v4):
        promote(model, version, owner)
    assert rollback(model, owner).to_version == v3  # not v1, the first-ever holder
    assert rollback(model, owner).to_version == v4  # a rollback of a rollback goes forward
    promote(model, v2, owner)
    assert rollback(model, owner).to_version == v4
    assert chain(model) == [
        ("promote", None, 1),
        ("promote", 1, 2),
        ("promote", 2, 3),
        ("promote", 3, 4),
        ("rollback", 4, 3),
        ("rollback", 3, 4),
        ("promote", 4, 2),
        ("rollback", 2, 4),
    ]


def test_a_promotion_to_the_holder_is_a_conflict_and_writes_nothing(api, model, versions, owner):
    promote(model, versions[0], owner)
    r = api.put(
        "/api/registry/models/history/aliases/production", {"version": 1, "reason": "again"}
    )
    assert r.status_code == 409 and r.json()["detail"] == "production already points at history v1"
    assert chain(model) == [("promote", None, 1)]


def test_a_rollback_naming_a_holder_that_moved_is_a_conflict(api, model, versions, owner):
    promote(model, versions[0], owner)
    promote(model, versions[1], owner)
    url = "/api/registry/models/history/aliases/production/rollback"
    r = api.post(url, {"reason": "regression", "from_version": 1})
    assert r.status_code == 409
    assert r.json()["detail"] == (
        "production points at v2, not v1: it moved since (event #2); nothing was rolled back"
    )
    r = api.post(url, {"reason": "regression", "from_version": 2})
    assert r.status_code == 200 and r.json()["to_version"] == 1


def test_a_second_pending_request_for_the_same_move_is_a_conflict(model, versions, owner):
    services.policy_set(model=model, by=owner, policy={"require_approval": True})
    promote(model, versions[0], owner)
    with pytest.raises(Conflict, match="waits for an approver already"):
        promote(model, versions[0], owner)


def test_approving_a_request_for_the_holder_is_a_conflict(model, versions, owner):
    services.policy_set(model=model, by=owner, policy={"require_approval": True})
    first = promote(model, versions[0], owner)
    second = promote(model, versions[0], owner, alias="staging")  # ungated: moves at once
    assert isinstance(second, AliasEvent)
    services.policy_set(model=model, by=owner, policy={"require_approval": False})
    promote(model, versions[0], owner)  # the holder now, by another path
    with pytest.raises(Conflict, match="already points at"):
        services.promotion_decide(request=first, by=owner, approve=True)
    first.refresh_from_db()
    assert first.status == "pending"


def test_the_database_refuses_a_self_move(model, versions, owner):
    promote(model, versions[0], owner)
    with pytest.raises(IntegrityError), transaction.atomic():
        AliasEvent.objects.create(
            registered_model=model,
            alias="production",
            sequence=2,
            action="promote",
            from_version=versions[0],
            to_version=versions[0],
            actor=owner,
            reason="x",
        )


class HistoryModel:
    """What the alias must do: a list of (from, to) moves; the holder is the last `to`."""

    def __init__(self):
        self.moves: list[tuple[int | None, int]] = []

    @property
    def holder(self):
        return self.moves[-1][1] if self.moves else None

    def promote(self, number) -> bool:
        if number == self.holder:
            return False
        self.moves.append((self.holder, number))
        return True

    def rollback(self) -> bool:
        if not self.moves or self.moves[-1][0] is None:
            return False
        self.moves.append((self.holder, self.moves[-1][0]))
        return True


OPERATIONS = st.lists(
    st.one_of(st.tuples(st.just("promote"), st.integers(1, 4)), st.just(("rollback", None))),
    max_size=12,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(operations=OPERATIONS)
def test_any_sequence_of_promotions_and_rollbacks_follows_the_model(
    model, versions, owner, operations
):
    AliasEvent.objects.filter(registered_model=model).delete()
    Alias.objects.filter(registered_model=model).delete()
    expected = HistoryModel()
    for action, number in operations:
        if action == "promote":
            allowed = expected.promote(number)
            call = partial(promote, model, versions[number - 1], owner)
        else:
            allowed = expected.rollback()
            call = partial(rollback, model, owner)
        if allowed:
            assert call().to_version.number == expected.holder
        else:
            with pytest.raises(Conflict):
                call()
    events = AliasEvent.objects.filter(registered_model=model).order_by("sequence")
    assert [e.sequence for e in events] == list(range(1, len(expected.moves) + 1))
    assert [
        (e.from_version.number if e.from_version else None, e.to_version.number) for e in events
    ] == expected.moves
    holder = Alias.objects.filter(registered_model=model, name="production").first()
    assert (holder.version.number if holder else None) == expected.holder


def _pause_before_each_event_write():
    """Each thread that reaches an event's write waits there (up to 2 s) for the other to
    reach it too. Under the lock only one can, so the wait times out and the first move
    commits before the second decides; a decision read before the lock lets both arrive
    with the same stale state, and the second writes a self-move (refused by the database's
    constraint: an IntegrityError, not the 409 the test wants)."""
    barrier = threading.Barrier(2)
    original = AliasEvent.save

    def save(self, *args, **kwargs):
        try:
            barrier.wait(timeout=2)
        except threading.BrokenBarrierError:
            pass
        return original(self, *args, **kwargs)

    return mock.patch.object(AliasEvent, "save", save)


@pytest.mark.django_db(transaction=True)
def test_the_same_promotion_twice_at_once_moves_the_alias_once(model, versions, owner):
    v1, v2 = versions[:2]
    promote(model, v1, owner)
    with _pause_before_each_event_write():
        outcomes = race(lambda: promote(model, v2, owner), [(), ()])
    assert sorted(type(o).__name__ for o in outcomes) == ["AliasEvent", "Conflict"], outcomes
    assert chain(model) == [("promote", None, 1), ("promote", 1, 2)]
    assert rollback(model, owner).to_version == v1  # production can still go back


@pytest.mark.django_db(transaction=True)
def test_the_same_rollback_twice_at_once_moves_the_alias_once(model, versions, owner):
    v1, v2 = versions[:2]
    promote(model, v1, owner)
    promote(model, v2, owner)
    with _pause_before_each_event_write():
        outcomes = race(lambda: rollback(model, owner, from_version=2), [(), ()])
    assert sorted(type(o).__name__ for o in outcomes) == ["AliasEvent", "Conflict"], outcomes
    assert chain(model) == [("promote", None, 1), ("promote", 1, 2), ("rollback", 2, 1)]


@pytest.mark.django_db(transaction=True)
def test_the_migration_drops_stored_self_moves_and_renumbers_the_chain(model, versions, owner):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("registry", "0004_tracked_runs")], [("registry", "0006_alias_event_moves")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("registry", "AliasEvent")
    v1, v2 = versions[:2]
    for sequence, (action, source, target, evidence) in enumerate(
        [
            ("promote", None, v1, {}),
            ("promote", v1, v2, {}),
            ("promote", v2, v2, {}),  # the double click
            ("rollback", v2, v1, {"rolled_back_event": 3}),
            ("rollback", v1, v1, {"rolled_back_event": 4}),  # the rollback that went nowhere
            ("promote", v1, v2, {}),
            ("rollback", v2, v1, {"rolled_back_event": 6}),
        ],
        start=1,
    ):
        old.objects.create(
            registered_model_id=model.pk,
            alias="production",
            sequence=sequence,
            action=action,
            from_version_id=source and source.pk,
            to_version_id=target.pk,
            actor_id=owner.pk,
            reason="x",
            evidence=evidence,
        )
    executor = MigrationExecutor(connection)
    executor.migrate(after)
    events = AliasEvent.objects.filter(registered_model=model).order_by("sequence")
    assert [(e.sequence, e.evidence) for e in events] == [
        (1, {}),
        (2, {}),
        (3, {"rolled_back_event": 2}),
        (4, {}),
        (5, {"rolled_back_event": 4}),
    ]
    assert chain(model) == [
        ("promote", None, 1),
        ("promote", 1, 2),
        ("rollback", 2, 1),
        ("promote", 1, 2),
        ("rollback", 2, 1),
    ]
    # Back to the newest schema, or the tests after this one find the tables of 0006.
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
