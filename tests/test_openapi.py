"""The OpenAPI contract: each port's /v1/openapi.json matches the routes its Falcon app really has, and
Schemathesis, fuzzing a live daemon on both ports (mutations with the token), finds no server error and no
response that violates the document."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from daemon.runtime import Runtime
from httpapi.app import create_control_app, create_mds_app
from httpapi.openapi import OPERATIONS, app_routes, document
from tests.support.daemon import LiveDaemon

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings().replace(storage={"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
                                  http={"control_port": 0, "mds_port": 0})
    runtime = Runtime(settings, "all", serve_http=False).start()
    try:
        yield runtime
    finally:
        runtime.shutdown()


def _documented(doc: dict) -> dict[str, set[str]]:
    return {path: set(operations) for path, operations in doc["paths"].items()}


def test_each_document_lists_exactly_the_routes_its_app_has(runtime: Runtime) -> None:
    assert runtime.market_data is not None and runtime.trading is not None
    apps = {
        "mds": create_mds_app(runtime.market_data.cache, runtime),
        "control": create_control_app(runtime, runtime.trading.api, runtime.market_data.cache),
        "control without trading or market": create_control_app(runtime),
    }
    used: set[tuple[str, str]] = set()
    for name, app in apps.items():
        routes = app_routes(app)
        doc = document(app, name, "")
        assert _documented(doc) == routes, name
        used |= {(path, method) for path, methods in routes.items() for method in methods}
    # Nothing described that no app serves (a stale entry would hide a removed route).
    assert {(path, method) for path, ops in OPERATIONS.items() for method in ops} == used


def test_a_route_added_without_an_operation_is_missing_from_the_document(runtime: Runtime) -> None:
    app = create_control_app(runtime)

    class Undocumented:
        def on_get(self, req: object, resp: object) -> None: ...

    app.add_route("/v1/undocumented", Undocumented())
    assert "/v1/undocumented" in app_routes(app)
    assert "/v1/undocumented" not in document(app, "t", "")["paths"]


def test_the_served_documents_are_openapi_3_and_name_the_token(tmp_path: Path) -> None:
    with LiveDaemon(tmp_path) as daemon:
        control = daemon.get("/v1/openapi.json").json()
        mds = daemon.get("/v1/openapi.json", port="mds").json()
    assert control["openapi"].startswith("3.") and mds["openapi"].startswith("3.")
    assert "/v1/trades" in control["paths"] and "/v1/trades" not in mds["paths"]
    assert "/v1/candles/last" in mds["paths"] and "/v1/candles/last" not in control["paths"]
    assert control["paths"]["/v1/control/kill-switch"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in control["paths"]["/v1/risk"]["get"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDaemon]:
    with LiveDaemon(tmp_path_factory.mktemp("fuzz")) as daemon:
        yield daemon


@pytest.mark.slow
@pytest.mark.parametrize("port", ["mds", "control"])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(live: LiveDaemon, port: str,
                                                                     tmp_path: Path) -> None:
    base = live.mds if port == "mds" else live.control
    ARTIFACTS.mkdir(exist_ok=True)
    junit = ARTIFACTS / f"schemathesis-{port}.xml"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{base}/v1/openapi.json",
        # Every check but positive_data_acceptance: a request the schema allows may still be refused for
        # what a schema cannot say (a qty that is no multiple of the lot, an unknown pos_id, the kill switch).
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "25", "--generation-deterministic", "--workers", "1", "--request-timeout", "10",
        "--header", f"Authorization: Bearer {live.token}", "--no-color",
        "--report", "junit", "--report-junit-path", str(junit),
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert " FAILURES " not in result.stdout and " passed" in result.stdout, result.stdout[-4000:]
    assert not [line for line in live.lines if line.get("event") == "HTTP_INTERNAL_ERROR"]
