"""A baked service's AsyncAPI document passes the official AsyncAPI parser, `@asyncapi/parser`
on node, which `make install` installs into tools/asyncapi/ from its package-lock.json."""

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEMPLATE_DIR
from tests.generated_runs import clean_environment

PARSER_DIR = TEMPLATE_DIR / "tools" / "asyncapi"
NODE = shutil.which("node")
WRITE_DOCUMENT = """
import json, sys
from {package}.asyncapi import document
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(document(), out)
"""

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed, and the official AsyncAPI parser runs on it"
)


@pytest.fixture(scope="module")
def baked_document(bake: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default bake's /asyncapi.json, as its own builder writes it."""
    project = bake()
    path = tmp_path_factory.mktemp("asyncapi") / "asyncapi.json"
    package = project.name.replace("-", "_")
    subprocess.run(
        [sys.executable, "-c", WRITE_DOCUMENT.format(package=package), str(path)],
        cwd=project,
        env=clean_environment(PYTHONPATH="src"),
        check=True,
        timeout=60,
    )
    return path


def parse(path: Path) -> dict[str, Any]:
    """What the official parser says of the document at `path`: valid, and its diagnostics."""
    if not (PARSER_DIR / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail(f"the AsyncAPI parser is not installed in {PARSER_DIR}: run `make install`")
    assert NODE is not None
    result = subprocess.run(
        [NODE, str(PARSER_DIR / "validate.mjs"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_the_baked_document_passes_the_official_asyncapi_parser(baked_document: Path):
    report = parse(baked_document)
    problems = [d for d in report["diagnostics"] if d["severity"] in ("error", "warning")]
    assert report["valid"], problems
    assert not problems


def test_the_parser_run_catches_a_broken_document(baked_document: Path, tmp_path: Path):
    document = json.loads(baked_document.read_text("utf-8"))
    # A reply naming a message that its channel does not have.
    missing = {"$ref": "#/channels/socket/messages/missing"}
    document["operations"]["ping"]["reply"]["messages"].append(missing)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document), "utf-8")
    report = parse(broken)
    assert not report["valid"]
    assert any(d["severity"] == "error" for d in report["diagnostics"])
