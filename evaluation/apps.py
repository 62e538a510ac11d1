from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"

    def ready(self):
        # The queue sends the `evaluate` task, and the task runs the queue: it is handed over
        # here so that neither module imports the other.
        from evaluation import queue, tasks

        queue.dispatch_with(tasks.evaluate)
