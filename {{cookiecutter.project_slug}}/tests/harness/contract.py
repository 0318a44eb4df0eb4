"""The service's AsyncAPI document as a contract that every frame of the suite must keep.

`contract()` compiles the document's message schemas once per process, so once per xdist worker.
WsClient and StalledClient check every frame they send and receive against it, and WsClient
checks that each reply is one the document lists for its request: a frame that breaks the
contract fails the test that sent or received it. Frames a test means to be malformed go out
through `WsClient.send_raw`, unchecked.

The document lets clients ignore fields they do not know, so its objects are open. The contract
holds the server to more than the document promises clients: a server frame, and every object in
it, may carry only the fields its schema names (`closed`), so a field the server starts sending
must be documented first. Requests stay open, as the server ignores fields it does not know.

The schemas are compiled to Python by fastjsonschema (draft 7, which AsyncAPI's schema format
extends): a frame costs microseconds, where an interpreting validator costs a hundred or more.
"""

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fastjsonschema

from {{ cookiecutter.package_name }}.asyncapi import document


class ContractBroken(AssertionError):
    """A frame the AsyncAPI document does not allow."""


def _canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _date_time_with_offset(value: str) -> bool:
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


FORMATS: dict[str, Callable[[str], bool]] = {
    "uuid": _canonical_uuid,
    "date-time": _date_time_with_offset,
}
"""The formats the document uses, checked: fastjsonschema knows no uuid, and a looser date-time."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the document: its name, the `type` of its frames, its schema compiled."""

    name: str
    frame_type: str
    validate: Callable[[Any], Any]
    required: frozenset[str]
    allowed: frozenset[str] | None
    """The only fields its frames may have; None when it allows others."""

    def may_be(self, frame: dict[str, Any]) -> bool:
        """Whether the frame's fields fit this message: a cheap sieve before the schema, since
        several messages share a type (five kinds of ack) and a failed check costs more."""
        fields = frame.keys()
        return self.required <= fields and (self.allowed is None or fields <= self.allowed)

    def why_not(self, frame: Any) -> str | None:
        """What in `frame` breaks this message's schema, or None if nothing does."""
        try:
            self.validate(frame)
        except fastjsonschema.JsonSchemaValueException as error:
            return error.message
        return None


ByType = dict[str, list[Message]]


@dataclass(frozen=True, slots=True)
class Contract:
    """The document's messages by frame type, as the client and the server may send them."""

    requests: ByType
    server_frames: ByType
    replies: dict[str, ByType]
    """For each request type, the messages the document lets the server answer it with."""

    @classmethod
    def of(cls, doc: dict[str, Any]) -> "Contract":
        """Compile the messages of `doc`'s operations, sorted by who sends them."""
        compiled_at: dict[str, Message] = {}

        def compiled(reference: dict[str, str], *, from_server: bool) -> Message:
            pointer = _message_pointer(doc, reference)
            if pointer not in compiled_at:
                payload = _inlined(doc, _resolve(doc, pointer)["payload"])
                if from_server:
                    payload = closed(payload)
                compiled_at[pointer] = Message(
                    name=pointer.rsplit("/", 1)[-1],
                    frame_type=payload["properties"]["type"]["const"],
                    validate=fastjsonschema.compile(payload, formats=FORMATS),
                    required=frozenset(payload["required"]),
                    allowed=frozenset(payload["properties"]) if from_server else None,
                )
            return compiled_at[pointer]

        requests: list[Message] = []
        server_frames: list[Message] = []
        replies: dict[str, ByType] = {}
        for operation in doc["operations"].values():
            sent = operation["action"] == "send"
            messages = [
                compiled(reference, from_server=sent) for reference in operation["messages"]
            ]
            if sent:
                server_frames += messages
                continue
            answers = [
                compiled(reference, from_server=True)
                for reference in operation["reply"]["messages"]
            ]
            requests += messages
            server_frames += answers
            for request in messages:
                replies[request.frame_type] = _by_type(answers)
        return cls(_by_type(requests), _by_type(server_frames), replies)

    def check_request(self, frame: Any) -> str:
        """The name of the request message `frame` is; ContractBroken if it is none."""
        return _match(frame, self.requests, "request")

    def check_server_frame(self, frame: Any) -> str:
        """The name of the server message `frame` is; ContractBroken if it is none."""
        return _match(frame, self.server_frames, "server frame")

    def check_reply(self, request_type: str, reply: Any) -> str:
        """The name of the message `reply` is among those the document lists as replies to a
        request of `request_type`; ContractBroken if it is none of them."""
        return _match(reply, self.replies[request_type], f"reply to {request_type}")


@functools.cache
def contract() -> Contract:
    """The contract of the service's own document, compiled once per process."""
    return Contract.of(document())


def _match(frame: Any, messages: ByType, what: str) -> str:
    kind = frame.get("type") if isinstance(frame, dict) else None
    candidates = messages.get(kind, []) if isinstance(kind, str) else []
    for message in candidates:
        if message.may_be(frame) and message.why_not(frame) is None:
            return message.name
    reasons = [f"as {message.name}: {message.why_not(frame)}" for message in candidates]
    why = "; ".join(reasons) or f"no {what} has type {kind!r}"
    raise ContractBroken(f"{what} breaks the AsyncAPI contract ({why}): {frame!r:.500}")


def _by_type(messages: list[Message]) -> ByType:
    by_type: ByType = {}
    for message in messages:
        if message not in by_type.get(message.frame_type, []):
            by_type.setdefault(message.frame_type, []).append(message)
    return by_type


def closed(schema: Any) -> Any:
    """`schema` (inlined) with every object schema that names its properties closed to them."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    narrowed = {
        key: {name: closed(field) for name, field in value.items()}
        if key == "properties"
        else closed(value)
        for key, value in schema.items()
    }
    if "properties" in schema:
        narrowed.setdefault("additionalProperties", False)
    return narrowed


def _message_pointer(doc: dict[str, Any], reference: dict[str, str]) -> str:
    """Follow `$ref`s (operation to channel to components) to the message object's pointer."""
    pointer = reference["$ref"]
    while "$ref" in (target := _resolve(doc, pointer)):
        pointer = target["$ref"]
    return pointer


def _inlined(doc: dict[str, Any], node: Any) -> Any:
    """`node` with every `$ref` replaced by what it points to (the document has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inlined(doc, _resolve(doc, node["$ref"]))
        return {key: _inlined(doc, value) for key, value in node.items()}
    if isinstance(node, list):
        return [_inlined(doc, value) for value in node]
    return node


def _resolve(doc: dict[str, Any], pointer: str) -> Any:
    node: Any = doc
    for key in pointer.removeprefix("#/").split("/"):
        node = node[key]
    return node
