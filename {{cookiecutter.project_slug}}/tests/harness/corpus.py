"""Frames a hostile client sends: the bad-input corpus of test_corpus.py, which test_asyncapi.py
also holds the request schemas to (each must refuse what `parse_request` refuses)."""

import json
import uuid

ODD_STRINGS = [
    "",
    " ",
    "\u0000",
    "\u202e",
    "\u200b",
    "\ufeff",
    "\U0001f600",
    "é" * 200,
    "x" * 10_000,
    "../../etc/passwd",
    "room:lobby\n",
    "' OR 1=1 --",
    "%00",
    "49",
    "<script>",
]
ODD_VALUES: list[object] = [None, True, 0, -1, 1.5, 10**40, [], {}, [1], {"a": 1}, *ODD_STRINGS]


def malformed_frames() -> list[str]:
    """Frames a hostile client sends; each must get exactly one reply and keep it connected."""
    frames = [
        "",
        " ",
        "{",
        "}",
        "{not json",
        "{'single': 'quotes'}",
        '{"type": "ping",}',
        '{"type": "ping"} trailing',
        '{"type": NaN}',
        '{"type": Infinity}',
        "\ufeff{}",
        "null",
        "true",
        "42",
        '"a string"',
        "[]",
        "[" * 20_000,
        '{"a":' * 5_000 + "1" + "}" * 5_000,
        '{"type": "ping", "id": "\\ud800"}',
        '{"type": "ping", "id": "\\udfff"}',
        '{"type": "publish", "id": 1, "channel": "room:c", "data": "\\ud83d"}',
        '{"type": "publish", "id": 2, "channel": "room:c", "data": {"\\udc00": 1}}',
        '{"type": "subscribe", "id": 3, "channel": "room:c", "since": {"offset": 0, '
        '"epoch": "\\ud800"}}',
        '{"type": "ping", "id": "ok", "id": [1]}',
    ]
    for value in ODD_VALUES:
        frames.append(json.dumps({"type": value, "id": 1}))
        frames.append(json.dumps({"type": "ping", "id": value}))
        frames.append(json.dumps({"type": "subscribe", "id": 1, "channel": value}))
        frames.append(json.dumps({"type": "publish", "id": 1, "channel": "room:c", "data": value}))
        frames.append(
            json.dumps({"type": "subscribe", "id": 1, "channel": "room:c", "since": value})
        )
    for since in [{"offset": -1, "epoch": "e"}, {"offset": 2**70, "epoch": "e"}, {"epoch": "e"}]:
        frames.append(
            json.dumps({"type": "subscribe", "id": 1, "channel": "room:c", "since": since})
        )
    frames.append(json.dumps({"type": "publish", "id": 1, "channel": "room:c"}))
    frames.append(json.dumps({"type": "unsubscribe", "id": 1}))
    frames.append(json.dumps({"type": "subscribe", "id": 1, "channel": f"user:{uuid.uuid4()}"}))
    return frames
