"""gunicorn's threaded worker with a bound on a silent client.

gthread waits for a connection's first bytes in its poller, but once a thread has taken the
request it reads the rest of the headers and the body with a blocking socket and no timeout:
a client that declares a body and stops sending holds that thread for good, and a few such
clients hold every thread of the server. This worker gives each connection a socket
timeout, WEB_READ_TIMEOUT seconds (default 30) of silence, as nginx's client_header_timeout
and client_body_timeout do: the thread's read then fails, the request is answered 400 (or
dropped) and the thread is free. A client that keeps sending, however slowly, is not cut
off; one that stops receiving the answer is, after the same silence."""

import errno
import os

from gunicorn.workers.gthread import TConn, ThreadWorker

DEFAULT_READ_TIMEOUT_S = 30.0


def read_timeout() -> float:
    return float(os.environ.get("WEB_READ_TIMEOUT") or DEFAULT_READ_TIMEOUT_S)


class BoundedConn(TConn):
    def init(self):
        # Called by the worker thread each time it takes the connection, just after it made
        # the socket blocking (which clears any timeout): set the bound again every time.
        super().init()
        self.sock.settimeout(read_timeout())


class BoundedThreadWorker(ThreadWorker):
    def accept(self, listener):
        """ThreadWorker.accept, with a BoundedConn for the connection."""
        try:
            client_sock, client_addr = listener.accept()
            self.nr_conns += 1
            client_sock.setblocking(True)
            conn = BoundedConn(self.cfg, client_sock, client_addr, listener.getsockname())
            self.enqueue_req(conn)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
