"""Who may connect: origin, token transport, signature, expiry, and the user behind the token."""

import jwt
from websockets.asyncio.client import connect
from websockets.typing import Origin, Subprotocol

from {{ cookiecutter.package_name }}.auth import SigningKey
from {{ cookiecutter.package_name }}.protocol import BEARER_PREFIX, PROTOCOL

from harness.live import LiveApp, offer, refused_status
from harness.users import User
from harness.wsclient import WsClient


async def test_welcome_names_the_session_and_user(shared_app: LiveApp, test_user: User) -> None:
    async with connect(f"{shared_app.url}/ws", subprotocols=offer(test_user.token)) as connection:
        welcome = await WsClient(connection).next_of_type("welcome")
        assert welcome["user"] == test_user.id
        assert shared_app.service.registry.get(welcome["session"]) is not None


async def test_server_echoes_the_protocol_never_the_token(
    shared_app: LiveApp, test_user: User
) -> None:
    async with connect(f"{shared_app.url}/ws", subprotocols=offer(test_user.token)) as connection:
        assert connection.subprotocol == PROTOCOL


async def test_authorization_header_works_for_non_browser_clients(
    shared_app: LiveApp, test_user: User
) -> None:
    headers = {"Authorization": f"Bearer {test_user.token}"}
    async with connect(f"{shared_app.url}/ws", additional_headers=headers) as connection:
        assert connection.subprotocol is None
        welcome = await WsClient(connection).next_of_type("welcome")
        assert welcome["user"] == test_user.id


async def test_no_token_is_refused(shared_app: LiveApp) -> None:
    assert await refused_status(shared_app, subprotocols=[Subprotocol(PROTOCOL)]) == 403


async def test_bearer_without_the_protocol_is_refused(shared_app: LiveApp, test_user: User) -> None:
    bearer = Subprotocol(BEARER_PREFIX + test_user.token)
    assert await refused_status(shared_app, subprotocols=[bearer]) == 403


async def test_token_signed_by_an_unknown_key_is_refused(
    shared_app: LiveApp, test_user: User, signing_key: SigningKey
) -> None:
    impostor = SigningKey(signing_key.issuer, signing_key.kid, SigningKey.generate("x").private_key)
    assert await refused_status(shared_app, subprotocols=offer(impostor.issue(test_user.id))) == 403


async def test_token_with_an_unknown_kid_is_refused(shared_app: LiveApp, test_user: User) -> None:
    stranger = SigningKey.generate(issuer="tests")
    assert await refused_status(shared_app, subprotocols=offer(stranger.issue(test_user.id))) == 403


async def test_expired_token_is_refused(
    shared_app: LiveApp, test_user: User, signing_key: SigningKey
) -> None:
    expired = signing_key.issue(test_user.id, ttl=-1)
    assert await refused_status(shared_app, subprotocols=offer(expired)) == 403


async def test_unsigned_token_is_refused(
    shared_app: LiveApp, test_user: User, signing_key: SigningKey
) -> None:
    unsigned = jwt.encode(
        {"sub": test_user.id, "iss": signing_key.issuer, "exp": 2**40},
        key="",
        algorithm="none",
        headers={"kid": signing_key.kid},
    )
    assert await refused_status(shared_app, subprotocols=offer(unsigned)) == 403


async def test_garbage_token_is_refused(shared_app: LiveApp) -> None:
    assert await refused_status(shared_app, subprotocols=offer("not.a.jwt")) == 403


async def test_token_for_a_deleted_user_is_refused(
    shared_app: LiveApp, signing_key: SigningKey
) -> None:
    ghost = "00000000-0000-4000-8000-000000000000"
    assert await refused_status(shared_app, subprotocols=offer(signing_key.issue(ghost))) == 403


async def test_token_for_a_disabled_user_is_refused(shared_app: LiveApp, test_user: User) -> None:
    async with shared_app.service.resources.db.connection() as conn:
        await conn.execute(
            shared_app.service.resources.db.query(
                "UPDATE {users} SET disabled = true WHERE id = %s"
            ),
            [test_user.id],
        )
    assert await refused_status(shared_app, subprotocols=offer(test_user.token)) == 403


async def test_foreign_origin_is_refused(shared_app: LiveApp, test_user: User) -> None:
    evil = Origin("https://evil.example.net")
    assert await refused_status(shared_app, subprotocols=offer(test_user.token), origin=evil) == 403


async def test_allowed_origin_connects(shared_app: LiveApp, test_user: User) -> None:
    allowed = Origin("https://app.example.com")
    async with connect(
        f"{shared_app.url}/ws", subprotocols=offer(test_user.token), origin=allowed
    ) as connection:
        assert (await WsClient(connection).next_of_type("welcome"))["user"] == test_user.id


async def test_refusal_leaves_no_session_behind(shared_app: LiveApp, test_user: User) -> None:
    before = len(shared_app.service.registry)
    await refused_status(shared_app, subprotocols=[Subprotocol(PROTOCOL)])
    assert len(shared_app.service.registry) == before
    assert not shared_app.service.registry.sessions_of(test_user.id)
