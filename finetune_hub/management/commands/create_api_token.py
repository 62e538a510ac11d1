from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from finetune_hub.auth import token_create


class Command(BaseCommand):
    help = "Creates an API token for a user and prints it (as the last word) once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")

    def handle(self, *args, username, name, **options):
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {username!r}")
        _, raw = token_create(user=user, name=name)
        self.stdout.write(f"Token for {username} (shown once): {raw}")
