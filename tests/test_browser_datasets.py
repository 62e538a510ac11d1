import json

import pytest

from datasets_app.models import DatasetVersion
from tests.support.browser import log_in, shot
from tests.support.data import examples, jsonl

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_upload_a_dataset_and_see_its_errors_and_versions(page, owner, tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(jsonl(examples("instruction")))
    rows = examples("instruction", 4)
    rows[2] = {"instruction": "missing output"}
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))

    log_in(page, "owner", "owner-pass-123")
    page.click("text=Datasets")
    page.click("text=New dataset")
    page.fill("#name", "support")
    page.select_option("#task", "instruction")
    page.click("button:has-text('Create dataset')")
    page.wait_for_selector("h1:has-text('support')")

    page.set_input_files("#file", str(bad))
    page.click("button:has-text('Validate and upload')")
    alert = page.locator("[role=alert]")
    assert "1 problem on 1 line" in alert.inner_text()
    assert "Missing field" in alert.locator("tr", has_text="output").inner_text()
    assert not DatasetVersion.objects.exists()

    page.set_input_files("#file", str(good))
    page.click("button:has-text('Validate and upload')")
    page.wait_for_url("**/v/1/")
    assert page.locator(".stat", has_text="Examples").inner_text().endswith("120")
    page.click(".filters a:text-is('eval')")
    page.wait_for_url("**split=eval**")
    rows = page.locator("table tr").count() - 1
    version = DatasetVersion.objects.get(number=1)
    assert rows == version.counts["eval"]
    shot(page, "dataset-version-upload")
