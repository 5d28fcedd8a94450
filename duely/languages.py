"""Languages a solution may be written in (ids are what Taski's `language` expects)."""

from __future__ import annotations

LANGUAGES: dict[str, str] = {"python": "Python 3", "cpp": "C++17"}


def languages_json() -> list[dict]:
    return [{"id": lang_id, "name": name} for lang_id, name in LANGUAGES.items()]
