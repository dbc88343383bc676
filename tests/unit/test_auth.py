"""API key and token authentication of the ingress, driven through the ASGI middleware without Ray."""

import asyncio
import logging
import time
from typing import Any

import httpx
import jwt
import pytest
from pydantic import ValidationError

from serve_app.auth import Authenticator, AuthFailure, AuthMiddleware, AuthSettings, Principal, mint_token

PRIMARY = "primary-key-0123456789abcdef"
SECONDARY = "secondary-key-fedcba9876543210"
SECRET = "s" * 32 + "-token-signing-secret"
OTHER_SECRET = "o" * 32 + "-another-signing-secret"


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """200 with the principal the middleware left in the scope, so tests see who was let in."""
    principal = scope.get("state", {}).get("principal")
    body = f"{principal.kind}:{principal.subject}" if principal else "anonymous"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body.encode()})


def build(environ: dict[str, str] | None = None, **settings: Any) -> AuthMiddleware:
    auth_settings = AuthSettings(**settings)
    environ = (
        {"SERVE_APP_API_KEYS": f"{PRIMARY},{SECONDARY}", "SERVE_APP_JWT_SECRET": SECRET} if environ is None else environ
    )
    return AuthMiddleware(echo_app, Authenticator(auth_settings, environ), auth_settings)


def get(app: AuthMiddleware, path: str = "/faq/match", authorization: str | bytes | None = None) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(call())


def bearer(credential: str) -> str:
    return f"Bearer {credential}"


def token(secret: str = SECRET, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"sub": "alice", "iat": now, "exp": now + 60, "aud": "serve-app", "iss": "serve-app", **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm="HS256")


def assert_unauthorized(response: httpx.Response, credential: str | None = None) -> str:
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"].startswith('Bearer realm="serve-app"')
    body = response.json()
    assert body["error"]["type"] == "unauthorized"
    assert body["error"]["details"] == []
    if credential:  # the credential we sent must not come back anywhere
        assert credential not in response.text
        assert all(credential not in value for value in response.headers.values())
    return body["error"]["message"]


def test_no_header_is_401_with_a_challenge_without_error_code():
    response = get(build())
    message = assert_unauthorized(response)
    assert response.headers["www-authenticate"] == 'Bearer realm="serve-app"'
    assert "Bearer" in message


def test_wrong_key_is_401_invalid_token():
    response = get(build(), authorization=bearer("not-a-key"))
    assert assert_unauthorized(response, "not-a-key") == "invalid credentials"
    assert response.headers["www-authenticate"] == 'Bearer realm="serve-app", error="invalid_token"'


def test_primary_and_secondary_keys_are_accepted_and_named_not_echoed():
    app = build()
    assert get(app, authorization=bearer(PRIMARY)).text == "api_key:key:primary"
    assert get(app, authorization=bearer(SECONDARY)).text == "api_key:key:secondary"
    assert get(app, authorization=f"bearer   {PRIMARY}  ").status_code == 200  # scheme is case-insensitive


def test_third_key_is_named_by_position():
    app = build({"SERVE_APP_API_KEYS": f" {PRIMARY} ,, {SECONDARY}, third-key-0123456789"})
    assert get(app, authorization=bearer("third-key-0123456789")).text == "api_key:key:3"


def test_rotation_with_swapped_keys_keeps_both_working():
    before = build({"SERVE_APP_API_KEYS": f"{PRIMARY},{SECONDARY}"})
    after = build({"SERVE_APP_API_KEYS": f"{SECONDARY},{PRIMARY}"})
    assert get(before, authorization=bearer(PRIMARY)).text == "api_key:key:primary"
    assert get(after, authorization=bearer(PRIMARY)).text == "api_key:key:secondary"
    assert get(after, authorization=bearer(SECONDARY)).text == "api_key:key:primary"
    dropped = build({"SERVE_APP_API_KEYS": SECONDARY})
    assert_unauthorized(get(dropped, authorization=bearer(PRIMARY)), PRIMARY)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/-/healthz", "/-/routes"])
def test_open_paths_need_no_credentials(path):
    assert get(build(), path).status_code == 200
    assert get(build({}), path).status_code == 200  # even when nothing is configured: probes must keep working


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/healthz/", "/healthzz", "/x/healthz"])
def test_docs_and_near_misses_of_open_paths_are_protected(path):
    assert_unauthorized(get(build(), path))


def test_open_paths_are_configurable():
    app = build(open_paths=["/status"])
    assert get(app, "/status").status_code == 200
    assert_unauthorized(get(app, "/healthz"))


def test_disabled_lets_everything_through_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        app = build({}, enabled=False)
    assert get(app).status_code == 200
    assert get(app, authorization=bearer("anything")).status_code == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "ray.serve"]
    assert len(warnings) == 1
    assert "authentication is OFF: development only" in warnings[0].getMessage()


def test_enabled_logs_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        build()
    assert not caplog.records


def test_valid_token_passes_with_its_subject():
    assert get(build(), authorization=bearer(token())).text == "token:alice"


def test_minted_token_passes():
    minted = mint_token(SECRET, "notebook-bob", ttl_s=300)
    assert get(build(), authorization=bearer(minted)).text == "token:notebook-bob"
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"], audience="serve-app", issuer="serve-app")
    assert claims["exp"] - claims["iat"] == 300
    assert mint_token(SECRET, "notebook-bob", ttl_s=300) != minted  # jti tells them apart


def test_token_with_custom_audience_and_issuer():
    app = build(jwt_audience="scoring", jwt_issuer="ops")
    good = mint_token(SECRET, "carol", 60, audience="scoring", issuer="ops")
    assert get(app, authorization=bearer(good)).text == "token:carol"
    assert_unauthorized(get(app, authorization=bearer(mint_token(SECRET, "carol", 60))))


def test_expired_token_is_401_token_expired():
    now = int(time.time())
    expired = token(iat=now - 120, exp=now - 60)
    response = get(build(), authorization=bearer(expired))
    assert assert_unauthorized(response, expired) == "token expired"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_token_within_leeway_still_passes():
    now = int(time.time())
    assert get(build(), authorization=bearer(token(exp=now - 2))).status_code == 200


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: token(OTHER_SECRET), id="other-secret"),
        pytest.param(lambda: token(aud="someone-else"), id="wrong-audience"),
        pytest.param(lambda: token(iss="someone-else"), id="wrong-issuer"),
        pytest.param(lambda: token(sub=""), id="empty-sub"),
        pytest.param(lambda: token(iat=int(time.time()) + 3600), id="issued-in-future"),
        pytest.param(lambda: token()[:-4] + "AAAA", id="tampered-signature"),
        pytest.param(lambda: "not.a.jwt", id="garbage-dots"),
        pytest.param(lambda: "garbage", id="garbage"),
    ],
)
def test_bad_tokens_are_401_invalid_credentials(bad):
    # Minted when the test runs, not at collection: a token made minutes earlier could have expired by now.
    credential = bad()
    assert assert_unauthorized(get(build(), authorization=bearer(credential)), credential) == "invalid credentials"


@pytest.mark.parametrize("claim", ["exp", "iat", "sub"])
def test_a_signed_token_without_a_required_claim_is_401_naming_it(claim):
    credential = token(**{claim: None})
    assert (
        assert_unauthorized(get(build(), authorization=bearer(credential)), credential)
        == f"token has no '{claim}' claim"
    )


@pytest.mark.parametrize("lifetime_s", [86_401, 10 * 365 * 86_400])
def test_a_token_living_longer_than_the_limit_is_401_however_it_was_signed(lifetime_s):
    now = int(time.time())
    credential = token(iat=now, exp=now + lifetime_s)
    message = assert_unauthorized(get(build(), authorization=bearer(credential)), credential)
    assert message == f"token lifetime (exp - iat) of {lifetime_s} s is over the limit of 86400 s; mint a shorter one"
    # Issued long ago, so only a little of it is left: still longer than allowed in all.
    old = token(iat=now - 2 * 86_400, exp=now + 60)
    assert "is over the limit" in assert_unauthorized(get(build(), authorization=bearer(old)), old)


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"exp": 10**400}, id="exp-past-any-float"),
        pytest.param({"iat": -(10**400)}, id="iat-past-any-float"),
        pytest.param({"exp": 1e308}, id="exp-huge-float"),
        pytest.param({"exp": "EXP"}, id="exp-a-string-of-digits"),
        pytest.param({"iat": "IAT"}, id="iat-a-string-of-digits"),
        pytest.param({"iat": -1}, id="iat-before-1970"),
        pytest.param({"nbf": "NOW"}, id="nbf-a-string-of-digits"),
    ],
)
def test_a_signed_token_whose_dates_are_not_numbers_of_seconds_is_401_naming_the_claim(claims):
    # RFC 7519's NumericDate is a JSON number; PyJWT took strings of digits, and 10**400 overflowed into a 500.
    now = int(time.time())
    strings = {"EXP": str(now + 60), "IAT": str(now), "NOW": str(now)}
    credential = token(**{claim: strings.get(value, value) for claim, value in claims.items()})
    message = assert_unauthorized(get(build(), authorization=bearer(credential)), credential)
    assert message.startswith(f"token claim '{next(iter(claims))}' is not a date: ")
    assert len(message) < 120  # no number of the token's comes back whole


@pytest.mark.parametrize(
    "claims",
    [{"exp": float("inf")}, {"iat": float("nan")}, {"nbf": 10**400}],
    ids=["exp-infinite", "iat-nan", "nbf-past-any-float"],
)
def test_dates_pyjwt_refuses_itself_stay_a_plain_401(claims):
    credential = token(**claims)
    assert assert_unauthorized(get(build(), authorization=bearer(credential)), credential) == "invalid credentials"


def test_a_token_with_float_dates_is_fine():
    now = time.time()
    assert get(build(), authorization=bearer(token(iat=now, exp=now + 60.5))).status_code == 200


def test_the_token_lifetime_limit_is_a_setting():
    now = int(time.time())
    assert get(build(), authorization=bearer(token(iat=now, exp=now + 86_400))).status_code == 200  # exactly the limit
    short = build(max_token_lifetime_s=600)
    assert get(short, authorization=bearer(token(iat=now, exp=now + 600))).status_code == 200
    assert_unauthorized(get(short, authorization=bearer(token(iat=now, exp=now + 601))))
    with pytest.raises(ValidationError):
        AuthSettings(max_token_lifetime_s=0)


def test_mint_token_refuses_a_lifetime_the_ingress_would_refuse():
    assert jwt.decode(
        mint_token(SECRET, "alice", 86_400), SECRET, algorithms=["HS256"], audience="serve-app", issuer="serve-app"
    )
    with pytest.raises(ValueError, match=r"ttl_s 86401 is over .* 86400 s \(auth.max_token_lifetime_s\)"):
        mint_token(SECRET, "alice", 86_401)
    with pytest.raises(ValueError, match="is over"):
        mint_token(SECRET, "alice", 601, max_lifetime_s=600)
    assert (
        get(build(max_token_lifetime_s=600), authorization=bearer(mint_token(SECRET, "alice", 600))).status_code == 200
    )


def test_alg_none_token_is_refused():
    now = int(time.time())
    claims = {"sub": "mallory", "iat": now, "exp": now + 60, "aud": "serve-app", "iss": "serve-app"}
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert assert_unauthorized(get(build(), authorization=bearer(unsigned)), unsigned) == "invalid credentials"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # same secret on purpose
def test_other_hmac_algorithm_is_refused():
    hs512 = jwt.encode(jwt.decode(token(), options={"verify_signature": False}), SECRET, algorithm="HS512")
    assert_unauthorized(get(build(), authorization=bearer(hs512)), hs512)


def test_token_is_refused_when_no_secret_is_configured():
    app = build({"SERVE_APP_API_KEYS": PRIMARY})
    assert assert_unauthorized(get(app, authorization=bearer(token()))) == "invalid credentials"


def test_tokens_alone_work_without_keys():
    app = build({"SERVE_APP_JWT_SECRET": SECRET})
    assert get(app, authorization=bearer(token())).status_code == 200
    assert_unauthorized(get(app, authorization=bearer(PRIMARY)), PRIMARY)


@pytest.mark.parametrize(
    "header",
    [
        f"Basic {PRIMARY}",
        PRIMARY,
        "Bearer",
        "Bearer   ",
        "",
        f"Bearer {PRIMARY} extra",
        f"Token {PRIMARY}",
        # Whitespace HTTP does not know (str.split() does): a no-break space, a next-line character (latin-1).
        f"Bearer\u00a0{PRIMARY}".encode("latin-1"),
        f"Bearer {PRIMARY}\u0085".encode("latin-1"),
        f"\u00a0Bearer {PRIMARY}".encode("latin-1"),
    ],
)
def test_malformed_headers_are_401(header):
    assert_unauthorized(get(build(), authorization=header), PRIMARY)


@pytest.mark.parametrize(
    "header", [f"Bearer {PRIMARY}", f"bearer  {PRIMARY}", f"Bearer\t{PRIMARY} ", f" Bearer {PRIMARY}"]
)
def test_spaces_and_tabs_around_the_credential_are_fine(header):
    assert get(build(), authorization=header).status_code == 200


def test_basic_scheme_says_to_use_bearer():
    message = assert_unauthorized(get(build(), authorization="Basic dXNlcjpwYXNz"), "dXNlcjpwYXNz")
    assert "unsupported authorization scheme" in message
    assert "Bearer" in message


@pytest.mark.parametrize("raw", [b"Bearer \xff\xfe\xe9", "Bearer cl\u00e9".encode(), b"\xc3\x28 key", b"Bearer \x00x"])
def test_non_ascii_header_bytes_do_not_crash(raw):
    assert_unauthorized(get(build(), authorization=raw))


def test_overlong_credential_is_refused():
    assert_unauthorized(get(build(), authorization=bearer("a" * 20_000)))


def test_no_credentials_configured_fails_closed_naming_the_env_var(caplog):
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        app = build({"SERVE_APP_API_KEYS": " , ", "SERVE_APP_JWT_SECRET": ""})
    assert not app.authenticator.configured
    assert "SERVE_APP_API_KEYS" in caplog.text
    for header in (None, bearer(PRIMARY), bearer("")):
        message = assert_unauthorized(get(app, authorization=header))
        assert "SERVE_APP_API_KEYS" in message
        assert "SERVE_APP_JWT_SECRET" in message


def test_custom_env_var_names_are_used_and_named():
    app = build({"MY_KEYS": PRIMARY}, api_key_env="MY_KEYS", jwt_secret_env="MY_SECRET")
    assert get(app, authorization=bearer(PRIMARY)).status_code == 200
    message = assert_unauthorized(get(build({}, api_key_env="MY_KEYS", jwt_secret_env="MY_SECRET")))
    assert "MY_KEYS" in message
    assert "MY_SECRET" in message


def test_configured_flag():
    settings = AuthSettings()
    assert Authenticator(settings, {"SERVE_APP_API_KEYS": PRIMARY}).configured
    assert Authenticator(settings, {"SERVE_APP_JWT_SECRET": SECRET}).configured
    assert not Authenticator(settings, {}).configured


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("SERVE_APP_API_KEYS", PRIMARY)
    monkeypatch.delenv("SERVE_APP_JWT_SECRET", raising=False)
    assert Authenticator(AuthSettings()).check(bearer(PRIMARY)) == Principal("key:primary", "api_key")


def test_check_returns_failures_for_the_caller_to_map():
    authenticator = Authenticator(AuthSettings(), {"SERVE_APP_API_KEYS": PRIMARY})
    missing = authenticator.check(None)
    assert isinstance(missing, AuthFailure)
    assert missing.error_code is None
    assert missing.message.startswith("missing credentials")
    assert authenticator.check(bearer("nope")) == AuthFailure("invalid credentials", "invalid_token")


def _strings_in(value: Any, seen: set[int]) -> list[Any]:
    """Every str/bytes reachable from ``value`` (attributes, containers), to look for a leaked plaintext key."""
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings_in(k, seen) + _strings_in(v, seen)]
    if isinstance(value, list | tuple | set | frozenset):
        return [s for item in value for s in _strings_in(item, seen)]
    if hasattr(value, "__dict__"):
        return _strings_in(vars(value), seen)
    return []


def test_keys_are_not_kept_in_plaintext():
    app = build()
    found = _strings_in(app.authenticator, set())
    assert found  # the walk does reach the stored digests
    for key in (PRIMARY, SECONDARY):
        for value in found:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            assert key not in text
            assert key.encode() not in (value if isinstance(value, bytes) else value.encode())
    assert PRIMARY not in repr(app.authenticator.check(bearer(PRIMARY)))


def test_credentials_never_reach_the_logs(caplog):
    app = build()
    expired = token(iat=int(time.time()) - 120, exp=int(time.time()) - 60)
    with caplog.at_level(logging.DEBUG):
        for credential in ("wrong-key-123", PRIMARY, expired, token(OTHER_SECRET)):
            get(app, authorization=bearer(credential))
            assert credential not in caplog.text


@pytest.mark.parametrize("raw", ["key with-blank", "caf\u00e9-key"])
def test_unusable_keys_in_env_are_a_startup_error_that_does_not_echo_them(raw):
    with pytest.raises(ValueError, match="key 2 in SERVE_APP_API_KEYS") as error:
        Authenticator(AuthSettings(), {"SERVE_APP_API_KEYS": f"{PRIMARY},{raw}"})
    assert raw not in str(error.value)


def test_short_jwt_secret_is_a_startup_error():
    with pytest.raises(ValueError, match="SERVE_APP_JWT_SECRET must be at least 32 bytes"):
        Authenticator(AuthSettings(), {"SERVE_APP_JWT_SECRET": "too-short"})


@pytest.mark.parametrize("ttl_s", [0, -5])
def test_mint_token_rejects_non_positive_ttl(ttl_s):
    with pytest.raises(ValueError, match="ttl_s must be a positive"):
        mint_token(SECRET, "alice", ttl_s)


def test_mint_token_rejects_short_secret():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        mint_token("x" * 31, "alice", 60)


def test_mint_token_rejects_empty_subject():
    with pytest.raises(ValueError, match="subject"):
        mint_token(SECRET, "", 60)


def test_settings_reject_unknown_fields_and_bad_values():
    with pytest.raises(ValidationError):
        AuthSettings(enable=False)
    with pytest.raises(ValidationError):
        AuthSettings(open_paths=["healthz"])
    with pytest.raises(ValidationError):
        AuthSettings(realm='a" , error="x')
    assert all(field.description for field in AuthSettings.model_fields.values())


def test_custom_realm_is_in_the_challenge():
    response = get(build(realm="scoring"))
    assert response.headers["www-authenticate"] == 'Bearer realm="scoring"'


def test_lifespan_passes_through_and_websocket_is_closed_without_credentials():
    seen: list[str] = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    auth_settings = AuthSettings()
    app = AuthMiddleware(inner, Authenticator(auth_settings, {"SERVE_APP_API_KEYS": PRIMARY}), auth_settings)
    sent: list[dict[str, Any]] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "websocket.connect"}

    async def run() -> None:
        await app({"type": "lifespan"}, receive, send)
        await app({"type": "websocket", "path": "/ws", "headers": []}, receive, send)
        authorized = [(b"authorization", bearer(PRIMARY).encode())]
        await app({"type": "websocket", "path": "/ws", "headers": authorized}, receive, send)

    asyncio.run(run())
    assert seen == ["lifespan", "websocket"]
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]


def test_two_authorization_headers_are_refused():
    auth_settings = AuthSettings()
    app = AuthMiddleware(echo_app, Authenticator(auth_settings, {"SERVE_APP_API_KEYS": PRIMARY}), auth_settings)
    sent: list[dict[str, Any]] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    headers = [(b"authorization", bearer(PRIMARY).encode()), (b"authorization", b"Bearer other")]
    asyncio.run(app({"type": "http", "path": "/faq/match", "headers": headers}, receive, send))
    assert sent[0]["status"] == 401


def test_fastapi_add_middleware_exposes_the_principal_on_request_state():
    from fastapi import FastAPI, Request

    auth_settings = AuthSettings()
    api = FastAPI()
    api.add_middleware(
        AuthMiddleware,
        authenticator=Authenticator(auth_settings, {"SERVE_APP_API_KEYS": PRIMARY}),
        settings=auth_settings,
    )

    @api.get("/whoami")
    async def whoami(request: Request) -> dict[str, str]:
        return {"subject": request.state.principal.subject}

    async def call() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test") as client:
            return await client.get("/whoami"), await client.get("/whoami", headers={"Authorization": bearer(PRIMARY)})

    refused, allowed = asyncio.run(call())
    assert_unauthorized(refused)
    assert allowed.json() == {"subject": "key:primary"}


def test_secrets_can_come_from_mounted_files(tmp_path):
    # As a Secret volume writes them: one file per key, often with a trailing newline.
    (tmp_path / "api-keys").write_text(f"{PRIMARY},{SECONDARY}\n")
    (tmp_path / "jwt-secret").write_text(SECRET + "\n")
    app = build(
        {
            "SERVE_APP_API_KEYS_FILE": str(tmp_path / "api-keys"),
            "SERVE_APP_JWT_SECRET_FILE": str(tmp_path / "jwt-secret"),
        }
    )
    assert get(app, authorization=bearer(SECONDARY)).text == "api_key:key:secondary"
    assert get(app, authorization=bearer(token())).text == "token:alice"
    assert_unauthorized(get(app, authorization=bearer("not-" + PRIMARY)))


def test_a_secret_set_twice_or_in_an_unreadable_file_stops_the_replica(tmp_path):
    (tmp_path / "api-keys").write_text(PRIMARY)
    both = {"SERVE_APP_API_KEYS": SECONDARY, "SERVE_APP_API_KEYS_FILE": str(tmp_path / "api-keys")}
    with pytest.raises(ValueError, match="both SERVE_APP_API_KEYS and SERVE_APP_API_KEYS_FILE are set"):
        build(both)
    missing = {"SERVE_APP_API_KEYS_FILE": str(tmp_path / "absent")}
    with pytest.raises(ValueError, match=r"SERVE_APP_API_KEYS_FILE names .*absent, which cannot be read"):
        build(missing)
    (tmp_path / "binary").write_bytes(b"\xff\xfe" + PRIMARY.encode())
    with pytest.raises(ValueError, match="not UTF-8 text") as refused:
        build({"SERVE_APP_API_KEYS_FILE": str(tmp_path / "binary")})
    assert PRIMARY not in str(refused.value)  # the message names the file, never its content


def test_an_absent_token_secret_file_means_token_auth_off(tmp_path):
    # The Secret's jwt-secret key is optional: a mounted Secret without it has no such file.
    (tmp_path / "api-keys").write_text(PRIMARY)
    app = build(
        {
            "SERVE_APP_API_KEYS_FILE": str(tmp_path / "api-keys"),
            "SERVE_APP_JWT_SECRET_FILE": str(tmp_path / "jwt-secret"),
        }
    )
    assert get(app, authorization=bearer(PRIMARY)).status_code == 200
    assert assert_unauthorized(get(app, authorization=bearer(token()))) == "invalid credentials"
    (tmp_path / "jwt-secret").mkdir()  # there, but not a readable file: refused, not ignored
    with pytest.raises(ValueError, match="SERVE_APP_JWT_SECRET_FILE names"):
        build({"SERVE_APP_API_KEYS": PRIMARY, "SERVE_APP_JWT_SECRET_FILE": str(tmp_path / "jwt-secret")})


def test_the_token_command_reads_the_secret_file_too(tmp_path, monkeypatch, capsys):
    from serve_app.cli import main

    (tmp_path / "jwt-secret").write_text(SECRET + "\n")
    monkeypatch.delenv("SERVE_APP_JWT_SECRET", raising=False)
    monkeypatch.setenv("SERVE_APP_JWT_SECRET_FILE", str(tmp_path / "jwt-secret"))
    assert main(["token", "--subject", "bob", "--ttl-s", "60"]) == 0
    minted = capsys.readouterr().out.strip()
    assert get(build(), authorization=bearer(minted)).text == "token:bob"
