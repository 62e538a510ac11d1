"""`manage.py run_huey`: Huey's own consumer command, after the model stack is imported in
the main thread (inference/warmup.py says why). The worker's command, so it lives here."""

from huey.contrib.djhuey.management.commands.run_huey import Command as HueyCommand

from inference.warmup import import_model_stack


class Command(HueyCommand):
    def handle(self, *args, **options):
        import_model_stack()
        return super().handle(*args, **options)
