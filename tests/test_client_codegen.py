"""A baked service's AsyncAPI document as a client team uses it: `make client-ts` generates
TypeScript models, the generated README's client compiles against them with `tsc --strict` and
talks to a live service, and Python models that datamodel-code-generator makes from the payload
schemas validate the frames that session received. Both tell the five acks apart by `ack`: a
TypeScript switch over the `Ack` union compiles only when it handles every kind, and the Pydantic
`Ack` picks each real ack's own model.

The bake's client-ts tools come from .cache/client-ts/, which `make install` fills from the bake's
own lock (npm ci, once); one bake, copied so that make may write in it, serves every test here."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic
import pytest

from tests.conftest import TEMPLATE_DIR
from tests.generated_runs import clean_environment, installed_copy, run_make
from tests.served import Service, serving

CLIENT_TOOLS = TEMPLATE_DIR / ".cache" / "client-ts"
NODE = shutil.which("node")
NPM = shutil.which("npm")
CHANNEL = "room:codegen"
TS_CONFIG = {
    "compilerOptions": {
        "strict": True,
        "module": "nodenext",
        "target": "es2022",
        "outDir": "out",
        "types": ["node"],
    },
    "files": ["client.ts"],
}
TIMEOUT_S = 120
GENERATED_MODULE = "codegen_frames"
ACK_MODELS = {
    "subscribed": "SubscribeAck",
    "recovered": "RecoveredAck",
    "recovery_failed": "RecoveryFailedAck",
    "unsubscribed": "UnsubscribeAck",
    "published": "PublishAck",
}
"""Each value of an ack's `ack`, and the model of its acks."""
EXHAUSTIVE_SWITCH = """import type { ServerFrame } from "./models.js";

export function described(frame: ServerFrame): string {
  if (frame.type !== "ack") return frame.type;
  switch (frame.ack) {
%s
    default: {
      const unhandled: never = frame;
      return unhandled;
    }
  }
}
"""
"""A switch over the acks, each case using a field only its own ack has, that compiles only when
`frame.ack` narrows the frame and the cases cover every kind."""
CASES = {
    "subscribed": "frame.position.epoch",
    "recovered": "String(frame.replayed)",
    "recovery_failed": "frame.reason",
    "unsubscribed": "frame.ack",
    "published": "String(frame.offset)",
}

pytestmark = [
    pytest.mark.skipif(
        NODE is None or NPM is None,
        reason="node and npm are not installed, and make client-ts and its client run on them",
    ),
    pytest.mark.xdist_group("client-codegen"),
]


@pytest.fixture(scope="module")
def project(bake: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the default bake whose tools/client-ts/ has the cached node_modules, installed
    as far as its Makefile can tell."""
    project = installed_copy(bake(), tmp_path_factory.mktemp("codegen") / "project", ())
    tools = project / "tools" / "client-ts"
    lock = tools / "package-lock.json"
    installed = CLIENT_TOOLS / "node_modules" / ".package-lock.json"
    cached_lock = CLIENT_TOOLS / "package-lock.json"
    if not installed.is_file() or cached_lock.read_bytes() != lock.read_bytes():
        pytest.fail(f"the bake's client-ts tools are not installed in {CLIENT_TOOLS}: make install")
    (tools / "node_modules").symlink_to(CLIENT_TOOLS / "node_modules")
    # Older than the installed tree, as after npm ci: make installs nothing.
    os.utime(lock, (0, 0))
    return project


@pytest.fixture(scope="module")
def models(project: Path) -> Path:
    """The TypeScript models `make client-ts` writes, with this environment's Python."""
    python_bin = f"BIN={Path(sys.executable).parent}"
    result = run_make(project, "client-ts", python_bin, timeout=TIMEOUT_S, PYTHONPATH="src")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "npm ci" not in result.stdout
    return project / "clients" / "ts" / "models.ts"


@pytest.fixture(scope="module")
def document(models: Path) -> dict[str, Any]:
    """The AsyncAPI document the models were made from."""
    loaded: dict[str, Any] = json.loads((models.parent / "asyncapi.json").read_text("utf-8"))
    return loaded


@pytest.fixture(scope="module")
def service(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with serving(project, tmp_path_factory.mktemp("service")) as running:
        yield running


def compiled(directory: Path, source: str, models: Path) -> subprocess.CompletedProcess[str]:
    """`source` as client.ts beside the models, compiled by tsc --strict into directory/out."""
    directory.mkdir(exist_ok=True)
    (directory / "client.ts").write_text(source, "utf-8")
    shutil.copy(models, directory / "models.ts")
    (directory / "tsconfig.json").write_text(json.dumps(TS_CONFIG), "utf-8")
    (directory / "package.json").write_text('{"type": "module"}', "utf-8")
    (directory / "node_modules").symlink_to(CLIENT_TOOLS / "node_modules")
    tsc = CLIENT_TOOLS / "node_modules" / ".bin" / "tsc"
    return subprocess.run(
        [str(tsc), "-p", str(directory)], capture_output=True, text=True, timeout=TIMEOUT_S
    )


@pytest.fixture(scope="module")
def client_run(
    project: Path, models: Path, service: Service, tmp_path_factory: pytest.TempPathFactory
) -> subprocess.CompletedProcess[str]:
    """The README's client, compiled with the models under tsc --strict, run against the live
    service: every frame it received on stdout, what it made of them on stderr."""
    client = tmp_path_factory.mktemp("client")
    compiling = compiled(client, readme_client(project), models)
    assert compiling.returncode == 0, compiling.stdout + compiling.stderr
    assert NODE is not None
    url = service.url.replace("http://", "ws://", 1) + "/ws"
    token = service.token_for_new_user("typescript")
    ran = subprocess.run(
        [NODE, str(client / "out" / "client.js"), url, token, CHANNEL],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=clean_environment(),
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran


@pytest.fixture(scope="module")
def session(client_run: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """Every frame the README's client received from the live service, in order."""
    return [json.loads(line) for line in client_run.stdout.splitlines()]


def readme_client(project: Path) -> str:
    """The TypeScript client of the README's "Client code"."""
    section = (project / "README.md").read_text("utf-8").split("### Client code", 1)[1]
    return section.split("```ts\n", 1)[1].split("```", 1)[0]


def test_make_client_ts_names_the_models_after_the_frames_with_the_wire_s_field_names(
    models: Path, document: dict[str, Any]
):
    source = models.read_text("utf-8")
    exported = re.findall(r"^export (?:interface|type) (\w+)", source, re.MULTILINE)
    messages = document["components"]["messages"].values()
    titles = {message["payload"]["title"] for message in messages}
    assert titles <= set(exported)
    assert {"ClientFrame", "ServerFrame", "SubscribeReply", "PublishReply", "Ack"} <= set(exported)
    assert not [name for name in exported if name.startswith("AnonymousSchema")]
    assert "Socket" not in exported
    for renamed in ("reservedType", "sentAt", "additionalProperties"):
        assert renamed not in source
    message = source.split("export interface Message {", 1)[1].split("}", 1)[0]
    assert "type: 'message';" in message
    assert "sent_at: string;" in message
    failed = source.split("export interface RecoveryFailedAck {", 1)[1].split("}", 1)[0]
    assert "recovered: false;" in failed
    assert "ack: 'recovery_failed';" in failed


def test_the_ack_union_is_discriminated_by_ack_so_a_switch_must_handle_every_kind(
    models: Path, tmp_path: Path
):
    source = models.read_text("utf-8")
    union = re.search(r"^export type Ack = (.+);$", source, re.MULTILINE)
    assert union is not None
    assert sorted(union[1].split(" | ")) == sorted(ACK_MODELS.values())
    for kind, model in ACK_MODELS.items():
        interface = source.split(f"export interface {model} {{", 1)[1].split("}", 1)[0]
        assert f"ack: '{kind}';" in interface
    cases = {kind: f'    case "{kind}":\n      return {value};' for kind, value in CASES.items()}
    every = compiled(tmp_path / "every", EXHAUSTIVE_SWITCH % "\n".join(cases.values()), models)
    assert every.returncode == 0, every.stdout + every.stderr
    del cases["unsubscribed"]
    missing = compiled(tmp_path / "missing", EXHAUSTIVE_SWITCH % "\n".join(cases.values()), models)
    assert missing.returncode != 0
    assert "TS2322" in missing.stdout and "UnsubscribeAck" in missing.stdout, missing.stdout


def test_the_readme_client_publishes_and_resumes_with_since_against_a_live_service(
    session: list[dict[str, Any]],
):
    kinds = [frame.get("ack", frame["type"]) for frame in session]
    assert not [frame for frame in session if frame["type"] == "error"], session
    assert kinds[:2] == ["welcome", "subscribed"]
    subscribed = session[1]
    assert subscribed["id"] == 1 and set(subscribed["position"]) == {"offset", "epoch"}
    assert sorted(kinds[2:4]) == ["message", "published"]
    published = next(frame for frame in session[2:4] if frame["type"] == "ack")
    live = next(frame for frame in session[2:4] if frame["type"] == "message")
    assert published["id"] == 2 and published["offset"] == live["offset"] == 1
    assert live["channel"] == CHANNEL and live["data"] == {"text": "hi"}
    assert kinds[4:] == ["welcome", "message", "recovered", "unsubscribed"]
    replayed, resumed, unsubscribed = session[5], session[6], session[7]
    assert replayed == live
    assert resumed["recovered"] is True and resumed["replayed"] == 1
    assert resumed["position"] == {"offset": 1, "epoch": live["epoch"]}
    assert unsubscribed["id"] == 2


def test_the_readme_client_s_switch_on_ack_describes_each_ack_it_received(
    client_run: subprocess.CompletedProcess[str], session: list[dict[str, Any]]
):
    assert client_run.stderr.splitlines() == [
        "subscribed, live from offset 0",
        "published at offset 1",
        f'missed {{"text":"hi"}}, sent at {session[5]["sent_at"]}',
        "replayed 1, live from offset 1",
        "unsubscribed",
    ]


@pytest.fixture(scope="module")
def python_models(
    document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleType]:
    """Pydantic models of every payload and schema of the document, by datamodel-code-generator,
    named by their titles, imported."""
    directory = tmp_path_factory.mktemp("python-models")
    messages = document["components"]["messages"]
    payloads = {name: message["payload"] for name, message in messages.items()}
    schemas = document["components"]["schemas"] | {
        payload["title"]: payload for payload in payloads.values()
    }
    text = json.dumps({"$defs": schemas}).replace('"#/components/schemas/', '"#/$defs/')
    for name, payload in payloads.items():
        text = text.replace(
            f'"#/components/messages/{name}/payload"', f'"#/$defs/{payload["title"]}"'
        )
    (directory / "schema.json").write_text(text, "utf-8")
    generated = subprocess.run(
        [
            *(sys.executable, "-m", "datamodel_code_generator"),
            *("--input", str(directory / "schema.json"), "--input-file-type", "jsonschema"),
            *("--output", str(directory / "frames.py")),
            *("--output-model-type", "pydantic_v2.BaseModel", "--use-title-as-name"),
            *("--target-python-version", "3.11", "--formatters", "black"),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert generated.returncode == 0, generated.stderr
    spec = importlib.util.spec_from_file_location(GENERATED_MODULE, directory / "frames.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Pydantic looks its generic models' module up in sys.modules.
    sys.modules[GENERATED_MODULE] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[GENERATED_MODULE]


def test_python_models_of_the_payloads_validate_the_frames_of_a_real_session(
    session: list[dict[str, Any]], python_models: ModuleType
):
    names = [
        ACK_MODELS[frame["ack"]] if frame["type"] == "ack" else frame["type"].capitalize()
        for frame in session
    ]
    for name, frame in zip(names, session, strict=True):
        model = getattr(python_models, name)
        model.model_validate(frame)
        assert set(frame) <= set(model.model_fields), f"{name} renames a field of {frame}"
    replayed = python_models.Message.model_validate(session[5])
    assert replayed.sent_at.utcoffset() is not None
    # The consts and bounds survive: each refuses the frame a neighbour would take.
    refused = [
        ("RecoveredAck", {**session[6], "recovered": False}),
        ("RecoveryFailedAck", session[6]),
        ("PublishAck", {**session[2 if names[2] == "PublishAck" else 3], "offset": 0}),
        ("Message", {**session[5], "type": "ack"}),
    ]
    for name, frame in refused:
        with pytest.raises(pydantic.ValidationError):
            getattr(python_models, name).model_validate(frame)


def test_the_python_ack_union_picks_each_real_ack_s_own_model(
    session: list[dict[str, Any]], python_models: ModuleType, document: dict[str, Any]
):
    acks = [frame for frame in session if frame["type"] == "ack"]
    assert {frame["ack"] for frame in acks} == set(ACK_MODELS) - {"recovery_failed"}
    # No live session of the client fails to recover: the document's example stands in.
    messages = document["components"]["messages"]
    failed = messages["recoveryFailedAck"]["examples"][0]["payload"]
    for frame in [*acks, failed]:
        picked = python_models.Ack.model_validate(frame).root
        assert type(picked) is getattr(python_models, ACK_MODELS[frame["ack"]])
        assert picked.model_dump(mode="json") == frame
    later = python_models.Ack.model_validate({**acks[0], "added_later": True}).root
    assert type(later) is python_models.SubscribeAck
    with pytest.raises(pydantic.ValidationError, match="teleported"):
        python_models.Ack.model_validate({**acks[0], "ack": "teleported"})
