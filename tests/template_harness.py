"""The generated harness's modules without Jinja, imported straight from the template."""

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HARNESS_DIR = (
    Path(__file__).resolve().parent.parent / "{{cookiecutter.project_slug}}" / "tests" / "harness"
)
PACKAGE = "template_harness"


def harness_module(name: str) -> ModuleType:
    """The harness's module `name` (embedded, services), as `template_harness.<name>`."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, HARNESS_DIR / "__init__.py", submodule_search_locations=[str(HARNESS_DIR)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{PACKAGE}.{name}")
