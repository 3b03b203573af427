"""Property-based requests generated from the server's own OpenAPI document: whatever a
client sends that the document allows (and much that it does not), the reply is never a
5xx. Runs against a real server process, with a bounded number of examples per route."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from store import protocol
from tests.integration.server_process import ServerProcess

EXAMPLES_PER_ROUTE = 25


@dataclass(frozen=True)
class Live:
    url: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    server = ServerProcess(data_dir).start()
    try:
        headers = protocol.request_headers()
        account = {"username": "fuzz", "email": "fuzz@example.com", "password": "x" * 12}
        httpx.post(f"{server.url}{protocol.REGISTER.template}", json=account, headers=headers)
        login = httpx.post(
            f"{server.url}{protocol.LOGIN.template}",
            json={"username": "fuzz", "password": "x" * 12, "device_name": "fuzzer"},
            headers=headers,
        ).json()
        yield Live(server.url, protocol.request_headers(login["token"]))
    finally:
        server.stop()


def test_no_request_gets_a_server_error(live: Live) -> None:
    # Schemathesis' pytest plugin does not load under this pytest; its Python API does.
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema fails here
        if operation.path == protocol.EVENTS.template:
            continue  # the event stream never ends by itself; tests/integration covers it

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_ROUTE,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def call(case: schemathesis.Case[Any]) -> None:
            response = case.call(base_url=live.url, headers=live.headers, timeout=30)
            case.validate_response(response, checks=[not_a_server_error])

        call()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) == len(protocol.ROUTES) - 1, checked
