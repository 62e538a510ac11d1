"""An existing database survives the move of Dataset, DatasetVersion and Example into the
datasets app: tests/fixtures/db_before_datasets_app.sqlite3 was filled in the old schema
(demo_data, a trained run, a draft with an annotation, a registered version on an alias,
evaluations with per-sample results, a reviewed comparison; built by
tests/fixtures/build_db_before_datasets_app.py at commit 9bb3639). Today's migrations run on a
copy and every row, link and permission is still there."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests/fixtures/db_before_datasets_app.sqlite3"
TABLES = [
    "experiments_dataset",
    "experiments_datasetversion",
    "experiments_example",
    "experiments_experiment",
    "experiments_trainingrun",
    "experiments_checkpoint",
    "experiments_metricpoint",
    "evaluation_evaluationrun",
    "evaluation_sampleresult",
    "evaluation_comparison",
    "evaluation_reviewpair",
    "evaluation_vote",
    "registry_modelversion",
    "registry_alias",
    "registry_aliasevent",
]

# Read through today's models after the migration: the links the old rows had.
READ_BACK = """
import json
from django.contrib.auth.models import Permission
from datasets_app.models import Dataset, DatasetVersion, Example
from evaluation.models import EvaluationRun, ReviewPair, SampleResult
from experiments.models import Experiment
from registry.models import Alias

version = DatasetVersion.objects.get(number=1)
draft = DatasetVersion.objects.get(status="draft")
edited = draft.examples.exclude(notes="").get()
print(json.dumps({
    "sha256": version.sha256,
    "examples": version.examples.count(),
    "draft_parent": draft.parent_id == version.pk,
    "edited": [edited.fields["output"], edited.notes],
    "experiment_version": Experiment.objects.get().dataset_version_id == version.pk,
    "evaluations_on_version": set(
        EvaluationRun.objects.values_list("dataset_version", flat=True)
    ) == {version.pk},
    "sample_examples_in_version": all(
        s.example.version_id == version.pk for s in SampleResult.objects.select_related("example")
    ),
    "pair_example_split": ReviewPair.objects.get().example.split,
    "production": Alias.objects.get(name="production").version.dataset_version.dataset.name,
    "permissions": sorted(
        Permission.objects.filter(content_type__model="example").values_list(
            "content_type__app_label", "codename"
        )
    ),
}))
"""


def _counts(database: Path) -> dict:
    with sqlite3.connect(database) as connection:
        return {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def _manage(var: Path, *args: str) -> str:
    env = {**os.environ, "FINETUNE_HUB_VAR": str(var)}
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)  # the copied SQLite file, whatever database the suite runs on
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def migrated(tmp_path):
    var = tmp_path / "var"
    var.mkdir()
    database = var / "db.sqlite3"
    shutil.copyfile(FIXTURE, database)
    before = _counts(database)
    with sqlite3.connect(database) as connection:
        old_sha = connection.execute(
            "SELECT sha256 FROM experiments_datasetversion WHERE number = 1"
        ).fetchone()[0]
    output = _manage(var, "migrate", "--noinput")
    assert "Applying datasets.0001_initial... OK" in output
    return var, database, before, old_sha


def test_every_row_and_link_survives_the_move_to_the_datasets_app(migrated):
    var, database, before, old_sha = migrated
    assert _counts(database) == before
    assert before["experiments_example"] == 840 and before["evaluation_sampleresult"] == 10
    state = json.loads(_manage(var, "shell", "-c", READ_BACK).strip().splitlines()[-1])
    assert state == {
        "sha256": old_sha,
        "examples": 420,
        "draft_parent": True,
        "edited": ["billing; high; none", "fixed the priority"],
        "experiment_version": True,
        "evaluations_on_version": True,
        "sample_examples_in_version": True,
        "pair_example_split": "eval",
        "production": "support-ticket-triage",
        # The same permission rows, now under the datasets app (no duplicates, none lost).
        "permissions": [
            ["datasets", "add_example"],
            ["datasets", "change_example"],
            ["datasets", "delete_example"],
            ["datasets", "view_example"],
        ],
    }
    # Nothing is left for a later migration to do.
    _manage(var, "migrate", "--check")
    _manage(var, "makemigrations", "--check", "--dry-run")
