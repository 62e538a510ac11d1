"""Probes shared by the security tests: every operation of the API, read from its OpenAPI
document (so a test over "every route" covers a route added later without being edited), and
a request body that counts how much of it the server read."""

import io
import re

from finetune_hub.api import api

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def operations() -> list[tuple[str, str, dict[str, str]]]:
    """(method, path template, {path parameter: its JSON schema type}) for each operation."""
    out = []
    for path, ops in api.get_openapi_schema()["paths"].items():
        for method, op in ops.items():
            params = {
                p["name"]: p["schema"].get("type", "string")
                for p in op.get("parameters", [])
                if p["in"] == "path"
            }
            out.append((method.upper(), path, params))
    return out


def fill(path: str, params: dict[str, str], *, integer, string: str = "x") -> str:
    """The path with each integer parameter set to `integer` and every other to `string`."""
    return re.sub(
        r"{(\w+)}",
        lambda m: str(integer if params.get(m.group(1)) == "integer" else string),
        path,
    )


def label(operation) -> str:
    return f"{operation[0]} {operation[1]}"


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
