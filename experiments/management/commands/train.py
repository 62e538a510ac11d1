"""`python manage.py train <experiment>`: the worker's path, in the foreground, with a
progress bar, for people who live in a terminal."""

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from experiments.models import Experiment, TrainingRun
from experiments.services import run_enqueue
from experiments.training.runner import train_next_run
from experiments.workers import worker_heartbeat


class Command(BaseCommand):
    help = "Trains an experiment (id or name) in the foreground, or a queued run with --run."

    def add_arguments(self, parser):
        parser.add_argument("experiment", nargs="?")
        parser.add_argument("--run", type=int, help="train this queued run instead of a new one")
        parser.add_argument("--priority", type=int, default=0)

    def handle(self, *args, experiment=None, run=None, priority=0, **options):
        if run is None:
            run = self._enqueue(experiment, priority).pk
        bar = tqdm(total=None, unit="step", desc=f"run {run}")

        def show(current: TrainingRun) -> None:
            bar.total = current.total_steps or None
            bar.n = current.step
            bar.set_postfix_str(current.status)
            bar.refresh()

        result = train_next_run(run_id=run, on_poll=show)
        bar.close()
        if result is None:
            raise CommandError(f"Run {run} is not queued")
        self.stdout.write(f"Run {result.pk}: {result.status} at step {result.step}")
        if result.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(result.error or result.status)
        self.stdout.write(f"Output: {result.output_path}")

    def _enqueue(self, ref, priority) -> TrainingRun:
        if not ref:
            raise CommandError("Name an experiment (id or name) or a queued --run")
        lookup = {"pk": int(ref)} if ref.isdigit() else {"name": ref}
        experiment = Experiment.objects.filter(**lookup).first()
        if experiment is None:
            raise CommandError(f"No experiment {ref!r}")
        worker_heartbeat()  # this process is the worker that will train it
        return run_enqueue(
            experiment=experiment, by=experiment.created_by, priority=priority, dispatch=False
        )
