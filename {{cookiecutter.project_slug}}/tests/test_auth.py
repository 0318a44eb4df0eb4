"""The keyring: which keys it accepts, and which tokens it verifies."""

import base64
import json

import jwt
import pytest

from {{ cookiecutter.package_name }}.auth import (
    AuthError,
    Keyring,
    KeyringError,
    SigningKey,
)

LIFETIME = 86_400.0


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate(issuer="issuer-a", kid="k1")


def test_keyring_verifies_its_own_tokens(key: SigningKey) -> None:
    identity = key.keyring().verify(key.issue("user-1", ttl=60), LIFETIME)
    assert identity.user_id == "user-1"


def test_keyring_tells_keys_apart_by_issuer_and_kid(key: SigningKey) -> None:
    other = SigningKey.generate(issuer="issuer-b", kid="k1")
    keyring = Keyring.from_jwks({"keys": [key.public_jwk(), other.public_jwk()]})
    assert keyring.verify(other.issue("user-2"), LIFETIME).user_id == "user-2"
    assert keyring.verify(key.issue("user-1"), LIFETIME).user_id == "user-1"


def test_same_kid_under_another_issuer_is_unknown(key: SigningKey) -> None:
    forged = SigningKey("issuer-b", key.kid, key.private_key)
    with pytest.raises(AuthError, match="no key for issuer 'issuer-b'"):
        key.keyring().verify(forged.issue("user-1"), LIFETIME)


def test_token_without_exp_is_refused(key: SigningKey) -> None:
    token = jwt.encode(
        {"sub": "u", "iss": key.issuer},
        key.private_key,
        algorithm="EdDSA",
        headers={"kid": key.kid},
    )
    with pytest.raises(AuthError, match="exp"):
        key.keyring().verify(token, LIFETIME)


def test_algorithm_is_pinned_per_key(key: SigningKey) -> None:
    hs256 = jwt.encode(
        {"sub": "u", "iss": key.issuer, "exp": 2**40},
        "a-shared-secret-of-at-least-32-bytes!!",
        algorithm="HS256",
        headers={"kid": key.kid},
    )
    with pytest.raises(AuthError):
        key.keyring().verify(hs256, LIFETIME)


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ([], "expected an object"),
        ({"keys": []}, "no key"),
        ({"keys": ["x"]}, "not an object"),
        ({"keys": [{"kty": "OKP"}]}, "lacks kid, alg, iss"),
        ({"keys": [{"kid": "a", "alg": "HS256", "iss": "i"}]}, "uses 'HS256'"),
        ({"keys": [{"kid": "a", "alg": "EdDSA", "iss": "i", "kty": "OKP"}]}, "unusable"),
    ],
)
def test_bad_keyrings_are_refused_with_a_reason(document: object, complaint: str) -> None:
    with pytest.raises(KeyringError, match=complaint):
        Keyring.from_jwks(document)


def test_public_jwks_holds_no_private_part(key: SigningKey) -> None:
    assert all("d" not in entry for entry in key.jwks()["keys"])
    assert "d" in key.private_jwk()


def test_saved_private_key_signs_the_same(key: SigningKey) -> None:
    restored = SigningKey.from_jwk(key.private_jwk())
    assert key.keyring().verify(restored.issue("user-3"), LIFETIME).user_id == "user-3"


def signed(key: SigningKey, payload: str, header: dict[str, object] | None = None) -> str:
    """A token signed by `key` over a payload given as raw JSON, whatever it holds."""

    def encoded(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    head = encoded(json.dumps(header or {"alg": "EdDSA", "kid": key.kid}))
    body = encoded(payload)
    signature = key.private_key.sign(f"{head}.{body}".encode())
    return f"{head}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    ("payload", "header", "reason"),
    [
        ('{"iss": ["issuer-a"], "sub": "u", "exp": 2e9}', None, "malformed_token"),
        ('{"iss": {"a": 1}, "sub": "u", "exp": 2e9}', None, "malformed_token"),
        ('{"iss": "issuer-a", "sub": "u", "exp": 2e9}', {"alg": "EdDSA", "kid": [1]}, None),
        ('{"iss": "issuer-a", "sub": 5, "exp": 2e9}', None, "invalid_token"),
        ('{"iss": "issuer-a", "sub": "", "exp": 2e9}', None, "malformed_token"),
        ('{"iss": "issuer-a", "sub": "u", "exp": "soon"}', None, "invalid_token"),
        ('{"iss": "issuer-a", "sub": "u", "exp": 1e400}', None, "invalid_token"),
        ('{"iss": "issuer-a", "sub": "u", "exp": NaN}', None, "invalid_token"),
        ('{"iss": "issuer-a", "sub": "u", "exp": 2e9, "nbf": 1e400}', None, "invalid_token"),
        ("[1, 2]", None, "malformed_token"),
        ('{"iss": "issuer-a", "sub": "u", "exp": 1e12}', None, "token_lifetime"),
    ],
)
def test_malformed_claims_are_refused_with_a_reason_never_a_crash(
    key: SigningKey, payload: str, header: dict[str, object] | None, reason: str | None
) -> None:
    with pytest.raises(AuthError) as refused:
        key.keyring().verify(signed(key, payload, header), LIFETIME)
    assert refused.value.reason == (reason or "malformed_token")


def test_a_token_valid_for_longer_than_the_maximum_is_refused(key: SigningKey) -> None:
    with pytest.raises(AuthError, match="longer than 60s"):
        key.keyring().verify(key.issue("user-1", ttl=61), max_lifetime_s=60)
    assert key.keyring().verify(key.issue("user-1", ttl=59), max_lifetime_s=60)
