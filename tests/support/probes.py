"""Probes shared by the security tests: a path filled with one value for every parameter, and
a request body that counts how much of it the server read (the operations themselves come
from tests/support/openapi.py)."""

import io
import re

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def fill(path: str, params: dict[str, str], *, integer, string: str = "x") -> str:
    """The path with each integer parameter set to `integer` and every other to `string`."""
    return re.sub(
        r"{(\w+)}",
        lambda m: str(integer if params.get(m.group(1)) == "integer" else string),
        path,
    )


class CountingInput(io.BytesIO):
    """A WSGI input stream that counts the bytes read from it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size=-1):
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size=-1):
        line = super().readline(size)
        self.bytes_read += len(line)
        return line
