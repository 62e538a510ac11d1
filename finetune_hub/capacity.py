"""How many database connections one host may open, from the web server's size and the pool.

PostgreSQL refuses clients past its max_connections (100 by default) with "too many clients".
runserver starts a thread per request, and with persistent connections each thread kept its
own: 50 readers and 4 writers turned 735 of 6,251 requests into 500s. So every process is
bounded (gunicorn's workers x threads, Django's psycopg pool in each process) and the sum must
fit DB_MAX_CONNECTIONS, this host's share of the server's max_connections.

No Django import here: gunicorn's configuration file reads the same defaults before Django
is set up.
"""

import os
from dataclasses import dataclass

DEFAULT_WEB_WORKERS = 2
DEFAULT_WEB_THREADS = 8
# PostgreSQL's default max_connections is 100, 3 of them reserved for superusers; the rest
# of the margin is for migrations, psql, backups and monitoring.
DEFAULT_DB_MAX_CONNECTIONS = 80


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def web_workers() -> int:
    return env_int("WEB_WORKERS", DEFAULT_WEB_WORKERS)


def web_threads() -> int:
    return env_int("WEB_THREADS", DEFAULT_WEB_THREADS)


@dataclass(frozen=True)
class ConnectionBudget:
    """The most connections this host's processes can hold at once.

    pooling is "django" (psycopg pool in each process, at most pool_max connections, and
    never fewer than pool_min once opened) or "pgbouncer" (one connection per thread that
    touches the database, counted against pgbouncer's client limit).
    """

    web_workers: int
    web_threads: int
    pooling: str
    pool_min: int
    pool_max: int
    huey_processes: int
    huey_workers: int
    limit: int

    def _process(self, threads: int) -> int:
        if self.pooling == "django":
            return max(self.pool_min, min(self.pool_max, threads))
        return threads

    @property
    def web(self) -> int:
        return self.web_workers * self._process(self.web_threads)

    @property
    def workers(self) -> int:
        # A Huey process: its worker threads and the heartbeat thread; each worker thread may
        # supervise one training process, which holds a connection of its own.
        consumer = self._process(self.huey_workers + 1)
        return self.huey_processes * (consumer + self.huey_workers * self._process(1))

    @property
    def total(self) -> int:
        return self.web + self.workers

    def problems(self) -> list[str]:
        found = []
        if self.total > self.limit:
            found.append(
                f"Up to {self.total} database connections ({self.web_workers} web workers x "
                f"{self._process(self.web_threads)} + {self.workers} for {self.huey_processes} "
                f"Huey process(es)) exceed DB_MAX_CONNECTIONS={self.limit}"
            )
        if self.pooling == "django" and self.pool_min > self.pool_max:
            found.append(f"DB_POOL_MIN_SIZE={self.pool_min} exceeds DB_POOL_MAX_SIZE")
        return found
