"""The toml filter, the hook helpers, and the hooks as cookiecutter runs them."""

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from cookiecutter.environment import StrictEnvironment
from cookiecutter.exceptions import FailedHookException

from hooks.post_gen_project import OPTIONAL_DIRS, next_steps, remove_empty_optional_dirs
from hooks.post_gen_project import main as post_gen_main
from hooks.pre_gen_project import (
    CI_SERVICES,
    DEPENDENCY_IMPORT_NAMES,
    DEPLOY,
    LICENSES,
    PYTHON_VERSIONS,
    TRACING,
    YES_NO,
    main,
    validate,
)
from local_extensions import newest_python, toml_string, version_key
from tests.conftest import (
    TEMPLATE_CONTEXT,
    TEMPLATE_DIR,
    bake_into,
    baked_metadata,
    default_answer,
    expected_metadata,
)

VALID = {
    "project_name": "Chat Service",
    "project_slug": "chat-service",
    "package_name": "chat_service",
    "description": "A real-time WebSocket service.",
    "author_name": "Platform Team",
    "author_email": "platform@example.com",
    "license": "MIT",
    "python_version": "3.12",
    "ci": "github",
    "docker": "yes",
    "tracing": "none",
    "deploy": "none",
}
BLANK = "it must not be blank"
NAME_TOO_LONG = "it must be at most 300 characters long"
ONE_LINE = "it must be a single line without control characters"
SLUG_SHAPE = (
    "it must be lowercase ASCII letters and digits in words joined by single hyphens,"
    " starting with a letter"
)
SLUG_TOO_LONG = "it must be at most 50 characters long"
PACKAGE_SHAPE = (
    "it must be lowercase ASCII letters, digits and underscores, not starting with a digit"
)
KEYWORD = "it is a Python keyword"
UNDERIVABLE = "project_name has no ASCII letters or digits to derive it from; give one"
EMAIL_SHAPE = "it must look like name@example.com"
VERSION = "it must be one of 3.11, 3.12, 3.13"
CI = "it must be one of github, gitlab, none"
DOCKER = "it must be one of yes, no"
LICENSE = "it must be one of MIT, Apache-2.0, BSD-3-Clause, Proprietary"
TRACING_CHOICE = "it must be one of none, otel"
DEPLOY_CHOICE = "it must be one of none, kubernetes"
NOT_STRING = "it must be a string"


def error_line(field: str, value: object, reason: str) -> str:
    """Return the line the pre-gen hook prints for an invalid answer."""
    return f"ERROR: {field} {value!r} is invalid: {reason}"


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        'say "hi"',
        "it's",
        "back\\slash \\n \\u0041",
        'three """ double',
        "three ''' single",
        "line\nbreak\r\n",
        "tab\there",
        "nul\x00 del\x7f bell\x07 escape\x1b",
        "c1 control\x85 and nbsp\xa0",
        "Zoë Ærøskøbing 日本語",
        "rocket 🚀, astral 𝄞",
        "".join(map(chr, range(0x80))),
        "",
    ],
)
def test_toml_string_round_trips(value: str) -> None:
    assert tomllib.loads(f"x = {toml_string(value)}")["x"] == value


def test_toml_string_escapes_every_ascii_control_character() -> None:
    rendered = toml_string("".join(map(chr, range(0x20))) + "\x7f")
    assert rendered.isprintable()
    assert rendered == (
        r'"\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000B\f\r\u000E\u000F'
        r"\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001A\u001B\u001C"
        r'\u001D\u001E\u001F\u007F"'
    )


def test_toml_string_escapes_quotes_and_backslashes_and_keeps_non_ascii() -> None:
    assert toml_string('a "b" \\c') == r'"a \"b\" \\c"'
    assert toml_string("Zoë 🚀") == '"Zoë 🚀"'


def test_toml_filter_is_loaded_from_cookiecutter_json() -> None:
    env = StrictEnvironment(context={"cookiecutter": TEMPLATE_CONTEXT})
    rendered = env.from_string("x = {{ value | toml }}").render(value='"""\n🚀')
    assert tomllib.loads(rendered)["x"] == '"""\n🚀'


RUNNING = "{}.{}".format(*sys.version_info[:2])
SUPPORTED: list[str] = TEMPLATE_CONTEXT["_python_versions"]
needs_supported_python = pytest.mark.skipif(
    RUNNING not in SUPPORTED, reason=f"runs this Python {RUNNING} as a supported one"
)


def path_of(directory: Path, **commands: Path | str) -> str:
    """A PATH of `directory` alone, holding each command: a link to an interpreter, or a script."""
    directory.mkdir(exist_ok=True)
    for name, target in commands.items():
        command = directory / name
        if isinstance(target, Path):
            command.symlink_to(target)
        else:
            command.write_text(f"#!/bin/sh\n{target}\n", encoding="utf-8")
            command.chmod(0o755)
    return str(directory)


@needs_supported_python
def test_newest_python_is_the_newest_supported_one_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    newer = [version for version in SUPPORTED if version_key(version) > version_key(RUNNING)]
    # A pyenv shim for a version not selected fails like this one; an alias for another
    # version answers with that one's version: neither is taken for the version it is named.
    commands: dict[str, Path | str] = {
        f"python{RUNNING}": Path(sys.executable),
        **{f"python{version}": "echo 'command not found' >&2; exit 127" for version in newer[:1]},
        **{f"python{version}": Path(sys.executable) for version in newer[1:]},
    }
    monkeypatch.setenv("PATH", path_of(tmp_path, **commands))
    assert newest_python(SUPPORTED) == RUNNING


@needs_supported_python
def test_newest_python_takes_python3_for_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_of(tmp_path, python3=Path(sys.executable)))
    assert newest_python(SUPPORTED) == RUNNING


def test_newest_python_without_one_on_path_is_the_newest_supported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_of(tmp_path, python3="exit 1"))
    assert newest_python(["3.11", "3.13", "3.12"]) == "3.13"


@needs_supported_python
def test_a_bake_without_input_asks_for_the_python_it_finds(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    path = path_of(tmp_path / "bin", **{f"python{RUNNING}": Path(sys.executable)})
    result = cli("--no-input", PATH=path)
    assert result.returncode == 0, result.stderr
    pyproject = tomllib.loads((tmp_path / "out/chat-service/pyproject.toml").read_text("utf-8"))
    assert pyproject["project"]["requires-python"] == f">={RUNNING}"


def test_valid_answers_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert validate(VALID) is None
    assert main(VALID) == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("project_name", "Zoë Ærøskøbing 日本語 🚀"),
        ("project_name", "O'Brien's \"quoted\" back\\slash"),
        ("project_name", "x" * 300),
        ("project_slug", "chat"),
        ("project_slug", "chat-service-2"),
        ("project_slug", "a" * 50),
        ("package_name", "chat_service"),
        ("package_name", "_private2"),
        # Soft keywords are valid identifiers.
        ("package_name", "match"),
        ("package_name", "type"),
        ("author_email", "first.last+tag@mail.example.co.uk"),
        ("author_email", "zoë@exämple.dk"),
        *(("python_version", version) for version in TEMPLATE_CONTEXT["_python_versions"]),
        *(("ci", service) for service in TEMPLATE_CONTEXT["ci"]),
        *(("docker", answer) for answer in TEMPLATE_CONTEXT["docker"]),
        *(("license", answer) for answer in TEMPLATE_CONTEXT["license"]),
        *(("tracing", answer) for answer in TEMPLATE_CONTEXT["tracing"]),
    ],
)
def test_valid_value_passes(field: str, value: str) -> None:
    assert validate({**VALID, field: value}) is None


INVALID = [
    ("project_name", "", BLANK),
    ("project_name", " \t ", BLANK),
    ("project_name", "x" * 301, NAME_TOO_LONG),
    ("project_name", "Chat\nService", ONE_LINE),
    ("project_name", "Chat\x7fService", ONE_LINE),
    ("project_slug", "", SLUG_SHAPE),
    ("project_slug", "_", UNDERIVABLE),
    ("project_slug", "Chat-Service", SLUG_SHAPE),
    ("project_slug", "chat_service", SLUG_SHAPE),
    ("project_slug", "chat service", SLUG_SHAPE),
    ("project_slug", "-chat", SLUG_SHAPE),
    ("project_slug", "chat-", SLUG_SHAPE),
    ("project_slug", "chat--service", SLUG_SHAPE),
    ("project_slug", "2chat", SLUG_SHAPE),
    ("project_slug", "chat\n", SLUG_SHAPE),
    ("project_slug", "çhat", SLUG_SHAPE),
    ("project_slug", "../escape", SLUG_SHAPE),
    ("project_slug", "{{ cookiecutter.project_name }}", SLUG_SHAPE),
    ("project_slug", "a" * 51, SLUG_TOO_LONG),
    ("package_name", "", PACKAGE_SHAPE),
    ("package_name", "Chat", PACKAGE_SHAPE),
    ("package_name", "chat-service", PACKAGE_SHAPE),
    ("package_name", "2chat", PACKAGE_SHAPE),
    ("package_name", "çhat", PACKAGE_SHAPE),
    ("package_name", "chat\n", PACKAGE_SHAPE),
    ("package_name", "class", KEYWORD),
    ("package_name", "import", KEYWORD),
    ("package_name", "json", "it would shadow the standard library module 'json'"),
    ("package_name", "email", "it would shadow the standard library module 'email'"),
    *(
        ("package_name", name, f"it would shadow the dependency {name!r}")
        for name in sorted(DEPENDENCY_IMPORT_NAMES)
    ),
    ("package_name", "src", "it would clash with the project's own top-level 'src'"),
    ("package_name", "tests", "it would clash with the project's own top-level 'tests'"),
    ("author_email", "", EMAIL_SHAPE),
    ("author_email", "platform", EMAIL_SHAPE),
    ("author_email", "platform@example", EMAIL_SHAPE),
    ("author_email", "plat form@example.com", EMAIL_SHAPE),
    ("author_email", "a@b@example.com", EMAIL_SHAPE),
    ("author_email", "platform@example.com\n", EMAIL_SHAPE),
    ("python_version", "3.10", VERSION),
    ("python_version", "3.14", VERSION),
    ("python_version", " 3.12", VERSION),
    ("python_version", 3.12, NOT_STRING),
    ("ci", "travis", CI),
    ("ci", "GitHub", CI),
    ("ci", "", CI),
    ("docker", "true", DOCKER),
    ("license", "mit", LICENSE),
    ("license", "GPL-3.0", LICENSE),
    ("docker", True, NOT_STRING),
    ("tracing", "opentelemetry", TRACING_CHOICE),
    ("tracing", "OTEL", TRACING_CHOICE),
    ("deploy", "k8s", DEPLOY_CHOICE),
    ("project_name", None, NOT_STRING),
]


@pytest.mark.parametrize(("field", "value", "reason"), INVALID)
def test_invalid_value_is_reported_on_one_line(
    field: str, value: object, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = error_line(field, value, reason)
    assert validate({**VALID, field: value}) == expected
    assert main({**VALID, field: value}) == 1
    assert capsys.readouterr() == ("", f"{expected}\n")


def test_first_failing_check_wins() -> None:
    answers = {**VALID, "python_version": "2.7", "author_email": "nobody", "package_name": "redis"}
    assert validate(answers) == error_line(
        "package_name", "redis", "it would shadow the dependency 'redis'"
    )


@pytest.mark.parametrize(
    ("option", "choices"),
    [
        ("_python_versions", PYTHON_VERSIONS),
        ("ci", CI_SERVICES),
        ("docker", YES_NO),
        ("tracing", TRACING),
        ("deploy", DEPLOY),
        ("license", LICENSES),
    ],
)
def test_hook_choices_match_the_template_choices(option: str, choices: tuple[str, ...]) -> None:
    assert sorted(choices) == sorted(TEMPLATE_CONTEXT[option])


PROJECT_TEMPLATE = TEMPLATE_DIR / "{{cookiecutter.project_slug}}"
# How the project template names a file that only some answers bake.
CONDITIONAL_NAME = re.compile(
    r"\{% if cookiecutter\.(?P<option>\w+) (==|!=) '(?P<answer>[^']*)' %\}[^{}%]+\{% endif %\}"
)


def conditional(path: Path) -> bool:
    """Whether a file of the project template has a Jinja condition for its name."""
    return "{%" in path.name


def test_conditional_names_test_an_answer_the_question_offers() -> None:
    # A misspelt answer would make its file silently never bake.
    names = [path.name for path in PROJECT_TEMPLATE.rglob("*") if conditional(path)]
    assert names
    for name in names:
        match = CONDITIONAL_NAME.fullmatch(name)
        assert match, name
        assert match["answer"] in TEMPLATE_CONTEXT[match["option"]], name


def test_optional_dirs_are_the_dirs_holding_only_conditional_files() -> None:
    # A directory whose files may all be skipped is created anyway, and must be tidied away.
    files_by_dir = {
        path: [file for file in path.rglob("*") if file.is_file()]
        for path in PROJECT_TEMPLATE.rglob("*")
        if path.is_dir()
    }
    # A directory without files (a leftover of some local run) is nothing git would carry.
    only_conditional = [
        str(path.relative_to(PROJECT_TEMPLATE))
        for path, files in files_by_dir.items()
        if files and all(map(conditional, files))
    ]
    assert sorted(OPTIONAL_DIRS) == sorted(only_conditional)
    # Innermost first, so that emptying a directory can empty its parent.
    for index, directory in enumerate(OPTIONAL_DIRS):
        later = OPTIONAL_DIRS[index + 1 :]
        assert not any(path.startswith(f"{directory}/") for path in later), directory


def test_remove_empty_optional_dirs_keeps_any_that_hold_something(tmp_path: Path) -> None:
    empty, kept = tmp_path / "empty", tmp_path / "kept"
    for project_dir in (empty, kept):
        for relative in OPTIONAL_DIRS:
            (project_dir / relative).mkdir(parents=True, exist_ok=True)
    (kept / ".github" / "workflows" / "release.yml").write_text("x", encoding="utf-8")
    remove_empty_optional_dirs(empty)
    remove_empty_optional_dirs(kept)
    assert list(empty.iterdir()) == []
    assert (kept / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8") == "x"


# A team's own files at the paths of the optional files, as an existing project may hold them.
TEAM_FILES = {
    ".gitlab-ci.yml": "# our own pipeline\n",
    "Dockerfile": "FROM scratch\n",
    ".dockerignore": "*\n",
    "docker-compose.yml": "services: {}\n",
    ".github/workflows/release.yml": "name: release\n",
    ".github/CODEOWNERS": "* @platform\n",
}
DOCKER_FILES = {"Dockerfile", ".dockerignore", "docker-compose.yml"}


@pytest.mark.parametrize(
    ("ci", "docker", "overwritten"),
    [
        ("github", "no", set()),
        ("none", "no", set()),
        ("gitlab", "no", {".gitlab-ci.yml"}),
        ("none", "yes", DOCKER_FILES),
    ],
)
def test_forced_bake_over_a_project_touches_only_the_files_it_renders(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    ci: str,
    docker: str,
    overwritten: set[str],
) -> None:
    project_dir = tmp_path / "out" / "chat-service"
    for relative, content in TEAM_FILES.items():
        (project_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (project_dir / relative).write_text(content, encoding="utf-8")
    result = cli("--no-input", "--overwrite-if-exists", f"ci={ci}", f"docker={docker}")
    assert result.returncode == 0, result.stdout + result.stderr
    unchanged = {
        relative
        for relative, content in TEAM_FILES.items()
        if (project_dir / relative).read_text(encoding="utf-8") == content
    }
    assert unchanged == set(TEAM_FILES) - overwritten
    assert (project_dir / ".github" / "workflows" / "ci.yml").is_file() is (ci == "github")


@pytest.mark.parametrize("hook", sorted((TEMPLATE_DIR / "hooks").glob("*_project.py")))
def test_hooks_hold_no_jinja_but_the_answers(hook: Path) -> None:
    # Cookiecutter renders hooks as templates; any other Jinja syntax would be a silent bug.
    source = hook.read_text(encoding="utf-8")
    assert source.count("{{") == source.count('r"""{{ cookiecutter | tojson }}"""') == 1
    assert "{%" not in source
    assert "{#" not in source


def test_next_steps_name_the_project_commands_and_test_services(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project_dir = tmp_path / "my projects" / "chat-service"
    post_gen_main(VALID, project_dir)
    printed = capsys.readouterr().out
    assert printed == next_steps(VALID, project_dir) + "\n"
    assert f"Created Chat Service in {project_dir}\n" in printed
    assert f"cd '{project_dir}'\n" in printed
    assert "git init" in printed
    assert "make test" in printed
    assert "TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres)" in printed
    assert "TEST_REDIS_URL (default redis://127.0.0.1:6379/0)" in printed
    assert "make dev" in printed


def test_cli_bake_prints_next_steps(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    result = cli("--no-input")
    assert result.returncode == 0, result.stdout + result.stderr
    expected = next_steps(
        {"project_name": default_answer("project_name")}, tmp_path / "out" / "chat-service"
    )
    assert expected in result.stdout


REJECTIONS = [
    ({"project_name": ""}, error_line("project_name", "", BLANK)),
    ({"project_name": "  ", "project_slug": "chat"}, error_line("project_name", "  ", BLANK)),
    # Nothing for slugify to keep: the slug falls back to one the hook explains.
    ({"project_name": "🚀 🔥"}, error_line("project_slug", "_", UNDERIVABLE)),
    ({"project_name": "---"}, error_line("project_slug", "_", UNDERIVABLE)),
    ({"project_name": "Chat\nService"}, error_line("project_name", "Chat\nService", ONE_LINE)),
    ({"project_name": "x " * 151}, error_line("project_name", "x " * 151, NAME_TOO_LONG)),
    ({"project_slug": "../escape"}, error_line("project_slug", "../escape", SLUG_SHAPE)),
    # Cookiecutter renders answers as templates once; the result must still be a valid slug.
    (
        {"project_slug": "{% raw %}{{ x }}{% endraw %}"},
        error_line("project_slug", "{{ x }}", SLUG_SHAPE),
    ),
    ({"project_slug": "a" * 51}, error_line("project_slug", "a" * 51, SLUG_TOO_LONG)),
    ({"package_name": "Chat"}, error_line("package_name", "Chat", PACKAGE_SHAPE)),
    ({"package_name": "class"}, error_line("package_name", "class", KEYWORD)),
    # Derived from the project name through the slug.
    (
        {"project_name": "Email"},
        error_line("package_name", "email", "it would shadow the standard library module 'email'"),
    ),
    (
        {"project_name": "Redis"},
        error_line("package_name", "redis", "it would shadow the dependency 'redis'"),
    ),
    (
        {"package_name": "tests"},
        error_line(
            "package_name", "tests", "it would clash with the project's own top-level 'tests'"
        ),
    ),
    ({"author_email": "platform"}, error_line("author_email", "platform", EMAIL_SHAPE)),
]


# Baked through the API, in this process: the hook is the same child process as under the CLI,
# and what the CLI prints around the hook's line has a test of its own below.
@pytest.mark.parametrize(("context", "expected"), REJECTIONS)
def test_invalid_answer_is_refused_in_one_line_and_leaves_nothing(
    tmp_path: Path,
    cookiecutter_config: Path,
    capfd: pytest.CaptureFixture[str],
    context: dict[str, str],
    expected: str,
) -> None:
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    with pytest.raises(FailedHookException):
        bake_into(output_dir, cookiecutter_config, **context)
    # Looking at tmp_path, not just the output dir, also catches slugs like '../escape'.
    assert [path.name for path in tmp_path.rglob("*")] == ["out"]
    # The hook runs in a child process that writes straight to file descriptor 2.
    assert capfd.readouterr().err.splitlines() == [expected]


def test_cli_forced_bake_of_a_name_without_a_slug_writes_nothing(
    cli_fails: Callable[..., str],
) -> None:
    # An empty slug would make the output directory itself the project directory.
    stderr = cli_fails("--no-input", "--overwrite-if-exists", "project_name=🚀")
    assert stderr.splitlines() == [error_line("project_slug", "_", UNDERIVABLE)]


def test_cli_refusal_is_the_hooks_line_then_cookiecutters_two(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = cli("--no-input", "package_name=class")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [error_line("package_name", "class", KEYWORD)]
    # No traceback: local_extensions.QuietHookFailures keeps cookiecutter's log to its message.
    assert result.stdout.splitlines() == [
        "ERROR: Stopping generation because pre_gen_project hook script didn't exit successfully",
        "Hook script failed (exit status: 1)",
    ]


def test_cli_rejects_python_version_from_a_replay_file(
    cli_fails: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    replay_file = tmp_path_factory.mktemp("replay") / "answers.json"
    answers = {**TEMPLATE_CONTEXT, **VALID, "python_version": "3.10"}
    replay_file.write_text(json.dumps({"cookiecutter": answers}), encoding="utf-8")
    stderr = cli_fails("--replay-file", str(replay_file))
    assert stderr.splitlines() == [error_line("python_version", "3.10", VERSION)]


def test_cli_refuses_an_unsupported_python_version_in_one_line(
    bake_fails: Callable[..., str],
) -> None:
    assert bake_fails(python_version="3.10").splitlines() == [
        error_line("python_version", "3.10", VERSION)
    ]


def test_cli_refuses_unknown_choice(bake_fails: Callable[..., str]) -> None:
    # Cookiecutter checks choices before any template code runs; its traceback ends thus.
    choices = TEMPLATE_CONTEXT["ci"]
    assert bake_fails(ci="travis").splitlines()[-1] == (
        f"ValueError: travis provided for choice variable ci, but the choices are {choices}."
    )


# Attempts to end the string literal that carries the answers into the hooks and run code.
BREAKOUTS = {
    "double-quote": '"; import os; os.system("touch MARKER"); x = "',
    "triple-double-quote": '"""; import os; os.system("touch MARKER"); x = """',
    "triple-single-quote": "'''; import os; os.system('touch MARKER'); x = '''",
    "escaped-quote": '\\"""; import os; os.system("touch MARKER"); x = """',
    "close-json-first": '"}"""; import os; os.system("touch MARKER"); r"""{"',
}


@pytest.mark.parametrize("field", ["project_name", "description", "author_name"])
@pytest.mark.parametrize("breakout", list(BREAKOUTS.values()), ids=list(BREAKOUTS))
def test_quotes_in_answers_stay_literal_text(
    bake: Callable[..., Path], tmp_path: Path, field: str, breakout: str
) -> None:
    marker = tmp_path / "pwned"
    value = breakout.replace("MARKER", str(marker))
    project_dir = bake(**{field: value})
    assert baked_metadata(project_dir) == expected_metadata(project_dir, **{field: value})
    assert not marker.exists()


@pytest.mark.parametrize(
    ("answer", "description"),
    [
        # Cookiecutter renders every answer as a template once, before the hooks run, ...
        ("{{ cookiecutter.project_name }}!", "Chat Service!"),
        # ... and then only ever inserts the result as data.
        ("{% raw %}{{ cookiecutter.project_name }}{% endraw %}", "{{ cookiecutter.project_name }}"),
    ],
)
def test_jinja_in_answers_is_rendered_once_then_kept_as_data(
    bake: Callable[..., Path], answer: str, description: str
) -> None:
    assert baked_metadata(bake(description=answer))["description"] == description


@pytest.mark.parametrize(
    "context",
    [
        # Answers are rendered in order, so a later one is still undefined.
        {"project_name": "{{ cookiecutter.author_name }}"},
        {"description": "{% raw %}{{ unterminated"},
        {"author_name": "{{ no_such_name }}"},
    ],
)
def test_jinja_errors_in_answers_fail_cleanly(
    bake_fails: Callable[..., str], context: dict[str, str]
) -> None:
    bake_fails(**context)
