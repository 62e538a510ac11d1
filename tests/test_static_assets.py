"""The dashboard's static files: the small plotly bundle (not the 4.8 MB full one), cached
for good by the browser because its version is in its name, and compressed when collected
for production."""

from pathlib import Path

from django.conf import settings
from django.core.management import call_command

VENDOR = Path(settings.BASE_DIR) / "finetune_hub" / "static" / "vendor"
BUNDLE = "vendor/plotly-basic-4.1.1.min.js"


def test_pages_load_the_basic_plotly_bundle(browser_client, api, team):
    run = api.post("/api/runs", {"team": team.pk, "project": "p"}).json()
    page = browser_client.get(f"/runs/{run['id']}/").content.decode()
    assert f"/static/{BUNDLE}" in page and "plotly.min.js" not in page
    assert (VENDOR / Path(BUNDLE).name).stat().st_size < 1_500_000


def test_a_versioned_vendor_file_is_cached_for_good_and_an_own_file_is_not(client):
    bundle = client.get(f"/static/{BUNDLE}")
    assert bundle.status_code == 200
    assert "immutable" in bundle["Cache-Control"] and "max-age=315360000" in bundle["Cache-Control"]
    own = client.get("/static/finetune_hub/run.js")
    assert own.status_code == 200 and "immutable" not in own.get("Cache-Control", "")


def test_collected_files_are_compressed(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", "--noinput", verbosity=0)
    collected = settings.STATIC_ROOT / BUNDLE
    gz = collected.with_name(collected.name + ".gz")
    assert gz.exists() and gz.stat().st_size < collected.stat().st_size / 3
