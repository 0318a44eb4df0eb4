"""A baked service's AsyncAPI document as a client team uses it: `make client-ts` generates
TypeScript models, the generated README's client compiles against them with `tsc --strict` and
talks to a live service, and Python models that datamodel-code-generator makes from the payload
schemas validate the frames that session received.

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


@pytest.fixture(scope="module")
def session(
    project: Path, models: Path, service: Service, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    """Every frame the README's client received from the live service, in order, compiled with
    the models under tsc --strict."""
    client = tmp_path_factory.mktemp("client")
    (client / "client.ts").write_text(readme_client(project), "utf-8")
    shutil.copy(models, client / "models.ts")
    (client / "tsconfig.json").write_text(json.dumps(TS_CONFIG), "utf-8")
    (client / "package.json").write_text('{"type": "module"}', "utf-8")
    (client / "node_modules").symlink_to(CLIENT_TOOLS / "node_modules")
    tsc = CLIENT_TOOLS / "node_modules" / ".bin" / "tsc"
    compiled = subprocess.run(
        [str(tsc), "-p", str(client)], capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
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
    return [json.loads(line) for line in ran.stdout.splitlines()]


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
    assert {"ClientFrame", "ServerFrame", "SubscribeReply", "PublishReply"} <= set(exported)
    assert not [name for name in exported if name.startswith("AnonymousSchema")]
    assert "Socket" not in exported
    for renamed in ("reservedType", "sentAt", "additionalProperties"):
        assert renamed not in source
    message = source.split("export interface Message {", 1)[1].split("}", 1)[0]
    assert "type: 'message';" in message
    assert "sent_at: string;" in message
    failed = source.split("export interface RecoveryFailedAck {", 1)[1].split("}", 1)[0]
    assert "recovered: false;" in failed


def test_the_readme_client_publishes_and_resumes_with_since_against_a_live_service(
    session: list[dict[str, Any]],
):
    kinds = [frame["type"] for frame in session]
    assert not [frame for frame in session if frame["type"] == "error"], session
    assert kinds[:2] == ["welcome", "ack"]
    subscribed = session[1]
    assert subscribed["id"] == 1 and set(subscribed["position"]) == {"offset", "epoch"}
    published = next(frame for frame in session[2:4] if frame["type"] == "ack")
    live = next(frame for frame in session[2:4] if frame["type"] == "message")
    assert published["id"] == 2 and published["offset"] == live["offset"] == 1
    assert live["channel"] == CHANNEL and live["data"] == {"text": "hi"}
    assert kinds[4:] == ["welcome", "message", "ack"]
    replayed, resumed = session[5], session[6]
    assert replayed == live
    assert resumed["recovered"] is True and resumed["replayed"] == 1
    assert resumed["position"] == {"offset": 1, "epoch": live["epoch"]}


@pytest.fixture(scope="module")
def python_models(
    document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleType]:
    """Pydantic models of every payload and schema of the document, by datamodel-code-generator,
    named by their titles, imported."""
    directory = tmp_path_factory.mktemp("python-models")
    schemas = document["components"]["schemas"] | {
        message["payload"]["title"]: message["payload"]
        for message in document["components"]["messages"].values()
    }
    text = json.dumps({"$defs": schemas}).replace('"#/components/schemas/', '"#/$defs/')
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
    names = ["Welcome", "SubscribeAck", "?", "?", "Welcome", "Message", "RecoveredAck"]
    for index in (2, 3):
        names[index] = "PublishAck" if session[index]["type"] == "ack" else "Message"
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
