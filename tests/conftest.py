import os
import shutil
from pathlib import Path

import pytest
from django.test import Client

from finetune_hub.models import Membership, Role, Team
from tests.support.browser import page  # noqa: F401 (the Playwright page fixture)
from tests.support.clients import ApiClient, make_user
from tests.support.comparisons import human, subjects, version  # noqa: F401 (scored subjects)
from tests.support.consumers import consumers  # noqa: F401 (Huey consumer processes)
from tests.support.forgetting import general  # noqa: F401 (the general set's version)
from tests.support.mlflow_live import hub, mlflow_env  # noqa: F401 (mlflow against a live server)
from tests.support.registry_helpers import (  # noqa: F401 (a model, two trained runs, two versions)
    adapter_kind,
    model,
    runs,
    versions,
)
from tests.support.tiny_model import tiny_model_dir


@pytest.fixture(scope="session")
def tiny_model():
    return str(tiny_model_dir())


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """`make mutation` runs a test session per mutant, several at once in one folder: each
    gets a copy of the test database the clean run migrated (it runs with --reuse-db), so no
    session spends seconds migrating or meets another's rows."""
    from django.conf import settings

    sqlite = settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
    if not sqlite or "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        yield
        return

    test = settings.DATABASES["default"].setdefault("TEST", {})
    base = Path(test["NAME"])
    copy = base.with_name(f"{base.name}-{os.getpid()}")
    if base.exists():
        shutil.copyfile(base, copy)
    test["NAME"] = copy
    yield
    for path in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
        path.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """PBKDF2's million rounds cost ~0.2 s a user; tests create hundreds of users."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def isolated_artifacts(settings, tmp_path, tiny_model):
    from registry.serving import server

    settings.ARTIFACT_ROOT = (tmp_path / "artifacts").resolve()
    settings.DEFAULT_BASE_MODEL = tiny_model
    settings.MODEL_CACHE_DIR = Path(tiny_model).parent
    yield settings.ARTIFACT_ROOT
    shutil.rmtree(settings.ARTIFACT_ROOT, ignore_errors=True)
    server.bases.clear()  # models loaded from this test's artifacts go with them
    server.full.clear()


@pytest.fixture
def model_root(settings, tmp_path):
    """An operator's model folder (BASE_MODEL_DIRS), apart from the artifact root."""
    root = (tmp_path / "model-root").resolve()
    root.mkdir()
    settings.BASE_MODEL_DIRS = [root]
    return root


@pytest.fixture
def team(db):
    return Team.objects.create(name="Acme")


@pytest.fixture
def owner(team):
    user = make_user("owner")
    Membership.objects.create(team=team, user=user, role=Role.ADMIN)
    return user


@pytest.fixture
def member(team):
    user = make_user("member")
    Membership.objects.create(team=team, user=user, role=Role.MEMBER)
    return user


@pytest.fixture
def reviewer(team):
    user = make_user("reviewer")
    Membership.objects.create(team=team, user=user, role=Role.REVIEWER)
    return user


@pytest.fixture
def outsider(db):
    user = make_user("outsider")
    Membership.objects.create(team=Team.objects.create(name="Other"), user=user, role=Role.ADMIN)
    return user


@pytest.fixture
def api(owner):
    return ApiClient(owner)


@pytest.fixture
def outsider_api(outsider):
    return ApiClient(outsider)


@pytest.fixture
def anon_api(db):
    return ApiClient(None)


@pytest.fixture
def browser_client(owner):
    client = Client()
    client.force_login(owner)
    return client


def pytest_report_header(config):
    from django.conf import settings

    return (
        f"database: {settings.DATABASES['default']['ENGINE']}; "
        f"huey: {settings.HUEY['huey_class']}; CI={os.environ.get('CI', '')}"
    )


@pytest.fixture
def cpu_worker(db):
    """This test process, reporting itself as a live CPU worker."""
    from experiments.workers import worker_heartbeat

    return worker_heartbeat()


@pytest.fixture
def reward_run(team, owner, tiny_model):
    """A finished reward model, made without training (tests/support/rlhf.py)."""
    from tests.support.rlhf import finished_reward_model

    return finished_reward_model(team, owner, tiny_model)
