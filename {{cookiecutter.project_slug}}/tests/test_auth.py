"""The keyring: which keys it accepts, and which tokens it verifies."""

import jwt
import pytest

from {{ cookiecutter.package_name }}.auth import (
    AuthError,
    Keyring,
    KeyringError,
    SigningKey,
)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate(issuer="issuer-a", kid="k1")


def test_keyring_verifies_its_own_tokens(key: SigningKey):
    identity = key.keyring().verify(key.issue("user-1", ttl=60))
    assert identity.user_id == "user-1"


def test_keyring_tells_keys_apart_by_issuer_and_kid(key: SigningKey):
    other = SigningKey.generate(issuer="issuer-b", kid="k1")
    keyring = Keyring.from_jwks({"keys": [key.public_jwk(), other.public_jwk()]})
    assert keyring.verify(other.issue("user-2")).user_id == "user-2"
    assert keyring.verify(key.issue("user-1")).user_id == "user-1"


def test_same_kid_under_another_issuer_is_unknown(key: SigningKey):
    forged = SigningKey("issuer-b", key.kid, key.private_key)
    with pytest.raises(AuthError, match="no key for issuer 'issuer-b'"):
        key.keyring().verify(forged.issue("user-1"))


def test_token_without_exp_is_refused(key: SigningKey):
    token = jwt.encode(
        {"sub": "u", "iss": key.issuer},
        key.private_key,
        algorithm="EdDSA",
        headers={"kid": key.kid},
    )
    with pytest.raises(AuthError, match="exp"):
        key.keyring().verify(token)


def test_algorithm_is_pinned_per_key(key: SigningKey):
    hs256 = jwt.encode(
        {"sub": "u", "iss": key.issuer, "exp": 2**40},
        "a-shared-secret-of-at-least-32-bytes!!",
        algorithm="HS256",
        headers={"kid": key.kid},
    )
    with pytest.raises(AuthError):
        key.keyring().verify(hs256)


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
def test_bad_keyrings_are_refused_with_a_reason(document: object, complaint: str):
    with pytest.raises(KeyringError, match=complaint):
        Keyring.from_jwks(document)


def test_public_jwks_holds_no_private_part(key: SigningKey):
    assert all("d" not in entry for entry in key.jwks()["keys"])
    assert "d" in key.private_jwk()


def test_saved_private_key_signs_the_same(key: SigningKey):
    restored = SigningKey.from_jwk(key.private_jwk())
    assert key.keyring().verify(restored.issue("user-3")).user_id == "user-3"
