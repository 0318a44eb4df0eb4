"""Access tokens: JWTs verified against a keyring of public keys indexed by (issuer, kid).

Each key pins its algorithm, so a token cannot pick a weaker one (the classic `alg` confusion),
and `exp`, `sub` and `iss` are required. Every claim is checked for its type before it is used:
whatever a client puts in a token, the answer is an AuthError, never a crash.
"""

import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

ALGORITHMS = frozenset({"EdDSA", "ES256", "RS256"})
REQUIRED_CLAIMS = ["exp", "sub", "iss"]
TIME_CLAIMS = ("exp", "nbf", "iat")


class KeyringError(ValueError):
    """A JWKS document that cannot serve as a keyring."""


class AuthError(Exception):
    """A token was refused: `reason` is a short code for metrics, the message says why (for
    logs, never sent to the client)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for, and until when."""

    user_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Keyring:
    """Public keys of the trusted token issuers."""

    keys: Mapping[tuple[str, str], jwt.PyJWK]

    @classmethod
    def from_jwks(cls, document: Any) -> "Keyring":
        """Build a keyring from a JWKS whose keys each carry `kid`, `alg` and `iss`."""
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise KeyringError('expected an object {"keys": [...]}')
        keys: dict[tuple[str, str], jwt.PyJWK] = {}
        for index, entry in enumerate(document["keys"]):
            if not isinstance(entry, dict):
                raise KeyringError(f"key {index} is not an object")
            missing = [name for name in ("kid", "alg", "iss") if not entry.get(name)]
            if missing:
                raise KeyringError(f"key {index} lacks {', '.join(missing)}")
            if entry["alg"] not in ALGORITHMS:
                raise KeyringError(
                    f"key {index} uses {entry['alg']!r}; allowed: {sorted(ALGORITHMS)}"
                )
            try:
                keys[(entry["iss"], entry["kid"])] = jwt.PyJWK(entry, algorithm=entry["alg"])
            except jwt.PyJWTError as error:
                raise KeyringError(f"key {index} is unusable: {error}") from None
        if not keys:
            raise KeyringError("the keyring holds no key")
        return cls(keys)

    def verify(self, token: str, max_lifetime_s: float) -> Identity:
        """Return the identity a token proves, or raise AuthError. A token still valid for more
        than `max_lifetime_s` is refused: a leaked one must not work for years."""
        try:
            # Read once unverified: header and claims name the key that must verify it.
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
            kid, issuer = unverified["header"].get("kid"), unverified["payload"].get("iss")
        except jwt.PyJWTError as error:
            raise AuthError("malformed_token", f"malformed token: {error}") from None
        if not isinstance(kid, str) or not isinstance(issuer, str):
            raise AuthError("malformed_token", "`kid` and `iss` must be strings")
        key = self.keys.get((issuer, kid))
        if key is None:
            raise AuthError("unknown_key", f"no key for issuer {issuer!r} and kid {kid!r}")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                issuer=issuer,
                options={"require": REQUIRED_CLAIMS, "verify_aud": False},
            )
        except jwt.PyJWTError as error:
            raise AuthError("invalid_token", f"token refused: {error}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthError("malformed_token", "`sub` must be a non-empty string")
        for name in TIME_CLAIMS:
            if name in claims and not _is_time(claims[name]):
                raise AuthError("malformed_token", f"`{name}` must be a number of seconds")
        expires_at = float(claims["exp"])
        if expires_at - time.time() > max_lifetime_s:
            raise AuthError(
                "token_lifetime", f"the token is valid for longer than {max_lifetime_s:.0f}s"
            )
        return Identity(user_id=subject, expires_at=expires_at)


def _is_time(value: object) -> bool:
    """Whether a claim is a NumericDate (RFC 7519): a JSON number, and one a float can hold.
    PyJWT checks these claims with `int()`, which lets through strings of digits, booleans and
    integers too large for any arithmetic with a float (`10**400`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private Ed25519 key that issues tokens; for development tools and tests."""

    issuer: str
    kid: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, issuer: str, kid: str | None = None) -> "SigningKey":
        """A fresh key pair under `issuer`."""
        return cls(issuer, kid or uuid.uuid4().hex[:16], Ed25519PrivateKey.generate())

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> "SigningKey":
        """Load a key saved with `private_jwk()`."""
        key = OKPAlgorithm.from_jwk(dict(jwk))
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyringError("expected a private Ed25519 key")
        return cls(jwk["iss"], jwk["kid"], key)

    def public_jwk(self) -> dict[str, Any]:
        """The public half, as a keyring entry."""
        jwk = OKPAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": "EdDSA", "iss": self.issuer, "use": "sig"}

    def private_jwk(self) -> dict[str, Any]:
        """The whole key, to save for `from_jwk`."""
        jwk = OKPAlgorithm.to_jwk(self.private_key, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": "EdDSA", "iss": self.issuer}

    def jwks(self) -> dict[str, Any]:
        """A JWKS holding just this key's public half."""
        return {"keys": [self.public_jwk()]}

    def keyring(self) -> Keyring:
        """A keyring trusting this key alone."""
        return Keyring.from_jwks(self.jwks())

    def issue(self, subject: str, ttl: float = 3600.0, **claims: Any) -> str:
        """A signed token for `subject`, valid for `ttl` seconds."""
        now = time.time()
        payload = {"iss": self.issuer, "sub": subject, "iat": int(now), "exp": now + ttl, **claims}
        return jwt.encode(payload, self.private_key, algorithm="EdDSA", headers={"kid": self.kid})
