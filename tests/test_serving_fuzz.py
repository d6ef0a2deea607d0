"""Fuzz the service's OpenAPI schema with schemathesis against a real uvicorn on 127.0.0.1 (issue 12): no 500, no
traceback, every response matching the schema. Bounded: ``MAX_EXAMPLES`` per operation (4 operations), a tiny
bundle, a small row and body limit; about 20-40 s on 2 busy cores.

schemathesis' pytest plugin does not run on this pytest, so each operation's strategy is driven by hypothesis
directly; a failing case is shrunk and re-raised by hypothesis as usual.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")  # in the dev extra
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES = 40
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def base_url(table_bundle):
    import uvicorn

    from augment.generator import Generator
    from serving.app import create_app
    from serving.settings import ServeSettings

    app = create_app(ServeSettings(model=str(table_bundle), max_rows=200, max_body_bytes=64 * 1024),
                     generator=Generator.from_path(table_bundle, threads=1))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_every_operation_survives_fuzzing(base_url):
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {"GET /healthz", "GET /v1/model", "POST /v1/generate", "POST /v1/perturb"}
    calls = {op.label: 0 for op in operations}
    for op in operations:
        _fuzz(op, calls)
    assert all(n >= 1 for n in calls.values()), calls


def _fuzz(op, calls: dict) -> None:
    @given(case=op.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True, database=None)
    def fuzz(case):
        calls[op.label] += 1
        response = case.call(timeout=30)
        case.validate_response(response, checks=CHECKS)
        assert "Traceback" not in response.text and 'File "' not in response.text

    fuzz()
