"""Dashboard pages with the demo data plus 1,000 runs: each page's server time (Django's test
client, the whole request, p95) and its load in Chromium, cold (a new browser context: empty
cache) and warm (the same page again), served by gunicorn as `make serve-prod` runs it.

    python bench/pages.py                 # SQLite in a temporary folder
    python bench/pages.py --runs 1000 --repeats 10

Writes bench/results/pages.json and prints a Markdown table. Chromium is Debian's
(/usr/bin/chromium, `make browser-deps`); Playwright drives it.
"""

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tracking import p95, serving, timed  # noqa: E402

KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm")
PASSWORD = "bench-pass-123"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=1000, help="tracked runs added to the demo data")
    p.add_argument("--steps", type=int, default=200, help="steps a run logs, for each of 4 keys")
    p.add_argument("--repeats", type=int, default=10, help="server-time requests per page")
    p.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    p.add_argument("--out", default=str(ROOT / "bench/results/pages.json"))
    return p.parse_args()


def setup(var: Path) -> None:
    os.environ["FINETUNE_HUB_VAR"] = str(var)
    os.environ["DJANGO_SETTINGS_MODULE"] = "finetune_hub.settings"
    os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("demo_data", verbosity=0)


def populate(n_runs: int, steps: int) -> dict:
    """The demo user, its team, and n_runs tracked runs with 4 curves each: the pages that
    list or chart runs get the load of a team that has used the hub for a while."""
    from django.contrib.auth import get_user_model

    from experiments import metric_store, tracked
    from experiments.models import Experiment, TrainingRun
    from finetune_hub.models import Team

    user = get_user_model().objects.get(username="demo")
    user.set_password(PASSWORD)
    user.save()
    team = Team.objects.get(name="Demo team")
    project = tracked.project_for(team=team, name="sweep", by=user)
    runs = TrainingRun.objects.bulk_create(
        [
            TrainingRun(
                experiment=project,
                source=TrainingRun.Source.TRACKED,
                status=TrainingRun.Status.SUCCEEDED,
                name=f"sweep-{i}",
                params={"lr": 1e-4 * (1 + i % 10), "lora_r": 2 ** (2 + i % 4)},
                tags={"sweep": "a" if i % 2 else "b"},
                created_by=user,
            )
            for i in range(n_runs)
        ],
        batch_size=1000,
    )
    batch = []
    for run in runs:
        for key in KEYS:
            batch += [
                (run.pk, s, key, 2.0 + 1.0 / (1 + s) + (run.pk % 7) * 0.01) for s in range(steps)
            ]
        if len(batch) >= 50_000:
            metric_store.points_ingest(batch)
            batch = []
    metric_store.points_ingest(batch)
    demo = Experiment.objects.get(name="triage-lora-demo")
    version = demo.dataset_version
    return {
        "overview": "/",
        "datasets": "/datasets/",
        "dataset": f"/datasets/{version.dataset_id}/",
        "dataset version": f"/datasets/{version.dataset_id}/v/{version.number}/",
        "experiments": "/experiments/",
        f"experiment ({n_runs:,} runs)": f"/experiments/{project.pk}/",
        f"runs table ({n_runs:,} runs)": "/runs/table/",
        "run page": f"/runs/{runs[0].pk}/",
        "compare 20 runs": "/runs/compare/?ids=" + ",".join(str(r.pk) for r in runs[:20]),
        "queue and workers": "/runs/",
        "evaluations": "/evaluations/",
        "registry": "/registry/",
        "annotation desk": "/admin/datasets/example/",
    }


def server_times(pages: dict, repeats: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client(HTTP_HOST="localhost")
    client.force_login(get_user_model().objects.get(username="demo"))
    out = {}
    for name, url in pages.items():
        first = client.get(url)
        assert first.status_code == 200, (url, first.status_code)
        out[name] = p95(timed(lambda url=url: client.get(url), repeats))
    return out


def browser_times(pages: dict, chromium: str) -> dict:
    """(cold, warm) load-event times in ms, from the Navigation Timing API; the server is
    gunicorn on this process's database."""
    from playwright.sync_api import sync_playwright

    load_ms = "() => performance.getEntriesByType('navigation')[0].loadEventEnd"
    out = {}
    with serving(collect_static=True) as base:
        args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=args, headless=True)
            login = browser.new_context(base_url=base)
            page = login.new_page()
            page.goto("/accounts/login/")
            page.fill("#id_username", "demo")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/")
            state = login.storage_state()
            login.close()
            for name, url in pages.items():
                context = browser.new_context(base_url=base, storage_state=state)
                page = context.new_page()
                page.goto(url, wait_until="load")
                cold = page.evaluate(load_ms)
                page.goto(url, wait_until="load")
                warm = page.evaluate(load_ms)
                out[name] = (round(cold), round(warm))
                context.close()
            browser.close()
    return out


def main():
    args = parse_args()
    var = Path(tempfile.mkdtemp(prefix="fh-pages-"))
    setup(var)
    started = time.perf_counter()
    pages = populate(args.runs, args.steps)
    print(f"populated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    server = server_times(pages, args.repeats)
    browser = browser_times(pages, args.chromium)
    rows = [
        {
            "page": name,
            "url": url.split("?")[0],
            "server_s_p95": round(server[name], 4),
            "chromium_cold_ms": browser[name][0],
            "chromium_warm_ms": browser[name][1],
        }
        for name, url in pages.items()
    ]
    report = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{report['command']}\n{report['machine']}")
    print("| page | server p95 | Chromium cold | Chromium warm |\n| --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['page']} | {r['server_s_p95'] * 1000:.0f} ms | {r['chromium_cold_ms']} ms "
            f"| {r['chromium_warm_ms']} ms |"
        )


if __name__ == "__main__":
    main()
