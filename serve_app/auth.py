"""Authentication for the HTTP ingress: API keys and short-lived tokens, checked by a pure ASGI middleware.

Why it looks like this: the reference platform authenticates scoring calls with *keys*, a primary and a
secondary, so a key can be rotated without downtime: clients move to the secondary, the primary is regenerated,
clients move back. Here ``SERVE_APP_API_KEYS`` (typically from a Kubernetes Secret) holds the keys
comma-separated, primary first; every listed key is accepted, so rotating is "add the new key, roll the pods,
move the clients, drop the old key, roll again". For short-lived access (a notebook, a partner for a day) an
operator mints an HS256 JWT with ``serve-app token`` using ``SERVE_APP_JWT_SECRET``; token auth is on only when
that secret is set.

Both travel as ``Authorization: Bearer <credential>`` (RFC 6750). Failures are 401 with the API's JSON error
shape and a ``WWW-Authenticate`` challenge. With auth enabled but nothing configured every protected request is
refused (fail closed) rather than silently served. Health probes stay open so Kubernetes and Ray can probe.

Keys are held only as SHA-256 digests and no credential is ever put in a response or a log line. This module
imports no Ray so it can be unit-tested and used by the CLI on its own.

Each secret may instead sit in a file named by ``<variable>_FILE`` (``SERVE_APP_API_KEYS_FILE``,
``SERVE_APP_JWT_SECRET_FILE``): a Kubernetes Secret mounted as a volume. A variable is copied into every process
its pod starts (Ray's raylet, GCS and every worker) and shown by ``/proc/<pid>/environ``; a file is read by the
ingress replica alone, once, and nothing else carries it.
"""

import hashlib
import hmac
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jwt
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.asgi import send_error
from serve_app.probes import DEMO_PATH, PROBE_PATHS

logger = logging.getLogger("ray.serve")

JWT_ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key must be at least as long as the hash output
JWT_LEEWAY_S = 5  # tolerates small clock skew between the minting machine and the replicas
MAX_CREDENTIAL_CHARS = 8192  # anything longer is no key or token of ours; refuse before hashing or parsing
# RFC 7519's NumericDate: a JSON number of seconds since 1970. PyJWT also takes strings of digits, and numbers of any
# size: an `exp` of 10**400 overflowed the lifetime check into a 500, and one of 1e308 came back in the message.
DATE_CLAIMS = ("exp", "iat", "nbf")
LATEST_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z
NUMERIC_DATE_HINT = "a JSON number of seconds since 1970 (RFC 7519 NumericDate), before the year 10000"
DEFAULT_MAX_TOKEN_LIFETIME_S = 86_400  # a day: "short-lived"; a leaked token stops working by tomorrow
KEY_NAMES = ("primary", "secondary")
BEARER_HINT = "send 'Authorization: Bearer <api key or token>'"


class AuthSettings(BaseModel):
    """Who may call the ingress. The secrets themselves live in environment variables, never in the config."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="Require credentials on every path but open_paths. Turn off for local development only."
    )
    api_key_env: str = Field(
        "SERVE_APP_API_KEYS",
        min_length=1,
        description="Environment variable with the API keys, comma-separated, primary first then secondary "
        "(e.g. from a Kubernetes Secret); or <name>_FILE naming a file that holds them (a mounted Secret). Every "
        "listed key is accepted, which allows rotation without downtime.",
    )
    jwt_secret_env: str = Field(
        "SERVE_APP_JWT_SECRET",
        min_length=1,
        description="Environment variable with the HS256 secret (at least 32 bytes) that signs tokens from "
        "`serve-app token` (or <name>_FILE naming a file that holds it). Token auth is on only when it is set.",
    )
    jwt_audience: str = Field("serve-app", min_length=1, description="Required `aud` claim of tokens.")
    jwt_issuer: str = Field("serve-app", min_length=1, description="Required `iss` claim of tokens.")
    max_token_lifetime_s: int = Field(
        DEFAULT_MAX_TOKEN_LIFETIME_S,
        ge=1,
        description="Longest lifetime (exp - iat, in seconds) of an accepted token: a token minted for longer, even "
        "with the right secret, gets 401 (a leaked ten-year token would otherwise work for ten years).",
    )
    open_paths: list[str] = Field(
        [*PROBE_PATHS, DEMO_PATH],
        description="Paths served without credentials (exact match): the health probes and the demo page (which "
        "holds no data and asks for a key itself). API docs stay protected.",
    )
    realm: str = Field(
        "serve-app",
        pattern=r'^[^"\\\x00-\x1f\x7f]+$',  # goes inside a quoted-string of the WWW-Authenticate header
        description="Realm named in the WWW-Authenticate challenge of a 401.",
    )

    @field_validator("open_paths")
    @classmethod
    def _paths_are_absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(f"open path {path!r} must start with '/'")
        return paths


@dataclass(frozen=True)
class Principal:
    """Who called: ``key:primary``/``key:secondary``/``key:N`` for a key (never the key), the ``sub`` of a token."""

    subject: str
    kind: Literal["api_key", "token"]


@dataclass(frozen=True)
class AuthFailure:
    """Why a request is refused. ``error_code`` is the RFC 6750 code for the challenge (None: no credential)."""

    message: str
    error_code: str | None = None


def _digest(value: str) -> bytes:
    # Comparing fixed-length digests keeps compare_digest's time independent of the key's length, and means the
    # plaintext key need not stay in memory (heap dumps, reprs, debuggers).
    return hashlib.sha256(value.encode("ascii")).digest()


def secret_value(environ: Mapping[str, str], name: str, missing_ok: bool = False) -> str:
    """The secret in variable ``name``, or in the file that ``name_FILE`` names ("" when neither is set).

    Both set is refused (which one wins would be a guess), and so is a named file that cannot be read: either
    stops the replica with this message, never the service running with other credentials than meant. With
    ``missing_ok`` a named file that does not exist means unset (an optional key of a mounted Secret).
    """
    path = environ.get(f"{name}_FILE", "").strip()
    if not path:
        return environ.get(name, "")
    if environ.get(name, "").strip():
        raise ValueError(f"both {name} and {name}_FILE are set: keep one")
    if missing_ok and not os.path.lexists(path):
        logger.info("%s_FILE names %s, which does not exist: %s is unset", name, path, name)
        return ""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ValueError(f"{name}_FILE names {path}, which cannot be read: {reason}") from None


def _check_secret(secret: str, where: str) -> None:
    if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        hint = "generate one with `openssl rand -hex 32`"
        raise ValueError(f"{where} must be at least {MIN_SECRET_BYTES} bytes long for HS256; {hint}")


def _is_token_char_string(value: str) -> bool:
    # RFC 6750 b64token: printable ASCII without spaces; anything else can never be a valid credential.
    return value.isascii() and value.isprintable() and not any(char.isspace() for char in value)


def _key_name(position: int) -> str:
    return KEY_NAMES[position] if position < len(KEY_NAMES) else str(position + 1)


def _load_key_digests(raw: str, env_name: str) -> tuple[tuple[str, bytes], ...]:
    keys = [key.strip() for key in raw.split(",") if key.strip()]
    for position, key in enumerate(keys):
        if not _is_token_char_string(key):
            # Name the position, never the value: this message ends up in pod logs.
            raise ValueError(f"key {position + 1} in {env_name} has spaces or non-ASCII characters")
    return tuple((f"key:{_key_name(position)}", _digest(key)) for position, key in enumerate(keys))


class Authenticator:
    """Checks ``Authorization`` headers against the API keys and the token secret read once from ``environ``.

    Keys are read at construction: a rotated Kubernetes Secret reaches the pods' environment on restart anyway.
    """

    def __init__(self, settings: AuthSettings, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ  # not stored: it holds the plaintext keys
        self._settings = settings
        self._key_digests = _load_key_digests(secret_value(environ, settings.api_key_env), settings.api_key_env)
        # The HS256 secret must stay usable to verify signatures; it is never logged or returned.
        self._jwt_secret = secret_value(environ, settings.jwt_secret_env, missing_ok=True).strip() or None
        if self._jwt_secret is not None:
            _check_secret(self._jwt_secret, settings.jwt_secret_env)
        if settings.enabled and not self.configured:
            logger.error("authentication is ON but %s is empty: every protected request gets 401", self._env_names())

    def caller(self, scope: Scope) -> Principal | AuthFailure:
        """Who sent the request of this ASGI scope (its ``Authorization`` header), or why it is refused."""
        return self.check(_authorization_header(scope))

    @property
    def configured(self) -> bool:
        """True when at least one API key or a token secret is set."""
        return bool(self._key_digests) or self._jwt_secret is not None

    def check(self, authorization_header: str | None) -> Principal | AuthFailure:
        """The caller of a request with this ``Authorization`` header value, or why it is refused."""
        if not self.configured:
            return AuthFailure(f"authentication is enabled but no credentials are configured: set {self._env_names()}")
        credential = _bearer_credential(authorization_header)
        if isinstance(credential, AuthFailure):
            return credential
        if not _is_token_char_string(credential) or len(credential) > MAX_CREDENTIAL_CHARS:
            return AuthFailure("invalid credentials", "invalid_token")
        key_name = self._match_key(credential)
        if key_name is not None:
            return Principal(subject=key_name, kind="api_key")
        if self._jwt_secret is not None:
            return self._check_token(credential, self._jwt_secret)
        return AuthFailure("invalid credentials", "invalid_token")

    def _match_key(self, credential: str) -> str | None:
        candidate = _digest(credential)
        matched = None
        for name, digest in self._key_digests:  # every key, no early exit: timing must not tell which one matched
            equal = hmac.compare_digest(candidate, digest)
            if equal and matched is None:
                matched = name
        return matched

    def _check_token(self, token: str, secret: str) -> Principal | AuthFailure:
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=[JWT_ALGORITHM],  # pinned: never let the token choose ("none", RS/HS confusion)
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                leeway=JWT_LEEWAY_S,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            return AuthFailure("token expired", "invalid_token")
        except jwt.MissingRequiredClaimError as error:  # checked after the signature: the token is ours
            return AuthFailure(f"token has no '{error.claim}' claim", "invalid_token")
        except jwt.InvalidTokenError:
            return AuthFailure("invalid credentials", "invalid_token")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            return AuthFailure("invalid credentials", "invalid_token")
        for claim in DATE_CLAIMS:
            if claim in claims and not _is_numeric_date(claims[claim]):
                return AuthFailure(f"token claim '{claim}' is not a date: {NUMERIC_DATE_HINT}", "invalid_token")
        limit = self._settings.max_token_lifetime_s
        lifetime = claims["exp"] - claims["iat"]
        if lifetime > limit:
            message = (
                f"token lifetime (exp - iat) of {lifetime:.0f} s is over the limit of {limit} s; mint a shorter one"
            )
            return AuthFailure(message, "invalid_token")
        return Principal(subject=subject, kind="token")

    def _env_names(self) -> str:
        return f"{self._settings.api_key_env} (comma-separated API keys) or {self._settings.jwt_secret_env}"


def _is_numeric_date(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 <= value <= LATEST_NUMERIC_DATE  # compared as is: an int past any float, or NaN, is out of range
    )


def _bearer_credential(header: str | None) -> str | AuthFailure:
    # Split on HTTP's whitespace only (space, tab): str.split() also splits on Unicode's, so "Bearer\xa0KEY" and
    # "Bearer KEY\x85" (a no-break space, a next-line character) were accepted as "Bearer KEY".
    parts = [part for part in (header or "").replace("\t", " ").split(" ") if part]
    if not parts:
        return AuthFailure(f"missing credentials: {BEARER_HINT}")
    if parts[0].lower() != "bearer":
        return AuthFailure(f"unsupported authorization scheme: {BEARER_HINT}")
    if len(parts) == 1:
        return AuthFailure(f"empty bearer credential: {BEARER_HINT}")
    if len(parts) > 2:
        return AuthFailure("invalid credentials", "invalid_token")
    return parts[1]


def mint_token(
    secret: str,
    subject: str,
    ttl_s: int,
    audience: str = "serve-app",
    issuer: str = "serve-app",
    max_lifetime_s: int = DEFAULT_MAX_TOKEN_LIFETIME_S,
) -> str:
    """An HS256 JWT for ``subject`` valid for ``ttl_s`` seconds, accepted by an Authenticator with this secret.

    ``max_lifetime_s`` is the ingress's ``auth.max_token_lifetime_s``: a longer ``ttl_s`` is refused here rather than
    minting a token the ingress would refuse.
    """
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
    if ttl_s > max_lifetime_s:
        raise ValueError(
            f"ttl_s {ttl_s} is over the longest token lifetime the ingress accepts, {max_lifetime_s} s "
            "(auth.max_token_lifetime_s); mint a shorter token"
        )
    if not subject:
        raise ValueError("subject must not be empty: it names who the token is for")
    _check_secret(secret, "the token secret")
    now = int(time.time())
    claims = {
        "sub": subject,
        "iat": now,
        "exp": now + ttl_s,
        "aud": audience,
        "iss": issuer,
        "jti": uuid.uuid4().hex,  # tells two tokens for the same subject apart in audits
    }
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


class AuthMiddleware:
    """401 for requests without valid credentials; the caller's Principal goes to ``scope["state"]["principal"]``.

    Pure ASGI (not BaseHTTPMiddleware) so streaming bodies and the other middlewares are untouched.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator, settings: AuthSettings) -> None:
        self.app = app
        self.authenticator = authenticator
        self.settings = settings
        self._open_paths = frozenset(settings.open_paths)
        if not settings.enabled:
            logger.warning("authentication is OFF: development only; every route is open to anyone who can reach it")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.settings.enabled or self._is_open(scope):
            await self.app(scope, receive, send)
            return
        result = self.authenticator.caller(scope)
        if isinstance(result, AuthFailure):
            logger.debug("refused %s %s: %s", scope["type"], scope.get("path"), result.message)
            await self._refuse(scope, send, result)
            return
        scope.setdefault("state", {})["principal"] = result
        await self.app(scope, receive, send)

    def _is_open(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        root_path = scope.get("root_path", "")
        # Starlette routes on the path below root_path, so a mounted app's probes are open as well.
        route_path = path[len(root_path) :] if root_path and path.startswith(root_path) else path
        return path in self._open_paths or route_path in self._open_paths

    async def _refuse(self, scope: Scope, send: Send, failure: AuthFailure) -> None:
        if scope["type"] == "websocket":
            # Closing before accept makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
            return
        headers = {"www-authenticate": _challenge(self.settings.realm, failure), "cache-control": "no-store"}
        await send_error(send, 401, "unauthorized", failure.message, headers)


def _authorization_header(scope: Scope) -> str | None:
    values = [value for name, value in scope.get("headers", []) if name.lower() == b"authorization"]
    if len(values) != 1:
        # Two Authorization headers are ambiguous (which one did a proxy check?): treat as none.
        return None
    return values[0].decode("latin-1")  # HTTP header bytes are latin-1; this never raises


def _challenge(realm: str, failure: AuthFailure) -> str:
    # RFC 6750 3.1: no error code when the request carried no credential, "invalid_token" when it was bad.
    challenge = f'Bearer realm="{realm}"'
    return f'{challenge}, error="{failure.error_code}"' if failure.error_code else challenge
