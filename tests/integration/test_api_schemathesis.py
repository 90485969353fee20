"""Property-based tests of the DPI API from its own OpenAPI document (schemathesis).

Every generated request must get no 5xx, a documented status and content
type, and a body matching the documented schema; schema-violating requests
must be refused. The one check left out is "every schema-valid request is
accepted": the API validates more than JSON Schema can say (a GLN's check
digit, a MedReg code, a page cursor), and answers those with a 400.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from myhug.api.throttle import TokenThrottle
from myhug.components import Components
from myhug.directory.service import DpiCredentials
from myhug.web import create_app
from tests.conftest import Directory


@pytest.fixture
def api_schema(gateway: Components, dpi: DpiCredentials, directory: Directory,  # type: ignore[no-untyped-def]
               monkeypatch: pytest.MonkeyPatch):
    # Its checks send requests without a token by the dozen from one address: not a guesser to throttle.
    monkeypatch.setattr(TokenThrottle, "MAX_FAILURES", 10**9)
    doctor = directory.hosted(consents=("P-1001",))
    directory.hin(consents=("P-1001",))
    app = create_app(gateway)
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    schema.config.headers = {"Authorization": f"Bearer {dpi.api_token}"}  # type: ignore[attr-defined]
    del doctor
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(headers={"Authorization": case.operation.schema.config.headers["Authorization"]},
                           excluded_checks=[positive_data_acceptance])
