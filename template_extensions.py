"""What `_extensions` in cookiecutter.json names: a loader, never edited, for the extensions of
local_extensions.py, which change.

cruft update renders two commits of the template in one process, from one checkout: the
project's and the newest. Python imports a module once per process, so the second render was
handed the first one's extensions: `AttributeError: module 'local_extensions' has no attribute
'PythonVersionExtension'` for every project baked before that extension existed. Whichever
commit's copy of this module a process imports first serves every later render alike, so it
must never change (tests/test_cruft.py holds it to its text): each name is looked up in
local_extensions.py as that file is on disk when the render asks for it.
"""

import hashlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

_EXTENSIONS = Path(__file__).with_name("local_extensions.py")
_by_digest: dict[str, ModuleType] = {}


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    source = _EXTENSIONS.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    if digest not in _by_digest:
        module = ModuleType(f"local_extensions_{digest[:16]}")
        module.__file__ = str(_EXTENSIONS)
        sys.modules[module.__name__] = module
        exec(compile(source, _EXTENSIONS, "exec"), module.__dict__)
        _by_digest[digest] = module
    return getattr(_by_digest[digest], name)
