"""Malformed input against every API operation (schemathesis over the live OpenAPI schema).

The attack class: any input the schema allows a client to send, or nearly allows (wrong types,
huge numbers, odd strings), that makes the server answer 5xx or a status the contract does not
document. Each operation is fuzzed by a bounded number of generated requests, as the owner of
a team with real objects, so lookups reach the services and not only the 404 path.

Half the cases carry one hostile value (tests/support/hostile.py: 1e400, -0, "²", 2**63, 2**64,
10,000-character names, Unicode digits, lone surrogates) in one of their path, query or body
fields: those must not be a 5xx (any 4xx is a right answer to them)."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from finetune_hub.auth import token_create
from tests.support.hostile import fuzz_settings, hostile_case
from tests.support.training_helpers import make_experiment, make_version

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 12  # per operation: bounded, so the suite stays fast on 2 cores


@pytest.fixture
def fuzz_token(owner, team, tiny_model):
    make_version(team, owner)
    make_experiment(team, owner, tiny_model)
    return token_create(user=owner, name="fuzz")[1]


def _schema():
    from finetune_hub.api import api

    return schemathesis.openapi.from_dict(api.get_openapi_schema(path_prefix="/api/"))


OPERATIONS = sorted(op.ok().label for op in _schema().get_all_operations())


@pytest.fixture
def wsgi_app():
    # As Django's test Client does: the test's transaction holds the data, so requests must
    # not close the connection when they finish.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_operation_answers_5xx_or_an_undocumented_status(label, wsgi_app, fuzz_token):
    schema = _schema()
    schema.app = wsgi_app
    operation = schema.find_operation_by_label(label)
    headers = {"Authorization": f"Bearer {fuzz_token}"}

    @given(case=operation.as_strategy(), hostile=st.none() | hostile_case())
    @fuzz_settings(EXAMPLES)
    def fuzz(case, hostile):
        if hostile is not None and hostile(case):
            case.call_and_validate(headers=headers, checks=[not_a_server_error])
            return
        # Services validate beyond the schema (a task name, a split, a state), so a
        # schema-valid request may rightly be a 4xx: only 5xx and undocumented statuses fail.
        case.call_and_validate(headers=headers, checks=CHECKS)

    fuzz()
