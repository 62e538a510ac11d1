"""Resource exhaustion of database connections.

runserver started a thread per request and each kept a PostgreSQL connection of its own, so
50 readers and 4 writers ran the server out of connections ("too many clients": 735 of
6,251 requests answered 500). These tests hold the fix in place: the production server is
gunicorn with a fixed number of workers and threads, each process draws from a bounded pool,
a configuration whose processes could open more than DB_MAX_CONNECTIONS is refused before it
serves, and a request that finds no free connection answers 503, not 500.
"""

import os
import runpy
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from finetune_hub import capacity
from finetune_hub.capacity import ConnectionBudget
from finetune_hub.checks import check_connection_budget

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "finetune_hub" / "gunicorn.conf.py"
GUNICORN = Path(sys.executable).with_name("gunicorn")
POSTGRES_URL = "postgres://nobody@127.0.0.1:1/not_connected"  # parsed, never connected to


def budget(**overrides) -> ConnectionBudget:
    values = dict(
        web_workers=2,
        web_threads=8,
        pooling="django",
        pool_min=1,
        pool_max=8,
        huey_processes=1,
        huey_workers=1,
        limit=80,
    )
    return ConnectionBudget(**{**values, **overrides})


def clean_env(**extra) -> dict:
    # A production process starts from a clean environment, not this test run's.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    for name in ("WEB_WORKERS", "WEB_THREADS", "DB_POOL_MAX_SIZE", "DB_MAX_CONNECTIONS"):
        env.pop(name, None)
    return {**env, **extra}


def test_the_default_budget_fits_below_postgresql_default_max_connections():
    b = budget()
    assert b.web == 16 and b.workers == 3 and b.total == 19
    assert b.problems() == []
    assert capacity.DEFAULT_DB_MAX_CONNECTIONS < 100 - 3  # superuser_reserved_connections


def test_the_budget_counts_pool_min_size_and_pgbouncer_threads():
    # A pool never holds fewer than min_size once opened, even in a one-thread process.
    assert budget(pool_min=4).workers == 4 + 4
    assert budget(pool_max=2).web == 2 * 2  # threads beyond the pool wait (then 503)
    assert budget(pooling="pgbouncer", pool_max=2).web == 2 * 8


def test_an_over_budget_configuration_is_refused():
    problems = budget(web_workers=12).problems()
    assert len(problems) == 1 and "exceed DB_MAX_CONNECTIONS=80" in problems[0]
    assert budget(pool_min=9).problems() == ["DB_POOL_MIN_SIZE=9 exceeds DB_POOL_MAX_SIZE"]


def test_manage_py_check_refuses_an_over_budget_configuration():
    r = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=clean_env(DATABASE_URL=POSTGRES_URL, WEB_WORKERS="20", DB_MAX_CONNECTIONS="50"),
        timeout=120,
    )
    assert r.returncode != 0
    assert "finetune_hub.E001" in r.stderr and "exceed DB_MAX_CONNECTIONS=50" in r.stderr


def test_gunicorn_is_bounded_gthread_loaded_after_the_fork(monkeypatch):
    monkeypatch.delenv("WEB_WORKERS", raising=False)
    monkeypatch.delenv("WEB_THREADS", raising=False)
    conf = runpy.run_path(str(CONF))
    assert conf["worker_class"] == "finetune_hub.web_worker.BoundedThreadWorker"
    assert (conf["workers"], conf["threads"]) == (2, 8)
    assert conf["preload_app"] is False  # a pool opened in the master would be shared
    assert conf["wsgi_app"] == "finetune_hub.wsgi:application"
    monkeypatch.setenv("WEB_WORKERS", "3")
    assert runpy.run_path(str(CONF))["workers"] == 3


def test_gunicorn_refuses_to_start_over_budget_even_from_its_command_line():
    r = subprocess.run(
        [str(GUNICORN), "-c", str(CONF), "--workers", "40", "--bind", "127.0.0.1:0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=clean_env(DATABASE_URL=POSTGRES_URL),
        timeout=60,
    )
    assert r.returncode != 0
    assert "configuration refused" in r.stderr and "40 web workers" in r.stderr


def test_pool_settings_are_applied_on_postgresql(db):
    if connection.vendor != "postgresql":
        pytest.skip("the pool is PostgreSQL's (SQLite opens a file, not a server connection)")
    assert connection.settings_dict["OPTIONS"]["pool"] == settings.DB_POOL
    assert connection.settings_dict["CONN_MAX_AGE"] == 0
    assert connection.pool.max_size == settings.DB_POOL["max_size"] == settings.WEB_THREADS
    assert connection.pool.timeout == settings.DB_POOL["timeout"]
    assert check_connection_budget(None) == []
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        server_max = int(cursor.fetchone()[0])
    assert settings.DB_MAX_CONNECTIONS <= server_max - 3


def request_in_a_thread(path: str):
    """A request in a new thread, which has no connection yet and must take one."""
    result = {}

    def go():
        try:
            result["response"] = Client().get(path)
        finally:
            connection.close()

    thread = threading.Thread(target=go)
    thread.start()
    thread.join(30)
    return result["response"]


def test_no_free_connection_answers_503_json_under_api_not_500(db):
    if connection.vendor != "postgresql":
        pytest.skip("the pool is PostgreSQL's (SQLite opens a file, not a server connection)")
    from psycopg_pool import PoolTimeout

    pool = connection.pool
    held, timeout = [], pool.timeout
    try:
        while True:  # take every connection the pool can give
            held.append(pool.getconn(timeout=0.2))
    except PoolTimeout:
        pass
    pool.timeout = 0.3
    try:
        api = request_in_a_thread("/api/teams")
        page = request_in_a_thread("/datasets/")
    finally:
        pool.timeout = timeout
        for conn in held:
            pool.putconn(conn)
    assert api.status_code == 503 and api["Retry-After"] == "5"
    assert api.json() == {
        "detail": "The database is busy or unavailable; try again shortly",
        "code": "unavailable",
    }
    assert page.status_code == 503
    assert request_in_a_thread("/api/teams").status_code == 401  # connections are back


def test_a_refused_connection_answers_503_on_every_database(monkeypatch):
    from django.db import OperationalError

    class Refusing:
        def ensure_connection(self):
            raise OperationalError("couldn't get a connection after 10.00 sec")

    monkeypatch.setattr("finetune_hub.middleware.connection", Refusing())
    response = Client().get("/api/teams")
    assert response.status_code == 503 and response.json()["code"] == "unavailable"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read(), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers["Content-Type"]


@contextmanager
def serving(tmp_path, *args: str, **env):
    """The production server as `make serve-prod` starts it, on a free port, in production
    mode (plain HTTP on localhost: no SSL redirect), on this run's test database."""
    port = free_port()
    env = clean_env(
        FINETUNE_HUB_DB_NAME=str(connection.settings_dict["NAME"]),
        FINETUNE_HUB_ENV="production",
        SECRET_KEY="x" * 60,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        WEB_BIND=f"127.0.0.1:{port}",
        WEB_WORKERS="1",
        WEB_THREADS="2",
        **env,
    )
    log = open(tmp_path / "gunicorn.log", "w+")
    process = subprocess.Popen(
        [str(GUNICORN), "-c", str(CONF), *args], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # loads torch once: seconds on an idle machine
        while time.monotonic() < deadline and process.poll() is None:
            try:
                fetch(url + "/api/health")
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.seek(0)
        print(log.read())


@pytest.fixture
def gunicorn_server(db, tmp_path):
    with serving(tmp_path) as url:
        yield url


def test_gunicorn_serves_health_and_refuses_the_unauthenticated(gunicorn_server):
    status, body, content_type = fetch(gunicorn_server + "/api/health")
    assert (status, body) == (200, b'{"status": "ok"}')
    status, body, content_type = fetch(gunicorn_server + "/api/teams")
    assert status == 401 and content_type.startswith("application/json")
    assert b"Authentication required" in body


def stalled_request(url: str, path: str, declared: int, headers: str = "") -> socket.socket:
    """A request that declares a body of `declared` bytes, sends six, and stalls."""
    host, port = url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)), timeout=30)
    client.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{headers}\r\nabcdef".encode()
    )
    return client


def answer_of(client: socket.socket) -> bytes:
    try:
        return client.recv(65536)
    except OSError:
        return b""
    finally:
        client.close()


# The login form's body is read by the CSRF check, before any view: with a cookie of the
# right shape, the server waits for the body a stalled client never sends.
CSRF_COOKIE = "Cookie: csrftoken=" + "a" * 32 + "\r\n"


def health_within(url: str, seconds: float) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/health", timeout=seconds) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.parametrize("worker", ["bounded", "gthread"])
def test_stalled_bodies_lose_their_threads_after_the_read_timeout(db, tmp_path, worker):
    """Both threads of the server taken by clients that stall mid-body: the project's worker
    frees them after WEB_READ_TIMEOUT and serves the next request; stock gthread (the
    control: the test can fail) holds them, and serves nothing."""
    args = ["--worker-class", "gthread"] if worker == "gthread" else []
    with serving(tmp_path, *args, WEB_READ_TIMEOUT="2") as url:
        stalled = [stalled_request(url, "/accounts/login/", 1000, CSRF_COOKIE) for _ in range(2)]
        time.sleep(0.5)  # both taken by the worker's two threads
        started = time.monotonic()
        answered = health_within(url, 8)
        waited = time.monotonic() - started
        answers = [answer_of(client) for client in stalled]
    if worker == "gthread":
        assert not answered
        return
    assert answered and waited < 6, waited
    # The CSRF check could not read the form: refused (403), or the connection dropped.
    assert all(a == b"" or a.startswith(b"HTTP/1.1 403") for a in answers), answers


@pytest.mark.parametrize(
    "path", ["/api/datasets/1/versions", "/api/runs/1/artifacts/model.safetensors"]
)
def test_a_declared_length_over_the_limit_is_refused_without_waiting(gunicorn_server, path):
    """1 GiB declared, six bytes sent: 413 at once, from the headers alone."""
    client = stalled_request(gunicorn_server, path, 1 << 40)
    started = time.monotonic()
    answer = answer_of(client)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert time.monotonic() - started < 2
