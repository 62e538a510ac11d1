"""Huey tasks of the project package: thin wrappers (imports inside, as the HackSoft guide does)."""

from huey import crontab
from huey.contrib.djhuey import on_startup, periodic_task


# A plain periodic task, not db_periodic_task: the sweep reads files, not the database.
@periodic_task(crontab(minute="*/10"))
def remove_leftovers():
    from finetune_hub.sweep import leftovers_remove

    return len(leftovers_remove())


@on_startup()
def remove_leftovers_at_start():
    # A worker that starts often replaces one that was killed: its leftovers go now.
    remove_leftovers.call_local()
