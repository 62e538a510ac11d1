"""/mlflow against `mlflow server`, over HTTP, the same client and the same data, in one run
(`make bench-mlflow`): MLflow 3.12's own client (the environment `make mlflow-compat` builds)
drives both servers, each on a fresh SQLite database with 2 worker processes.

  log_batch    points/s: 40 log_batch calls of 1,000 points into 4 runs, one after the other
  search_tag   ms (median of 20): search_runs over 500 runs with a tag filter
               (tags.group = 'g3'), ordered by a metric, 100 a page
  search_name  ms (median of 20): the commonest MLflow lookup, tags.mlflow.runName = '...'
  history      ms (median of 10): get_metric_history of a 10,000-point metric

    .venv/bin/python bench/mlflow_api.py            # writes bench/results/mlflow_api.json

The client half runs as `<mlflow python> bench/mlflow_api.py --client URI` and prints JSON.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "mlflow-api-bench"
MLFLOW_PYTHON = ROOT / "var" / "mlflow-compat" / "venv" / "bin" / "python"
OUT = ROOT / "bench" / "results" / "mlflow_api.json"
RUNS = 500
GROUPS = 10


def median_ms(fn, repeats: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 1)


def client_half(uri: str) -> dict:
    """The same calls against whichever server `uri` names."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.create_experiment(f"bench-{time.time_ns()}")
    now = int(time.time() * 1000)
    out = {}

    writers = [client.create_run(experiment).info.run_id for _ in range(4)]
    batches = [
        (writers[b % 4], [Metric("loss", 1.0 / (s + 1), now, b * 1000 + s) for s in range(1000)])
        for b in range(40)
    ]
    start = time.perf_counter()
    for run, batch in batches:
        client.log_batch(run, metrics=batch)
    out["log_batch_points_per_s"] = round(40_000 / (time.perf_counter() - start))

    for i in range(RUNS - len(writers)):
        run = client.create_run(
            experiment, run_name=f"trial-{i}", tags={"group": f"g{i % GROUPS}"}
        ).info.run_id
        client.log_batch(
            run,
            metrics=[Metric("loss", (i * 37 % 101) / 100, now, 0)],
            tags=[RunTag("seed", str(i))],
        )
    found = client.search_runs(
        [experiment], "tags.group = 'g3'", order_by=["metrics.loss DESC"], max_results=100
    )
    out["search_tag_rows"] = len(found)
    out["search_tag_ms"] = median_ms(
        lambda: client.search_runs(
            [experiment], "tags.group = 'g3'", order_by=["metrics.loss DESC"], max_results=100
        ),
        20,
    )
    by_name = "tags.mlflow.runName = 'trial-7'"
    out["search_name_rows"] = len(client.search_runs([experiment], by_name))
    out["search_name_ms"] = median_ms(lambda: client.search_runs([experiment], by_name), 20)
    history = client.create_run(experiment).info.run_id
    for b in range(10):
        client.log_batch(
            history, metrics=[Metric("loss", 1.0, now, b * 1000 + s) for s in range(1000)]
        )
    out["history_points"] = len(client.get_metric_history(history, "loss"))
    out["history_ms"] = median_ms(lambda: client.get_metric_history(history, "loss"), 10)
    return out


def wait_for(url: str, process: subprocess.Popen, seconds: int = 120) -> None:
    for _ in range(seconds * 2):
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"the server for {url} did not start") from None
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer")


def drive(uri: str, token: str = "") -> dict:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_TRACKING_TOKEN": token}
    if not token:
        env.pop("MLFLOW_TRACKING_TOKEN")
    done = subprocess.run(
        [str(MLFLOW_PYTHON), __file__, "--client", uri],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"the client failed against {uri}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def hub(port: int) -> dict:
    var = WORK / "hub"
    env = {
        **os.environ,
        "FINETUNE_HUB_VAR": str(var),
        "WEB_BIND": f"127.0.0.1:{port}",
        "WEB_WORKERS": "2",
        "WEB_THREADS": "4",
        "WEB_ACCESS_LOG": "/dev/null",
    }
    env.pop("DATABASE_URL", None)
    py = sys.executable
    subprocess.run(
        [py, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    token = (
        subprocess.run(
            [
                py,
                "manage.py",
                "shell",
                "-c",
                "from django.contrib.auth import get_user_model as g\n"
                "from finetune_hub.auth import token_create\n"
                "from finetune_hub.models import Membership, Role, Team\n"
                "u = g().objects.create_user('bench', password='bench-mlflow-api-1')\n"
                "t = Team.objects.create(name='bench')\n"
                "Membership.objects.create(team=t, user=u, role=Role.ADMIN)\n"
                "print(token_create(user=u, name='bench')[1])",
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    server = subprocess.Popen(
        [str(Path(py).with_name("gunicorn")), "-c", "finetune_hub/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/accounts/login/", server)
        return drive(f"http://127.0.0.1:{port}/mlflow", token)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def mlflow_server(port: int) -> dict:
    folder = WORK / "mlflow"
    server = subprocess.Popen(
        [
            str(MLFLOW_PYTHON),
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder}/mlflow.db",
            "--default-artifact-root",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", server)
        return drive(f"http://127.0.0.1:{port}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=8141)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(client_half(args.client)))
        return
    if not MLFLOW_PYTHON.exists():
        raise SystemExit("run `make mlflow-compat` once first: it builds MLflow 3.12's environment")
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "hub").mkdir(parents=True)
    (WORK / "mlflow").mkdir(parents=True)
    results = {"finetune_hub": hub(args.port), "mlflow_server": mlflow_server(args.port + 1)}
    ours, theirs = results["finetune_hub"], results["mlflow_server"]
    results["ratio"] = {
        "log_batch": round(ours["log_batch_points_per_s"] / theirs["log_batch_points_per_s"], 2),
        **{
            key: round(theirs[f"{key}_ms"] / ours[f"{key}_ms"], 2)
            for key in ("search_tag", "search_name", "history")
        },
    }
    results["command"] = "make bench-mlflow"
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    )
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
