from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"

    def ready(self):
        # The task the queue sends (queue.py): the task runs the queue, so the queue finds it
        # here rather than importing tasks.py.
        from evaluation import tasks

        self.evaluate = tasks.evaluate
