"""MLflow compatibility, measured by MLflow 3.12's own tracking tests (`make mlflow-compat`).

Runs tests/tracking/test_rest_tracking.py and tests/tracking/test_client.py of MLflow's source
tree (../shared/mlflow-peer/mlflow-3.12-tests.tar.gz) twice with the same pytest plugin
(hub_plugin.py, beside the tar):

  hub      against a finetune_hub served by gunicorn on --port, with its own FINETUNE_HUB_VAR,
           one fresh team per test (make_pool.py: an empty namespace, as MLflow's fixtures
           give each test a new server);
  control  against MLflow's own server and store (about 15 minutes on 2 cores; with
           --reuse-control, the last control result on disk is used instead).

and writes bench/results/mlflow_compat.json: the totals, and each applicable test by id with
its group, its outcome in both runs and the hub's error. Needs no network beyond PyPI (the
first run installs mlflow==3.12.0 into its own environment under var/mlflow-compat/).

    .venv/bin/python bench/mlflow_compat.py [--reuse-control] [-k EXPR] [--database-url URL]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER = Path(os.environ.get("MLFLOW_PEER", ROOT.parent / "shared" / "mlflow-peer"))
WORK = ROOT / "var" / "mlflow-compat"
OUT = ROOT / "bench" / "results" / "mlflow_compat.json"
TESTS = ["tests/tracking/test_rest_tracking.py", "tests/tracking/test_client.py"]
PACKAGES = [
    "mlflow==3.12.0",
    "pytest",
    "pytest-timeout",
    "pytest-asyncio",
    "pytest-repeat",
    "psutil",
]

# A test's group, by the first pattern its name contains (what a user does).
GROUPS = [
    ("graphql", "GraphQL (out of scope)"),
    ("prompt", "prompt registry (out of scope)"),
    ("trace", "traces (out of scope)"),
    ("assessment", "traces (out of scope)"),
    ("span", "traces (out of scope)"),
    ("scorer", "scorers (out of scope)"),
    ("evaluation_dataset", "GenAI datasets (out of scope)"),
    ("_rest_tracking", "GenAI datasets (out of scope)"),
    ("dataset_experiment_association", "GenAI datasets (out of scope)"),
    ("logged_model", "logged models"),
    ("log_model", "logged models"),
    ("active_model", "logged models"),
    ("log_outputs", "logged models"),
    ("registered_model", "model registry"),
    ("model_version", "model registry"),
    ("register", "model registry"),
    ("alias", "model registry"),
    ("dataset", "datasets (run inputs)"),
    ("input", "datasets (run inputs)"),
    ("artifact", "artifacts"),
    ("history", "metric history"),
    ("search", "search"),
    ("metric", "metrics"),
    ("param", "params"),
    ("tag", "tags"),
    ("experiment", "experiments"),
    ("run", "runs"),
]
OUT_OF_SCOPE = "(out of scope)"
# An xfail of MLflow's own marking that passes (xpassed) or fails as marked (xfailed) is a
# pass: the test ran and did what MLflow's suite accepts.
PASSED = ("passed", "xfailed", "xpassed")


def group_of(test_id: str) -> str:
    name = test_id.split("::")[-1].lower()
    for pattern, group in GROUPS:
        if pattern in name:
            return group
    return "other"


def sh(*args, **kwargs):
    print("+", " ".join(str(a) for a in args), flush=True)
    return subprocess.run([str(a) for a in args], check=True, **kwargs)


def prepare() -> tuple[Path, Path]:
    src, venv = WORK / "src", WORK / "venv"
    if not (src / "tests" / "tracking" / "test_rest_tracking.py").exists():
        src.mkdir(parents=True, exist_ok=True)
        with tarfile.open(PEER / "mlflow-3.12-tests.tar.gz") as tar:
            tar.extractall(src, filter="data")
    if not (venv / "bin" / "mlflow").exists():
        sh(sys.executable, "-m", "venv", venv)
        sh(venv / "bin" / "pip", "install", "-q", *PACKAGES)
    return src, venv


def hub_env(args) -> dict:
    env = {
        **os.environ,
        "FINETUNE_HUB_VAR": str(WORK / "hub"),
        "FINETUNE_HUB_ENV": "development",
        "WEB_BIND": f"127.0.0.1:{args.port}",
        "WEB_WORKERS": "2",
        "WEB_THREADS": "4",
        "WEB_ACCESS_LOG": str(WORK / "access.log"),
        "DJANGO_SETTINGS_MODULE": "finetune_hub.settings",
    }
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    return env


def start_hub(args) -> subprocess.Popen:
    shutil.rmtree(WORK / "hub", ignore_errors=True)
    (WORK / "hub").mkdir(parents=True)
    env = hub_env(args)
    py = sys.executable
    if args.database_url:
        sh(py, "manage.py", "flush", "--noinput", cwd=ROOT, env=env)
    sh(py, "manage.py", "migrate", "--noinput", "-v", "0", cwd=ROOT, env=env)
    sh(
        py,
        "manage.py",
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model as g; "
        "g().objects.filter(username='mlpeer').exists() or "
        "g().objects.create_user('mlpeer', password='mlpeer-compat-1')",
        cwd=ROOT,
        env=env,
    )
    pool_env = {
        **env,
        "MLPEER_USER": "mlpeer",
        "MLPEER_POOL_SIZE": str(args.pool),
        "MLPEER_OUT": str(WORK),
    }
    with open(PEER / "make_pool.py") as script:
        sh(py, "manage.py", "shell", stdin=script, cwd=ROOT, env=pool_env)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    log = open(WORK / "server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [str(gunicorn), "-c", "finetune_hub/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{args.port}/accounts/login/", timeout=2)
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"the hub did not start: see {WORK / 'server.log'}") from None
            time.sleep(0.5)
    raise SystemExit("the hub did not answer within a minute")


def run_tests(src: Path, venv: Path, out: Path, extra_env: dict, args) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(PEER),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLPEER_RESULTS": str(out),
        **extra_env,
    }
    for name in ("MLPEER_HUB_URL", "MLPEER_HUB_TOKEN", "MLPEER_TEAM_POOL"):
        if name not in extra_env:
            env.pop(name, None)
    for name in ("DATABASE_URL", "FINETUNE_HUB_VAR", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    command = [
        str(venv / "bin" / "python"),
        "-m",
        "pytest",
        "-p",
        "hub_plugin",
        "-p",
        "no:cacheprovider",
        f"--timeout={args.timeout}",
        "-q",
        *TESTS,
    ]
    if args.k:
        command += ["-k", args.k]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=src, env=env, check=False)


BACKENDS = ("sqlalchemy", "hub", "file")


def canonical(test_id: str) -> str | None:
    """A test id without its store parameter: the control runs each test on MLflow's SQL
    store ([sqlalchemy-...]) and file store ([file-...]), the hub run on the hub ([hub-...]
    or none); None for the file store's, which the hub run has no counterpart of."""
    if not test_id.endswith("]"):
        return test_id
    name, params = test_id[:-1].split("[", 1)
    for backend in BACKENDS:
        if params == backend or params.startswith(f"{backend}-") or params.endswith(f"-{backend}"):
            if backend == "file":
                return None
            params = params.removeprefix(backend).removesuffix(backend).strip("-")
            break
    return f"{name}[{params}]" if params else name


def load(path: Path) -> dict:
    with open(path) as f:
        results = json.load(f)["results"]
    return {key: value for test_id, value in results.items() if (key := canonical(test_id))}


def summarize(hub: dict, control: dict, seconds: dict) -> dict:
    tests, totals = {}, {}
    for test_id, result in sorted(hub.items()):
        if result.get("na") or result["outcome"] == "skipped" and "N/A" in result["error"]:
            continue
        group = group_of(test_id)
        theirs = control.get(test_id, {}).get("outcome", "not run")
        entry = {"group": group, "hub": result["outcome"], "control": theirs}
        if result["outcome"] not in PASSED:
            entry["error"] = result.get("error", "")[:600]
        tests[test_id] = entry
        total = totals.setdefault(group, {"applicable": 0, "hub_passed": 0, "control_passed": 0})
        total["applicable"] += 1
        total["hub_passed"] += result["outcome"] in PASSED
        total["control_passed"] += theirs in PASSED
    in_scope = [t for t in tests.values() if OUT_OF_SCOPE not in t["group"]]
    return {
        "suite": "MLflow 3.12 tests/tracking/test_rest_tracking.py + test_client.py",
        "command": "make mlflow-compat",
        "applicable": len(tests),
        "hub_passed": sum(t["hub"] in PASSED for t in tests.values()),
        "control_passed": sum(t["control"] in PASSED for t in tests.values()),
        "in_scope": len(in_scope),
        "in_scope_hub_passed": sum(t["hub"] in PASSED for t in in_scope),
        "in_scope_control_passed": sum(t["control"] in PASSED for t in in_scope),
        "seconds": seconds,
        "groups": dict(sorted(totals.items())),
        "tests": tests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8125)
    parser.add_argument("--pool", type=int, default=400, help="teams made for the hub run")
    parser.add_argument("--timeout", type=int, default=300, help="seconds a test")
    parser.add_argument("--database-url", default="", help="the hub on PostgreSQL")
    parser.add_argument("--reuse-control", action="store_true")
    parser.add_argument("-k", default="", help="only tests matching (pytest -k)")
    args = parser.parse_args()
    src, venv = prepare()
    seconds = {}
    control_file = WORK / "control.json"
    server = start_hub(args)
    try:
        token = (WORK / "token.txt").read_text().strip()
        started = time.monotonic()
        run_tests(
            src,
            venv,
            WORK / "hub.json",
            {
                "MLPEER_HUB_URL": f"http://127.0.0.1:{args.port}/mlflow",
                "MLPEER_HUB_TOKEN": token,
                "MLPEER_TEAM_POOL": str(WORK / "pool.txt"),
            },
            args,
        )
        seconds["hub"] = round(time.monotonic() - started)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    if not args.reuse_control:
        started = time.monotonic()
        run_tests(src, venv, control_file, {}, args)
        seconds["control"] = round(time.monotonic() - started)
    control = load(control_file) if control_file.exists() else {}
    report = summarize(load(WORK / "hub.json"), control, seconds)
    if not args.k:
        OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"hub {report['hub_passed']}/{report['applicable']} "
        f"(in scope {report['in_scope_hub_passed']}/{report['in_scope']}), "
        f"control {report['control_passed']}/{report['applicable']}"
    )
    for group, total in report["groups"].items():
        print(
            f"  {group:34} {total['hub_passed']:3}/{total['applicable']:3}  "
            f"control {total['control_passed']:3}"
        )


if __name__ == "__main__":
    main()
