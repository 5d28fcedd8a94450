"""Languages a solution may be written in (ids are what Taski's `language` expects).

The dev Taski keeps its own list (duely/devtaski/languages.py), as the external service it
stands in for would; tests/devtaski/test_api.py checks that the two agree.
"""

from __future__ import annotations

LANGUAGES: dict[str, str] = {"python": "Python 3", "cpp": "C++17"}


def languages_json() -> list[dict]:
    return [{"id": lang_id, "name": name} for lang_id, name in LANGUAGES.items()]
