"""System checks run by `manage.py check`, migrate, runserver and gunicorn's start
(finetune_hub/gunicorn.conf.py)."""

from django.conf import settings
from django.core.checks import Error, Warning, register

from finetune_hub.capacity import ConnectionBudget


def connection_budget() -> ConnectionBudget:
    return ConnectionBudget(
        web_workers=settings.WEB_WORKERS,
        web_threads=settings.WEB_THREADS,
        pooling=settings.DB_POOLING,
        pool_min=settings.DB_POOL["min_size"],
        pool_max=settings.DB_POOL["max_size"],
        huey_processes=settings.HUEY_PROCESSES,
        huey_workers=settings.HUEY["consumer"]["workers"],
        limit=settings.DB_MAX_CONNECTIONS,
    )


@register()
def check_connection_budget(app_configs, **kwargs):
    """SQLite opens a file, not a server connection: only PostgreSQL has a budget."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return []
    budget = connection_budget()
    found = [
        Error(
            problem,
            hint="Lower WEB_WORKERS, WEB_THREADS or DB_POOL_MAX_SIZE, or raise "
            "DB_MAX_CONNECTIONS to this host's share of PostgreSQL's max_connections.",
            id="finetune_hub.E001",
        )
        for problem in budget.problems()
    ]
    if settings.DB_POOLING == "django" and budget.pool_max < budget.web_threads:
        found.append(
            Warning(
                f"DB_POOL_MAX_SIZE={budget.pool_max} is below WEB_THREADS={budget.web_threads}: "
                "busy threads wait DB_POOL_TIMEOUT for a connection, then answer 503.",
                id="finetune_hub.W001",
            )
        )
    return found
