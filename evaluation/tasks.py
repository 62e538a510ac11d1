from huey.contrib.djhuey import db_task


@db_task()
def evaluate(evaluation_id: int):
    from evaluation.services import evaluation_execute

    evaluation_execute(evaluation_id=evaluation_id)
