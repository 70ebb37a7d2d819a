"""The language table: one row per kernel runtime, data rather than `if lang ==` chains.

A row names the canonical lang, its aliases (spec §8.2), and the batch-mode
commands that `"*"` means for build, exec and clean (spec §8.4, KR-1.x).
Adding a language is adding a row (and its runtime on the host).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    name: str
    aliases: tuple[str, ...]
    build: str  # what "*" means; "" = nothing to do
    exec: str
    clean: str = ""


LANGUAGES: tuple[Language, ...] = (
    Language(
        "python3",
        aliases=("python", "python34", "python35", "python36"),
        build="if [ -f setup.py ]; then python3 setup.py develop --user; fi",
        exec="python3 main.py",
    ),
)

_BY_NAME: dict[str, Language] = {
    alias: lang for lang in LANGUAGES for alias in (lang.name, *lang.aliases)
}


def names() -> list[str]:
    return sorted(lang.name for lang in LANGUAGES)


def resolve(lang: str) -> Language | None:
    """The row for a lang or alias; a `name:tag` form ([v3]) uses the name."""
    return _BY_NAME.get(lang.split(":", 1)[0])


def batch_command(value: object, default: str) -> str:
    """A batch step as sent by a client: "*" is the default, null/""/missing skip."""
    if value == "*":
        return default
    return value if isinstance(value, str) else ""
