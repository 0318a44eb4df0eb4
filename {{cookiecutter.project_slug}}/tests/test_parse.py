"""`parse_request` on its own, without a socket: each request type, and what it refuses."""

import pytest

from {{ cookiecutter.package_name }}.protocol import (
    ErrorCode,
    Ping,
    Position,
    ProtocolError,
    Publish,
    Request,
    Subscribe,
    Unsubscribe,
    parse_request,
)


@pytest.mark.parametrize(
    ("raw", "request_"),
    [
        ('{"type": "ping"}', Ping(None)),
        ('{"type": "ping", "id": "p"}', Ping("p")),
        ('{"type": "subscribe", "id": 1, "channel": "a"}', Subscribe(1, "a")),
        (
            '{"type": "subscribe", "id": 1, "channel": "a", "since": {"offset": 0, "epoch": "e"}}',
            Subscribe(1, "a", Position(0, "e")),
        ),
        ('{"type": "subscribe", "id": 1, "channel": "a", "since": null}', Subscribe(1, "a")),
        ('{"type": "unsubscribe", "id": 2, "channel": "a:b"}', Unsubscribe(2, "a:b")),
        ('{"type": "publish", "id": 3, "channel": "a", "data": null}', Publish(3, "a", None)),
        ('{"type": "publish", "channel": "a", "data": {"x": [1]}}', Publish(None, "a", {"x": [1]})),
    ],
)
def test_each_request_type_parses_into_its_dataclass(raw: str, request_: Request) -> None:
    assert parse_request(raw) == request_


@pytest.mark.parametrize(
    ("raw", "code", "request_id"),
    [
        ("", ErrorCode.MALFORMED_JSON, None),
        ("null", ErrorCode.INVALID_MESSAGE, None),
        ('{"type": "ping", "id": 1.5}', ErrorCode.INVALID_MESSAGE, None),
        ('{"type": 7, "id": "x"}', ErrorCode.UNKNOWN_TYPE, "x"),
        ('{"type": "unsubscribe", "id": "x"}', ErrorCode.MISSING_FIELD, "x"),
        (
            '{"type": "publish", "id": "x", "channel": "' + "a" * 129 + '", "data": 1}',
            ErrorCode.INVALID_CHANNEL,
            "x",
        ),
        (
            '{"type": "subscribe", "id": "x", "channel": "a", "since": 4}',
            ErrorCode.INVALID_MESSAGE,
            "x",
        ),
        (
            '{"type": "subscribe", "id": "x", "channel": "a",'
            ' "since": {"offset": 1.0, "epoch": "e"}}',
            ErrorCode.INVALID_MESSAGE,
            "x",
        ),
    ],
)
def test_a_bad_request_names_the_problem_and_keeps_its_id(
    raw: str, code: ErrorCode, request_id: str | None
) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_request(raw)
    assert (raised.value.code, raised.value.request_id) == (code, request_id)
