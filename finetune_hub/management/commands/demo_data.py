"""Loads the demo: a team, a user whose password is printed once, and the demo dataset.
Safe to run again: what exists is kept and no password is reset or printed twice."""

import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from datasets_app.models import Dataset
from datasets_app.services import dataset_create, dataset_version_upload
from experiments.models import Experiment
from experiments.services import experiment_create
from finetune_hub.models import Membership, Role, Team

DEMO_FILE = Path(__file__).resolve().parents[3] / "datasets_app/fixtures/demo/support_tickets.jsonl"
USERNAME, TEAM, DATASET = "demo", "Demo team", "support-ticket-triage"
EXPERIMENT = "triage-lora-demo"
# About 5 minutes on a 2-core CPU: enough LoRA steps for SmolLM2-135M to learn the format.
DEMO_HYPERPARAMETERS = {
    "max_steps": 45,
    "per_device_train_batch_size": 8,
    "learning_rate": 3e-4,
    "warmup_ratio": 0.05,
    "max_length": 256,
    "lora_r": 16,
    "lora_alpha": 32,
    "eval_steps": 15,
    "save_steps": 15,
    "logging_steps": 2,
}


class Command(BaseCommand):
    help = "Creates the demo team, user and dataset (idempotent)."

    @transaction.atomic  # a failed load leaves no user whose password was never shown
    def handle(self, *args, **options):
        user, password = self._user()
        team, _ = Team.objects.get_or_create(name=TEAM)
        Membership.objects.get_or_create(team=team, user=user, defaults={"role": Role.ADMIN})
        version = self._dataset(team, user)
        self._experiment(team, user, version)
        if password:
            self.stdout.write(
                self.style.SUCCESS(
                    f"\n  Log in at http://127.0.0.1:8000 as {USERNAME} / {password}\n"
                    "  (printed once; `python manage.py changepassword demo` sets a new one)\n"
                )
            )
        else:
            self.stdout.write(f"Demo data present; log in as {USERNAME} with your password.")

    def _user(self):
        User = get_user_model()
        user = User.objects.filter(username=USERNAME).first()
        if user:
            return user, None
        password = secrets.token_urlsafe(12)
        # Staff, so the demo user reaches the annotation desk in the admin.
        user = User.objects.create_user(
            USERNAME, password=password, is_staff=True, is_superuser=True
        )
        return user, password

    def _dataset(self, team, user):
        if dataset := Dataset.objects.filter(team=team, name=DATASET).first():
            return dataset.versions.filter(number=1).first()
        dataset = dataset_create(
            team=team,
            name=DATASET,
            task="instruction",
            by=user,
            description="Customer messages triaged into a one-line ticket "
            "(category; priority; order). The base model does not follow the format; "
            "a few minutes of LoRA teach it.",
        )
        version = dataset_version_upload(
            dataset=dataset,
            filename=DEMO_FILE.name,
            data=DEMO_FILE.read_bytes(),
            by=user,
            max_length=512,
            message="Demo data written for finetune_hub",
        )
        self.stdout.write(f"Demo dataset {dataset.name} v{version.number}: {version.counts}")
        return version

    def _experiment(self, team, user, version):
        if version is None or Experiment.objects.filter(team=team, name=EXPERIMENT).exists():
            return
        experiment = experiment_create(
            team=team,
            name=EXPERIMENT,
            dataset_version=version,
            base_model="embedded",
            technique="lora",
            hyperparameters=DEMO_HYPERPARAMETERS,
            by=user,
            notes="Queue a run: about 5 minutes on 2 CPU cores. Watch the eval loss fall from "
            "the base model's (step 0).",
        )
        self.stdout.write(f"Demo experiment {experiment.name}: open it and queue a run")
