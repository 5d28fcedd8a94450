"""The languages the development Taski judges, and how each is built and run.

Its own list, not Duely's (duely/languages.py): it stands in for an external service. A test
(tests/devtaski/test_api.py) keeps the two in agreement.

Commands name the program's directory as `{box}`: the sandbox substitutes the path the
program sees (`/box` under bubblewrap, the real directory otherwise).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass

SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class Language:
    id: str
    name: str
    source_name: str
    run: tuple[str, ...]
    compile: tuple[str, ...] | None = None

    def public(self) -> dict:
        return {"id": self.id, "name": self.name}


def solution_python() -> str:
    """The interpreter for solutions: the system one when present (it lives under /usr, which the
    sandbox can expose read-only and which any uid can read), else our own."""
    return SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else os.path.realpath(sys.executable)


def runtime_paths() -> list[str]:
    """Directories outside /usr that the sandbox must expose read-only for the languages to run."""
    python = solution_python()
    return [] if python.startswith("/usr/") else [os.path.realpath(sys.base_prefix)]


def available_languages() -> dict[str, Language]:
    """Python always; C++ only when g++ is installed."""
    languages = {
        # -I: no user site, no PYTHON* variables, no script dir surprises; -B: never write .pyc
        "python": Language("python", "Python 3", "solution.py", (solution_python(), "-I", "-B", "{box}/solution.py")),
    }
    gxx = shutil.which("g++")
    if gxx:
        languages["cpp"] = Language("cpp", "C++17", "solution.cpp", ("{box}/solution",),
                                    compile=(gxx, "-O2", "-std=c++17", "-o", "{box}/solution", "{box}/solution.cpp"))
    return languages
