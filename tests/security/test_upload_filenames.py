"""Planting files through an upload's filename: the stored file was named after the client's
filename (datasets/{pk}/v{n}/{name}), so `evil.py` or `../../x.py` chose a name, and an
extension, on the server. A dataset file is stored under its own SHA-256 and the extension of
the syntax it was read as; the client's filename is display text only."""

import hashlib
import re

import pytest

from datasets_app.models import Dataset, DatasetVersion
from tests.support.data import as_csv, examples, jsonl

NAMES = ["../../x.py", "evil.py", "..\\..\\win.py", "a/b/../../../c.sh", ".bashrc", "x.jsonl.py"]


@pytest.fixture
def dataset(team, owner):
    return Dataset.objects.create(team=team, name="d", task="instruction", created_by=owner)


def stored(isolated_artifacts) -> list:
    return [p for p in isolated_artifacts.parent.rglob("*") if p.is_file()]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("syntax", ["jsonl", "csv"])
def test_only_the_content_names_the_stored_file(api, dataset, isolated_artifacts, name, syntax):
    rows = examples("instruction", 5)
    content = (jsonl(rows) if syntax == "jsonl" else as_csv(rows)).encode()
    r = api.upload(f"/api/datasets/{dataset.pk}/versions", content, filename=name)
    assert r.status_code == 201, r.content
    version = DatasetVersion.objects.get(dataset=dataset)
    digest = hashlib.sha256(content).hexdigest()
    assert version.source_path == f"datasets/{dataset.pk}/v1/{digest}.{syntax}"
    assert stored(isolated_artifacts) == [isolated_artifacts / version.source_path]
    assert (isolated_artifacts / version.source_path).read_bytes() == content
    # The client's name is kept to show, as its last part only.
    assert version.source_filename == re.split(r"[/\\]", name)[-1]
    assert r.json()["source_filename"] == version.source_filename
