"""gunicorn's configuration (`make serve-prod`: gunicorn -c finetune_hub/gunicorn.conf.py).

A fixed number of processes (WEB_WORKERS), each with a fixed number of request threads
(WEB_THREADS): unlike runserver, a burst of clients queues instead of starting a thread, and
a database connection, each. Idle keep-alive connections wait in the worker's poller, not in
a thread, and a client that stops sending a request loses its thread after WEB_READ_TIMEOUT
seconds. The connection budget these numbers imply is checked before any worker starts.
"""

import os

from finetune_hub import capacity

wsgi_app = "finetune_hub.wsgi:application"
bind = os.environ.get("WEB_BIND", "127.0.0.1:8000")
# gthread, with a socket timeout on each connection (finetune_hub/web_worker.py): a client
# silent for WEB_READ_TIMEOUT seconds while sending its headers or body loses its thread.
worker_class = "finetune_hub.web_worker.BoundedThreadWorker"
workers = capacity.web_workers()
threads = capacity.web_threads()
keepalive = 5
# gthread's timeout watches the worker's main loop, not a request: a slow generation in a
# thread does not get its worker killed.
timeout = 60
graceful_timeout = 30
# Recycle workers now and then, staggered, so a slow leak cannot grow without bound.
max_requests = 5000
max_requests_jitter = 500
# Each worker loads the WSGI app after the fork (on_starting below has already imported the
# code): a connection pool opened in the master would be shared by every child.
preload_app = False
accesslog = os.environ.get("WEB_ACCESS_LOG", "-")
errorlog = "-"
control_socket_disable = True  # several servers on one host would share its one path
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"  # heartbeat files off a possibly slow disk


def on_starting(server):
    """Refuses to start when workers x threads (from this file or the command line) could
    open more database connections than DB_MAX_CONNECTIONS, then loads Django and the URL
    configuration once here, so the workers fork ready instead of each importing torch on its
    first request. The workers inherit the numbers through the environment, so their settings
    agree. (`make serve-prod` runs every other check first with `manage.py check --deploy`.)"""
    os.environ["WEB_WORKERS"] = str(server.cfg.workers)
    os.environ["WEB_THREADS"] = str(server.cfg.threads)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_hub.settings")

    from finetune_hub.checks import check_connection_budget

    if errors := [m for m in check_connection_budget(None) if m.is_serious()]:
        raise RuntimeError("configuration refused: " + "; ".join(m.msg for m in errors))

    import django
    from django.db import connections
    from django.urls import get_resolver

    django.setup()
    get_resolver().url_patterns  # noqa: B018 (imports every view module)
    # transformers imports its classes on first use, and that import is not thread-safe:
    # three threads uploading at once answered 500 "cannot import name 'AutoTokenizer'".
    from inference.warmup import import_model_stack

    import_model_stack()
    # A web-only host has no worker to sweep its own upload folder (finetune_hub/sweep.py).
    from finetune_hub.sweep import leftovers_remove

    leftovers_remove()
    # Loading opens no connection; were one opened, no child may inherit its socket.
    connections.close_all()
