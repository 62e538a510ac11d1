"""Experiment tracking at team scale, on SQLite or PostgreSQL: ingestion through the path the
training process uses, a 500-run comparison, pages of a 10,000-run table and one run's
history, with MLflow's tracking store beside it on the same data when `mlflow` is installed
(a bench-only dependency: `pip install mlflow`).

    python bench/tracking.py --db sqlite
    python bench/tracking.py --db postgres --database-url postgres://postgres@127.0.0.1:5432/trackbench

Server time is measured in-process around Django's test client with a bearer token (the
whole request: auth, query, serialisation). Writes bench/results/tracking-<db>.json (rows:
measurement, backend, finetune_hub, mlflow, unit) and prints a Markdown table.
"""

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/trackbench")
    p.add_argument("--ingest-points", type=int, default=200_000)
    p.add_argument("--compare-runs", type=int, default=500)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--table-runs", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=10, help="timed requests per measurement")
    p.add_argument(
        "--mlflow-python",
        default=None,
        help="a python with mlflow installed; default: this one if it has mlflow; none: skip",
    )
    p.add_argument(
        "--mlflow-runs",
        type=int,
        default=50,
        help="runs MLflow compares (its ingestion runs at about 1,300 points/s: 500 runs of "
        "2,000 points take it 13 minutes on SQLite); its run table gets 20x as many",
    )
    p.add_argument("--mlflow-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="default bench/results/tracking-<db>.json")
    return p.parse_args()


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def fresh_postgres(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process, seconds: float = 120) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}) before answering")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.5)
    raise RuntimeError(f"no answer from {url} in {seconds} s")


@contextlib.contextmanager
def serving(collect_static: bool = False):
    """gunicorn as `make serve-prod` runs it (finetune_hub/gunicorn.conf.py, default workers
    and threads) on this process's database, on a free port; yields its base URL."""
    port = free_port()
    env = {**os.environ, "WEB_BIND": f"127.0.0.1:{port}", "WEB_ACCESS_LOG": "/dev/null"}
    if collect_static:
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "finetune_hub/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/api/health", server)
        yield url
    finally:
        server.terminate()
        server.wait(30)


HTTP_POINTS = 100_000  # 100 batches of 1,000


def http_batches(n_runs: int, run_ids: list, shape) -> list:
    """1,000-point batches (4 keys x 250 steps) spread over the runs, in training order."""
    per_run = HTTP_POINTS // n_runs // len(KEYS)
    batches = []
    for run in run_ids:
        for start in range(0, per_run, 250):
            batch = [
                shape(run, s, key, v)
                for key in KEYS
                for _, s, _, v in walk(0, per_run, key)
                if start <= s < start + 250
            ]
            batches.append((run, batch))
    return batches


def bench_http_ingest(raw_token: str, team_id: int) -> float:
    """Points/s through POST /api/runs/{id}/metrics, 1,000 points a request, one client
    after the other (as one training process sends them), to gunicorn as `make serve-prod`
    runs it (finetune_hub/gunicorn.conf.py, default workers and threads)."""
    from finetune_hub.client import Client

    with serving() as url:
        client = Client(url, raw_token)
        runs = [client.start_run(team=team_id, project="http-bench").id for _ in range(4)]
        batches = http_batches(4, runs, lambda run, s, key, v: {"step": s, "key": key, "value": v})
        client.request("POST", f"/runs/{runs[0]}/metrics", {"points": batches[0][1][:10]})
        start = time.perf_counter()
        for run, batch in batches:
            client.request("POST", f"/runs/{run}/metrics", {"points": batch})
        return sum(len(b) for _, b in batches) / (time.perf_counter() - start)


def setup_django(args, var: Path) -> None:
    os.environ["FINETUNE_HUB_VAR"] = str(var)
    os.environ["DJANGO_SETTINGS_MODULE"] = "finetune_hub.settings"
    os.environ.pop("DATABASE_URL", None)
    if args.db == "postgres":
        fresh_postgres(args.database_url)
        os.environ["DATABASE_URL"] = args.database_url
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def walk(run: int, steps: int, key: str):
    return [(run, s, key, 2.0 + 1.0 / (1 + s) + (run % 7) * 0.01) for s in range(steps)]


def fixtures():
    """A team, a member with a bearer token, and an experiment (a dataset version under it)."""
    from django.contrib.auth import get_user_model

    from datasets_app.models import Dataset
    from datasets_app.services import dataset_version_upload
    from experiments.models import Experiment
    from finetune_hub.auth import token_create
    from finetune_hub.models import Membership, Team

    user = get_user_model().objects.create_user("bench", password="bench-pass-123")
    team = Team.objects.create(name="bench")
    Membership.objects.create(team=team, user=user, role="admin")
    dataset = Dataset.objects.create(team=team, name="d", task="instruction", created_by=user)
    lines = "".join(
        json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(4)
    )
    version = dataset_version_upload(
        dataset=dataset, filename="d.jsonl", by=user, data=lines.encode()
    )
    experiments = [
        Experiment.objects.create(
            team=team,
            name=f"e{r}",
            dataset_version=version,
            base_model="tiny",
            technique="lora",
            hyperparameters={"lora_r": r, "learning_rate": 2e-4 * r},
            created_by=user,
        )
        for r in (4, 8, 16, 32)
    ]
    _, raw = token_create(user=user, name="bench")
    return user, experiments, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def make_runs(experiments, user, n: int):
    from experiments.models import TrainingRun

    return TrainingRun.objects.bulk_create(
        [
            TrainingRun(experiment=experiments[i % len(experiments)], created_by=user)
            for i in range(n)
        ],
        batch_size=2000,
    )


class counting:
    """Counts the SQL statements run inside it."""

    def __enter__(self):
        from django.db import connection

        self.count = 0
        self.hook = connection.execute_wrapper(self._count)
        self.hook.__enter__()
        return self

    def _count(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)

    def __exit__(self, *exc):
        self.hook.__exit__(*exc)

    def __len__(self):
        return self.count


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_finetune_hub(args) -> dict:
    from django.core.signals import request_finished
    from django.db import close_old_connections
    from django.test import Client

    from experiments import metric_store

    # A served request keeps its connection (CONN_MAX_AGE) and so does this process.
    request_finished.disconnect(close_old_connections)
    user, experiments, auth = fixtures()
    client = Client(HTTP_HOST="localhost", **auth)
    results = {}
    results["ingest http"] = bench_http_ingest(
        auth["HTTP_AUTHORIZATION"].removeprefix("Bearer "), experiments[0].team_id
    )

    # Ingestion as the training process does it: a flush of 1,000 points (4 keys) at a time.
    runs = make_runs(experiments, user, 20)
    per_run = args.ingest_points // len(runs) // len(KEYS)
    batches = []
    for run in runs:
        points = [p for key in KEYS for p in walk(run.pk, per_run, key)]
        batches += [points[i : i + 1000] for i in range(0, len(points), 1000)]
    start = time.perf_counter()
    for batch in batches:
        metric_store.points_ingest(batch)
    elapsed = time.perf_counter() - start
    results["ingest"] = sum(len(b) for b in batches) / elapsed

    # A comparison of 500 runs x 4 keys x 500 steps, every page of it.
    compared = make_runs(experiments, user, args.compare_runs)
    for run in compared:
        metric_store.points_ingest([p for key in KEYS for p in walk(run.pk, args.steps, key)])

    first = client.get("/api/runs/compare", {"ids": compared[0].pk, "keys": ",".join(KEYS)})
    assert len(first.json()[0]["metrics"]) == len(KEYS)  # the shape, checked once

    def compare(runs):
        ids = ",".join(str(r.pk) for r in runs)
        page, got = 1, 0
        while got < len(runs):
            response = client.get(
                "/api/runs/compare",
                {"ids": ids, "keys": ",".join(KEYS), "page": page, "limit": 100},
            )
            assert response.status_code == 200, response.content[:300]
            # Server time only: the body is not parsed here (the rows counted by page size).
            got += min(100, len(runs) - got)
            page += 1

    with counting() as queries:
        compare(compared)
    results[f"compare {len(compared)} runs"] = p95(timed(lambda: compare(compared), args.repeats))
    few = compared[: args.mlflow_runs]
    results[f"compare {len(few)} runs"] = p95(timed(lambda: compare(few), args.repeats))
    results["compare queries per page"] = len(queries) / ((len(compared) + 99) // 100)

    # One run's history.
    one = compared[0].pk
    results["history"] = p95(
        timed(lambda: client.get(f"/api/runs/{one}/metrics", {"keys": ",".join(KEYS)}), 20)
    )

    # A 10,000-run table: sorted by a metric, filtered by a hyperparameter, page 3 of 50.
    more = make_runs(experiments, user, args.table_runs - len(compared) - len(runs))
    metric_store.points_ingest([(r.pk, 10, "loss", 1.0 + (r.pk % 97) / 97) for r in more])
    query = {"sort": "-metrics.loss", "filter": "params.lora_r >= 8", "page": 3, "limit": 50}

    def table():
        response = client.get("/api/runs", query)
        assert response.status_code == 200 and len(response.json()) == 50

    with counting() as queries:
        table()
    results[f"list page of {args.table_runs} runs"] = p95(timed(table, 20))
    results["list queries per page"] = len(queries)
    return results


def bench_mlflow(args, folder: Path) -> dict:
    """MLflow's own client on its SQL tracking store, the same data and steps. Runs in the
    interpreter --mlflow-python names (MLflow's dependencies stay out of the project's)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    if args.db == "postgres":
        name = args.database_url.rsplit("/", 1)[1] + "_mlflow"
        url = args.database_url.rsplit("/", 1)[0] + "/" + name
        fresh_postgres(url)
        uri = url.replace("postgres://", "postgresql+psycopg://")
    else:
        uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("bench", artifact_location=str(folder / "artifacts"))
    results = {"ingest http": mlflow_http_ingest(uri, folder)}
    runs = [client.create_run(experiment).info.run_id for _ in range(20)]
    per_run = args.ingest_points // len(runs) // len(KEYS)
    now = int(time.time() * 1000)
    batches = []
    for run in runs:
        points = [Metric(k, v, now, s) for key in KEYS for _, s, k, v in walk(0, per_run, key)]
        batches += [(run, points[i : i + 1000]) for i in range(0, len(points), 1000)]
    start = time.perf_counter()
    for run, batch in batches:
        client.log_batch(run, metrics=batch)
    results["ingest"] = sum(len(b) for _, b in batches) / (time.perf_counter() - start)

    compared = [client.create_run(experiment).info.run_id for _ in range(args.mlflow_runs)]
    for run in compared:
        points = [Metric(k, v, now, s) for key in KEYS for _, s, k, v in walk(0, args.steps, key)]
        for i in range(0, len(points), 1000):
            client.log_batch(run, metrics=points[i : i + 1000])

    def compare():
        for run in compared:
            for key in KEYS:
                client.get_metric_history(run, key)

    results[f"compare {len(compared)} runs"] = p95(timed(compare, max(2, args.repeats // 5)))
    results["history"] = p95(
        timed(lambda: [client.get_metric_history(compared[0], k) for k in KEYS], 20)
    )
    for _ in range(args.mlflow_runs * 20 - len(compared) - len(runs)):
        run = client.create_run(experiment).info.run_id
        client.log_metric(run, "loss", 1.0, step=10)
    results[f"list page of {args.mlflow_runs * 20} runs"] = p95(
        timed(
            lambda: client.search_runs(
                [experiment], order_by=["metrics.loss DESC"], max_results=50
            ),
            20,
        )
    )
    return results


def mlflow_http_ingest(uri: str, folder: Path) -> float:
    """Points/s through `mlflow server`'s REST API (log_batch of 1,000), one client after the
    other, its server on the same store as the rest of MLflow's rows (a fresh experiment)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            uri,
            "--default-artifact-root",
            str(folder / "http-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/health", server)
        client = MlflowClient(tracking_uri=url)
        experiment = client.create_experiment("http-bench")
        runs = [client.create_run(experiment).info.run_id for _ in range(4)]
        now = int(time.time() * 1000)
        batches = http_batches(4, runs, lambda run, s, key, v: Metric(key, v, now, s))
        start = time.perf_counter()
        for run, batch in batches:
            client.log_batch(run, metrics=batch)
        return sum(len(b) for _, b in batches) / (time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait(30)


def run_mlflow(args) -> dict | None:
    python = args.mlflow_python
    if python == "none":
        return None
    if python is None:
        try:
            import mlflow  # noqa: F401

            python = sys.executable
        except ImportError:
            return None
    command = [python, __file__, "--mlflow-only", *sys.argv[1:]]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    args = parse_args()
    folder = Path(tempfile.mkdtemp(prefix=f"fh-track-{args.db}-"))
    if args.mlflow_only:
        print(json.dumps(bench_mlflow(args, folder)))
        return
    theirs = run_mlflow(args)
    setup_django(args, folder / "var")
    ours = bench_finetune_hub(args)
    backend = "postgresql" if args.db == "postgres" else "sqlite"
    units = {
        "ingest": "points/s",
        "ingest http": "points/s",
        "compare queries per page": "queries",
        "list queries per page": "queries",
    }
    rows = [
        {
            "measurement": name,
            "backend": backend,
            "finetune_hub": round(value, 4) if value is not None else None,
            "mlflow": round(theirs[name], 4) if theirs and name in theirs else None,
            "unit": units.get(name, "s (p95)"),
        }
        for name, value in ours.items()
    ]
    rows += [
        {
            "measurement": name,
            "backend": backend,
            "finetune_hub": None,
            "mlflow": value,
            "unit": "s (p95)",
        }
        for name, value in (theirs or {}).items()
        if name not in ours
    ]
    report = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "rows": rows,
    }
    out = Path(args.out or ROOT / f"bench/results/tracking-{args.db}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    if args.out is None:  # both databases' latest runs, side by side
        runs = [json.loads(path.read_text()) for path in sorted(out.parent.glob("tracking-*.json"))]
        combined = {
            "runs": [{k: v for k, v in run.items() if k != "rows"} for run in runs],
            "rows": [row for run in runs for row in run["rows"]],
        }
        (out.parent / "tracking.json").write_text(json.dumps(combined, indent=1) + "\n")
    print(f"\n{report['command']}\n{report['machine']}")
    print(
        "| measurement | backend | finetune_hub | MLflow | unit |\n| --- | --- | --- | --- | --- |"
    )
    for row in rows:
        print(
            f"| {row['measurement']} | {row['backend']} | {row['finetune_hub']} "
            f"| {row['mlflow'] if row['mlflow'] is not None else '–'} | {row['unit']} |"
        )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
