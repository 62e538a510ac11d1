"""Playwright driving Debian's Chromium (Playwright cannot download its own browser here)."""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_available() -> bool:
    return bool(shutil.which(CHROMIUM))


@pytest.fixture
def page(live_server, monkeypatch):
    if not chromium_available():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (make browser-deps installs it)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    # Playwright runs an event loop in this thread; the ORM calls the tests make are safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(base_url=live_server.url)
        page = context.new_page()
        page.set_default_timeout(15000)
        yield page
        browser.close()
        # ORM calls made while Playwright's loop runs use connections of their own context;
        # close them here, in that context, or PostgreSQL keeps a session open.
        from django.db import connections

        connections.close_all()


def log_in(page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def shot(page, name: str) -> Path:
    """A full-page screenshot under the pass's state folder (var/test-sqlite/screenshots/
    under `make test`), for a reviewer to look at."""
    from django.conf import settings

    shots = settings.VAR_DIR / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
