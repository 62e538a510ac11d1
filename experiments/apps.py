from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"
    verbose_name = "Experiments"

    def ready(self):
        # The task the queue sends (training/queue.py): the task runs the queue's worker side,
        # so the queue finds it here rather than importing tasks.py.
        from experiments import tasks

        self.train_next = tasks.train_next
