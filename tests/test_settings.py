import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def manage(*args, **env):
    # A production process starts from a clean environment, not this test run's.
    base = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=120,
    )


def test_check_deploy_is_clean_in_production():
    r = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        FINETUNE_HUB_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="hub.example.com",
    )
    assert r.returncode == 0, r.stderr
    assert "no issues" in r.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    r = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "FINETUNE_HUB_ENV": "production"},
        timeout=120,
    )
    assert r.returncode != 0 and "SECRET_KEY must be set" in r.stderr


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(db):
    import pytest
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 30000


def test_worker_log_lines_are_printed_once():
    """run_huey adds a handler to the "huey" logger only when it has none; ours is set in
    LOGGING and does not propagate to the root's, so each line is printed once."""
    import logging

    huey = logging.getLogger("huey")
    ours = [h for h in huey.handlers if type(h) is logging.StreamHandler]  # pytest adds its own
    assert len(ours) == 1 and huey.propagate is False
