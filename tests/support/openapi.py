"""Every operation of the API, read from its OpenAPI document, so a test over "every route"
covers a route added later without being edited (the contract tests, the query-parameter
check, the security probes and the outsider walk all iterate this one list)."""

from typing import NamedTuple

from finetune_hub.api import api

METHODS = ("get", "post", "put", "patch", "delete")


class Operation(NamedTuple):
    method: str  # upper case
    path: str  # the template, "/api/runs/{run_id}"
    params: dict[str, str]  # path parameter -> its JSON schema type
    spec: dict  # the operation object of the document

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    def query(self, *, required: bool = False) -> list[str]:
        return [
            p["name"]
            for p in self.spec.get("parameters", [])
            if p["in"] == "query" and (p.get("required") or not required)
        ]


def operations(document: dict | None = None) -> list[Operation]:
    """The operations of `document` (the API's own when None), in the document's order."""
    document = api.get_openapi_schema() if document is None else document
    return [
        Operation(
            method.upper(),
            path,
            {
                p["name"]: p["schema"].get("type", "string")
                for p in spec.get("parameters", [])
                if p["in"] == "path"
            },
            spec,
        )
        for path, methods in document["paths"].items()
        for method, spec in methods.items()
        if method in METHODS
    ]


def label(operation: Operation) -> str:
    """A pytest id."""
    return operation.label
