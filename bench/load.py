"""Load benchmark: readers and writers against the production server (gunicorn started with
finetune_hub/gunicorn.conf.py, as `make serve-prod` does), on SQLite or PostgreSQL.

    python bench/load.py --db sqlite
    python bench/load.py --db postgres --database-url postgres://postgres@127.0.0.1:5432/loadbench

Readers (default 50) loop over dashboard pages (with a session) and API reads (with a bearer
token); writers (default 4) create datasets, upload small dataset versions and set queued
runs' priorities: real writes. Every client is a thread with its own keep-alive connection
and no think time. An error is any connection error or a status other than the endpoint's
expected one. Writes bench/results/load-<db>.json and prints a Markdown table.
"""

import argparse
import http.client
import json
import os
import platform
import random
import secrets
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finetune_hub import capacity  # noqa: E402

READ_PAGES = ["/", "/datasets/", "/datasets/{dataset}/", "/experiments/", "/runs/"]
READ_API = [
    "/api/teams",
    "/api/datasets?team={team}",
    "/api/datasets/{dataset}",
    "/api/datasets/{dataset}/versions/1",
    "/api/datasets/{dataset}/versions/1/examples?page=1",
    "/api/experiments/{experiment}",
    "/api/runs/{run}",
    "/api/runs/queue",
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/loadbench")
    p.add_argument("--duration", type=float, default=120, help="seconds measured")
    p.add_argument("--warmup", type=float, default=5, help="seconds of load not measured")
    p.add_argument("--readers", type=int, default=50)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--var", default="/tmp/var-load", help="FINETUNE_HUB_VAR root (one per db)")
    p.add_argument("--port", type=int, default=18765)
    p.add_argument("--out", default=None, help="default bench/results/load-<db>.json")
    return p.parse_args()


def server_env(args) -> dict:
    """Production settings over plain HTTP on localhost (no TLS here, so no SSL redirect)."""
    var = Path(args.var).resolve()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "FINETUNE_HUB_DB_NAME")}
    env.update(
        FINETUNE_HUB_VAR=str(var / args.db),
        FINETUNE_HUB_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        WEB_BIND=f"127.0.0.1:{args.port}",
        WEB_ACCESS_LOG=str(var / args.db / "access.log"),
        # Uploads are measured with the tests' tiny model's tokenizer: fast, and the same
        # tokenizer as the embedded model.
        MODEL_CACHE_DIR=str(var / "models"),
        DEFAULT_BASE_MODEL=str(var / "models" / "tiny-llama-test"),
        DJANGO_SETTINGS_MODULE="finetune_hub.settings",
    )
    if args.db == "postgres":
        env["DATABASE_URL"] = args.database_url
    return env


def jsonl(n: int, tag: str) -> bytes:
    rows = [
        {"instruction": f"Route ticket {tag}-{i}", "input": "", "output": f"queue={i % 7}"}
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def ensure_database(url: str) -> None:
    """Creates the benchmark's PostgreSQL database when it is missing."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def prepare(env: dict) -> dict:
    """Migrates this database and makes what the clients read and write: a user in a team,
    a bearer token, a session, datasets with a version, an experiment with queued runs."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections
    from django.test import Client

    from datasets_app.models import Dataset
    from datasets_app.services import dataset_create, dataset_version_upload
    from experiments.models import TrainingRun
    from experiments.services import experiment_create
    from finetune_hub.auth import token_create
    from finetune_hub.models import Membership, Role, Team
    from tests.support.tiny_model import tiny_model_dir

    call_command("migrate", "--noinput", verbosity=0)
    model = str(tiny_model_dir())
    user, _ = get_user_model().objects.get_or_create(username="loadbench")
    team = Team.objects.filter(memberships__user=user).first() or Team.objects.create(
        name=f"load-{uuid.uuid4().hex[:6]}"
    )
    Membership.objects.get_or_create(team=team, user=user, defaults={"role": Role.ADMIN})
    datasets = list(Dataset.objects.filter(team=team, name__startswith="read-"))
    for i in range(len(datasets), 5):
        dataset = dataset_create(team=team, name=f"read-{i}", task="instruction", by=user)
        dataset_version_upload(
            dataset=dataset, filename="d.jsonl", data=jsonl(60, f"r{i}"), by=user, base_model=model
        )
        datasets.append(dataset)
    experiment = experiment_create(
        team=team,
        name=f"load-{uuid.uuid4().hex[:6]}",
        dataset_version=datasets[0].versions.get(number=1),
        base_model=model,
        technique="lora",
        hyperparameters={"max_steps": 5},
        by=user,
    )
    # Queued straight in the table: no worker is started, and none must train these.
    runs = [TrainingRun.objects.create(experiment=experiment, created_by=user) for _ in range(4)]
    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value
    fixture = {
        "team": team.pk,
        "datasets": [d.pk for d in datasets],
        "experiment": experiment.pk,
        "runs": [r.pk for r in runs],
        "token": token_create(user=user, name=f"load-{uuid.uuid4().hex[:6]}")[1],
        "session": session,
        "model": model,
    }
    connections.close_all()
    for conn in connections.all(initialized_only=True):
        if hasattr(conn, "close_pool"):
            conn.close_pool()
    return fixture


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = defaultdict(list)
        self.statuses = defaultdict(Counter)
        self.errors = defaultdict(Counter)
        self.retries = Counter()
        self.measuring = False

    def retry(self, endpoint: str):
        if self.measuring:
            with self.lock:
                self.retries[endpoint] += 1

    def add(self, endpoint: str, seconds: float, status: int | str, ok: bool):
        if not self.measuring:
            return
        with self.lock:
            self.latencies[endpoint].append(seconds)
            self.statuses[endpoint][str(status)] += 1
            if not ok:
                self.errors[endpoint][str(status)] += 1


class Client:
    """One keep-alive connection. A request that finds its reused connection closed by the
    server before any answer (keep-alive timeout, a worker recycled after max_requests) is
    sent again once on a new connection, as HTTP clients do; those are counted as retries."""

    STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)

    def __init__(self, port: int, headers: dict, recorder: Recorder):
        self.port, self.headers, self.recorder = port, headers, recorder
        self.conn = None

    def _send(self, method, path, body, headers):
        reused = self.conn is not None
        if not reused:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            self.conn.request(method, path, body=body, headers={**self.headers, **headers})
            response = self.conn.getresponse()
            return response.status, response.read(), response.getheader("Connection", "")
        except Exception as exc:
            self.conn.close()
            self.conn = None
            exc.reused = reused
            raise

    def request(self, endpoint, method, path, body=None, headers=None, expect=(200,)):
        start = time.perf_counter()
        try:
            try:
                status, data, connection = self._send(method, path, body, headers or {})
            except self.STALE as exc:
                if not exc.reused:
                    raise
                self.recorder.retry(endpoint)
                status, data, connection = self._send(method, path, body, headers or {})
        except (OSError, http.client.HTTPException) as exc:
            self.recorder.add(endpoint, time.perf_counter() - start, type(exc).__name__, False)
            return None
        if connection.lower() == "close":
            self.conn.close()
            self.conn = None
        self.recorder.add(endpoint, time.perf_counter() - start, status, status in expect)
        return data


def reader(fixture, args, recorder, stop):
    """Half dashboard pages with the session, half API reads with the token, on one
    keep-alive connection."""
    client = Client(args.port, {}, recorder)
    session = {"Cookie": f"sessionid={fixture['session']}"}
    token = {"Authorization": f"Bearer {fixture['token']}"}
    rnd = random.Random()
    while not stop.is_set():
        names = dict(
            team=fixture["team"],
            dataset=rnd.choice(fixture["datasets"]),
            experiment=fixture["experiment"],
            run=rnd.choice(fixture["runs"]),
        )
        page = rnd.random() < 0.5
        template = rnd.choice(READ_PAGES if page else READ_API)
        path = template.format(**names)
        client.request("GET " + template, "GET", path, headers=session if page else token)


def multipart(fields: dict, filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def writer(number, fixture, args, recorder, stop, warm):
    api = Client(args.port, {"Authorization": f"Bearer {fixture['token']}"}, recorder)
    rnd, step = random.Random(number), 0
    json_headers = {"Content-Type": "application/json"}
    dataset = None
    while not stop.is_set():
        step += 1
        tag = f"w{number}-{step}-{uuid.uuid4().hex[:6]}"
        kind = step % 3
        if kind == 1 or dataset is None:
            body = json.dumps({"team": fixture["team"], "name": f"ds-{tag}", "task": "instruction"})
            data = api.request(
                "POST /api/datasets", "POST", "/api/datasets", body, json_headers, expect=(201,)
            )
            dataset = json.loads(data)["id"] if data and b'"id"' in data else dataset
        elif kind == 2:
            body, content_type = multipart({"format": "auto"}, "d.jsonl", jsonl(20, tag))
            api.request(
                "POST /api/datasets/{id}/versions",
                "POST",
                f"/api/datasets/{dataset}/versions",
                body,
                {"Content-Type": content_type},
                expect=(201,),
            )
        else:
            run = rnd.choice(fixture["runs"])
            body = json.dumps({"priority": rnd.randint(-100, 100)})
            api.request(
                "POST /api/runs/{id}/priority",
                "POST",
                f"/api/runs/{run}/priority",
                body,
                json_headers,
            )
            warm.set()  # one of each write done: each process's tokenizer is loaded


def pg_connections_sampler(database_url, stop, samples):
    """Connections to the bench database, once a second (the budget, seen from the server)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        while not stop.wait(1.0):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchone()
            samples.append(row[0])


def start_server(env, args):
    log = open(Path(env["FINETUNE_HUB_VAR"]) / "gunicorn.log", "w")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), "-c", "finetune_hub/gunicorn.conf.py"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited ({process.returncode}): see {log.name}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=5)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("gunicorn did not answer /api/health within 120 s")


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def summarize(recorder, seconds):
    endpoints, total, errors = {}, 0, 0
    for endpoint in sorted(recorder.latencies):
        values = sorted(recorder.latencies[endpoint])
        n, e = len(values), sum(recorder.errors[endpoint].values())
        total, errors = total + n, errors + e
        endpoints[endpoint] = {
            "requests": n,
            "errors": e,
            "statuses": dict(recorder.statuses[endpoint]),
            "error_statuses": dict(recorder.errors[endpoint]),
            "retries_on_a_closed_keepalive_connection": recorder.retries[endpoint],
            **{f"p{q}_ms": round(percentile(values, q) * 1000, 1) for q in (50, 95, 99)},
        }
    every = sorted(v for values in recorder.latencies.values() for v in values)
    overall = {
        "requests": total,
        "errors": errors,
        "requests_per_s": round(total / seconds, 1),
        "retries_on_a_closed_keepalive_connection": sum(recorder.retries.values()),
        **{f"p{q}_ms": round(percentile(every, q) * 1000, 1) for q in (50, 95, 99)},
    }
    return overall, endpoints


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "lscpu": lscpu[:10],
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def markdown(overall, endpoints) -> str:
    lines = [
        "| endpoint | requests | errors | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, e in [*endpoints.items(), ("**all**", overall)]:
        lines.append(
            f"| {name} | {e['requests']} | {e['errors']} | "
            f"{e['p50_ms']} | {e['p95_ms']} | {e['p99_ms']} |"
        )
    return "\n".join(lines)


def main():
    args = parse_args()
    env = server_env(args)
    Path(env["FINETUNE_HUB_VAR"]).mkdir(parents=True, exist_ok=True)
    info = machine()
    if args.db == "postgres":
        ensure_database(args.database_url)
    fixture = prepare(env)
    server = start_server(env, args)
    recorder, stop, pg_samples = Recorder(), threading.Event(), []
    warm = [threading.Event() for _ in range(args.writers)]
    threads = [
        threading.Thread(target=reader, args=(fixture, args, recorder, stop), daemon=True)
        for _ in range(args.readers)
    ] + [
        threading.Thread(
            target=writer, args=(i, fixture, args, recorder, stop, warm[i]), daemon=True
        )
        for i in range(args.writers)
    ]
    if args.db == "postgres":
        threads.append(
            threading.Thread(
                target=pg_connections_sampler,
                args=(args.database_url, stop, pg_samples),
                daemon=True,
            )
        )
    try:
        for t in threads:
            t.start()
        # Not measured: the warm-up, and until every writer has done each kind of write once
        # (the first upload in a process loads the tokenizer).
        time.sleep(args.warmup)
        for event in warm:
            event.wait(300)
        recorder.measuring = True
        started = time.monotonic()
        time.sleep(args.duration)
        recorder.measuring = False
        seconds = time.monotonic() - started
        stop.set()
        for t in threads:
            t.join(70)
    finally:
        stop.set()
        server.terminate()
        server.wait(60)
    overall, endpoints = summarize(recorder, seconds)
    result = {
        "command": shlex.join([sys.executable.split("/")[-1], *sys.argv]),
        "db": args.db,
        "readers": args.readers,
        "writers": args.writers,
        "duration_s": round(seconds, 1),
        "server": {"web_workers": capacity.web_workers(), "web_threads": capacity.web_threads()},
        "machine": info,
        "overall": overall,
        "endpoints": endpoints,
    }
    if pg_samples:
        result["postgres_connections"] = {"max": max(pg_samples), "samples": len(pg_samples)}
    out = Path(args.out or ROOT / "bench" / "results" / f"load-{args.db}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(overall, endpoints))
    print(json.dumps({k: result[k] for k in ("db", "overall", "duration_s")}))
    if pg_samples:
        print(f"PostgreSQL connections to the bench database: at most {max(pg_samples)}")
    print(f"written to {out}")
    return 1 if overall["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
