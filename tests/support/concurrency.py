"""Races between real database connections. On SQLite, IMMEDIATE transactions serialise every
writer, so a race test can only show that the code is correct there, never that a missing row
lock is caught: these tests bite on PostgreSQL (the second pass of `make test`), where the
threads' transactions truly overlap."""

import threading

from django.db import connection


def race(target, argument_lists: list[tuple]) -> list:
    """Calls target(*args) for each args in its own thread and connection, released at once.
    Returns each call's result or the exception it raised, in order; the caller asserts
    which exceptions were expected, so an unexpected one fails the test."""
    barrier = threading.Barrier(len(argument_lists))
    outcomes: list = [None] * len(argument_lists)

    def run(index, args):
        try:
            barrier.wait()
            outcomes[index] = target(*args)
        except Exception as exc:  # noqa: BLE001 - returned to the test
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(i, args)) for i, args in enumerate(argument_lists)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def errors(outcomes: list) -> list[Exception]:
    return [o for o in outcomes if isinstance(o, Exception)]
