"""Fuzz every route of the deployed API from its own OpenAPI schema (schemathesis): whatever hypothesis
generates (valid, invalid, edge-case bodies, query strings and headers), the answer is never a 5xx, and the
service answers normally afterwards."""

from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EXAMPLES_PER_ROUTE = 60


@pytest.fixture(scope="session")
def api_schema(deployed, auth_headers):
    return schemathesis.openapi.from_url(f"{deployed}/openapi.json", headers=auth_headers)


def test_no_generated_request_gets_a_server_error(api_schema, auth_headers):
    # schemathesis' own pytest plugin does not load under this pytest, so each route's strategy is driven here.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/faq/match", "/score", "/images/classify", "/readyz", "/version"}
    sent = Counter()
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_ROUTE, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy())
        def fuzz(case):
            response = case.call(headers=auth_headers, timeout=60)
            sent[case.path, response.status_code] += 1
            assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text[:500])

        fuzz()
    print("fuzzed (route, status) -> requests:", dict(sent))
    assert sum(sent.values()) >= 3 * EXAMPLES_PER_ROUTE


def test_still_serving_after_the_fuzzing(deployed, auth_headers):
    response = httpx.post(f"{deployed}/faq/match", json={"question": "loop over an array"}, headers=auth_headers)
    assert response.status_code == 200
