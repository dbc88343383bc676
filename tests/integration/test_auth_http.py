"""Authentication on the real application: keys from the environment, tokens from `serve-app token`."""

import subprocess
import sys

import jwt
import pytest

from serve_app.auth import mint_token
from tests.integration.conftest import API_KEYS, JWT_SECRET

pytestmark = pytest.mark.integration
QUESTION = {"question": "How do I clone an object in JavaScript?"}


@pytest.mark.parametrize("path", ["/faq/match", "/score", "/images/classify"])
def test_without_credentials_every_model_route_is_401_with_a_challenge(serve_apps, path):
    with serve_apps.client(api_key=None) as anonymous:
        response = anonymous.post(path, json=QUESTION)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["type"] == "unauthorized"


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/version"])
def test_docs_and_version_are_closed_too(serve_apps, path):
    with serve_apps.client(api_key=None) as anonymous:
        assert anonymous.get(path).status_code == 401


def test_health_probes_stay_open(serve_apps):
    with serve_apps.client(api_key=None) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}  # no devices, threads, counters or load errors for strangers
    with serve_apps.client("/broken", api_key=None) as anonymous:
        assert anonymous.get("/readyz").json() == {"status": "not_ready"}


def test_a_token_living_longer_than_a_day_is_refused(serve_apps):
    claims = jwt.decode(
        mint_token(JWT_SECRET, "notebook", ttl_s=60), JWT_SECRET, algorithms=["HS256"], audience="serve-app"
    )
    ten_years = jwt.encode({**claims, "exp": claims["iat"] + 10 * 365 * 86_400}, JWT_SECRET, algorithm="HS256")
    with serve_apps.client(api_key=ten_years) as http:
        response = http.post("/faq/match", json=QUESTION)
    assert response.status_code == 401
    assert "over the limit of 86400 s" in response.json()["error"]["message"]
    without_iat = jwt.encode({k: v for k, v in claims.items() if k != "iat"}, JWT_SECRET, algorithm="HS256")
    with serve_apps.client(api_key=without_iat) as http:
        response = http.post("/faq/match", json=QUESTION)
    assert response.status_code == 401 and response.json()["error"]["message"] == "token has no 'iat' claim"


def test_the_cli_refuses_to_mint_a_token_the_ingress_would_refuse():
    command = [sys.executable, "-m", "serve_app.cli", "token", "--subject", "notebook", "--ttl-s", "864000"]
    minted = subprocess.run(command, env={"SERVE_APP_JWT_SECRET": JWT_SECRET}, capture_output=True, text=True)
    assert minted.returncode == 2 and minted.stdout == ""
    assert "auth.max_token_lifetime_s" in minted.stderr and "Traceback" not in minted.stderr


def test_a_wrong_key_is_refused_and_not_echoed(serve_apps):
    with serve_apps.client(api_key="not-a-key-of-ours") as stranger:
        response = stranger.post("/faq/match", json=QUESTION)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "not-a-key-of-ours" not in response.text


def test_primary_and_secondary_keys_both_work(serve_apps):
    for key in API_KEYS:
        with serve_apps.client(api_key=key) as http:
            assert http.post("/faq/match", json=QUESTION).status_code == 200


def test_a_token_from_the_cli_works_until_it_expires(serve_apps):
    command = [sys.executable, "-m", "serve_app.cli", "token", "--subject", "notebook", "--ttl-s", "600"]
    minted = subprocess.run(command, env={"SERVE_APP_JWT_SECRET": JWT_SECRET}, capture_output=True, text=True)
    assert minted.returncode == 0, minted.stderr
    with serve_apps.client(api_key=minted.stdout.strip()) as http:
        assert http.post("/faq/match", json=QUESTION).status_code == 200
    # The same claims with an expiry a minute in the past, signed with the right secret.
    claims = jwt.decode(
        mint_token(JWT_SECRET, "notebook", ttl_s=1), JWT_SECRET, algorithms=["HS256"], audience="serve-app"
    )
    stale = jwt.encode({**claims, "exp": claims["iat"] - 60}, JWT_SECRET, algorithm="HS256")
    with serve_apps.client(api_key=stale) as http:
        response = http.post("/faq/match", json=QUESTION)
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_a_token_signed_with_another_secret_is_refused(serve_apps):
    forged = mint_token("someone-elses-secret-0123456789abcdef", "mallory", ttl_s=600)
    with serve_apps.client(api_key=forged) as http:
        assert http.post("/faq/match", json=QUESTION).status_code == 401
