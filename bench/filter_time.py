"""How long a filter of 4,000 characters takes to answer (issue 29: the filter language reads
in linear time): GET /api/runs and MLflow's runs/search, each with a filter of 4,000 spaces,
one of `metrics.loss = 1` + spaces + `x`, one with an open quote after the spaces, and one
of 1 MB (refused by the cap before it is read). Django's test client, the whole request, on
SQLite with a team of 50 runs; median and max of --repeats requests.

    python bench/filter_time.py
    python bench/filter_time.py --repeats 50

Prints a Markdown table (milliseconds)."""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FILTERS = {
    "4,000 spaces": " " * 4000,
    "loss = 1, spaces, x": "metrics.loss = 1" + " " * (4000 - 18) + "x",
    "loss = 1, spaces, open quote": "metrics.loss = 1" + " " * (4000 - 18) + "'",
    "1 MB (over the cap)": "metrics.loss = 1 and " * 50_000,
}


def setup(var: Path):
    os.environ["FINETUNE_HUB_VAR"] = str(var)
    os.environ["DJANGO_SETTINGS_MODULE"] = "finetune_hub.settings"
    os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from experiments import tracked
    from finetune_hub.auth import token_create
    from finetune_hub.models import Membership, Role, Team

    user = get_user_model().objects.create_user("bench", password="bench-pass-123")
    team = Team.objects.create(name="bench")
    Membership.objects.create(team=team, user=user, role=Role.ADMIN)
    project = tracked.project_for(team=team, name="p", by=user)
    for i in range(50):
        run = tracked.run_start(experiment=project, by=user, name=f"r{i}")
        tracked.points_log(run=run, points=[(0, "loss", 1.0 / (i + 1), None)], by=user)
    return token_create(user=user, name="bench")[1]


def timed(call, repeats: int) -> tuple[float, float, int]:
    call()  # warm: the first request of a process loads the URLs and the views
    times, status = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        status = call().status_code
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), status


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as var:
        token = setup(Path(var))
        from django.test import Client
        from django.test.utils import setup_test_environment

        setup_test_environment()  # the test client's host, as the tests have it

        client, auth = Client(), {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        print(
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, SQLite, {args.repeats} requests each\n"
        )
        print(
            "| filter | GET /api/runs ms (median / max, status) "
            "| /mlflow runs/search ms (median / max, status) |"
        )
        print("| --- | --- | --- |")
        for name, text in FILTERS.items():
            api = timed(lambda t=text: client.get("/api/runs", {"filter": t}, **auth), args.repeats)
            mlflow = timed(
                lambda t=text: client.post(
                    "/mlflow/api/2.0/mlflow/runs/search",
                    {"filter": t},
                    content_type="application/json",
                    **auth,
                ),
                args.repeats,
            )
            print(
                f"| {name} | {api[0]:.1f} / {api[1]:.1f} ({api[2]}) "
                f"| {mlflow[0]:.1f} / {mlflow[1]:.1f} ({mlflow[2]}) |"
            )


if __name__ == "__main__":
    main()
