"""README's configuration tables name every environment variable the service
reads, and nothing it does not: settings.py's ``os.environ`` reads, its
``NOTIFY_FROM_ENV`` and channel-switch tables, and ``notify run``'s."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from notify.project import settings as project_settings

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    ROOT / "notify" / "project" / "settings.py",
    ROOT / "notify" / "management" / "commands" / "notify.py",
]
# Read by a library on the service's behalf, not by our code.
READ_BY_LIBRARIES = {"DATABASE_URL"}
# Read by the test suite, not by the service.
NOT_CONFIGURATION = {"PYTEST_VERSION"}
VARIABLE = re.compile(r"`([A-Z][A-Z0-9_]*\*?)`")


def _is_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _text(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def variables_read(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        name = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if (
                isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value)
            ) or (isinstance(func, ast.Name) and func.id in {"env_bool", "env_list"}):
                name = _text(node.args[0])
            elif isinstance(func, ast.Attribute) and func.attr == "startswith":
                prefix = _text(node.args[0])
                name = f"{prefix}*" if prefix and prefix.isupper() else None
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            name = _text(node.slice)
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            name = _text(node.left)
        if name:
            found.add(name)
    return found


def settings_variables() -> set[str]:
    names = set().union(*(variables_read(path) for path in SOURCES))
    names |= set(project_settings.NOTIFY_FROM_ENV) | set(project_settings.OPTIONAL_URL_CHANNELS)
    return (names | READ_BY_LIBRARIES) - NOT_CONFIGURATION


def readme_variables() -> set[str]:
    """Variables named in the first cell of the rows of README's configuration
    tables: those whose header's first cell is "variable" (channel option
    tables, headed "option", name options, not variables)."""
    names: set[str] = set()
    header: str | None = None
    for line in (ROOT / "README.md").read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        first_cell = line.split("|")[1].strip()
        if header is None:
            header = first_cell
        elif header == "variable" and not first_cell.startswith("---"):
            names.update(VARIABLE.findall(first_cell))
    return names


def test_readme_documents_every_variable_the_settings_read():
    missing = settings_variables() - readme_variables()
    assert not missing, f"read by settings but not in README's tables: {sorted(missing)}"


def test_readme_documents_no_variable_the_settings_ignore():
    unknown = readme_variables() - settings_variables()
    assert not unknown, f"in README's tables but never read: {sorted(unknown)}"


def test_readme_commands_work_without_activating_the_venv():
    text = (ROOT / "README.md").read_text()
    bare = [
        line.strip()
        for line in text.splitlines()
        if re.search(r"(?<![/\w.])python manage\.py", line)
    ]
    assert not bare, f"use .venv/bin/python manage.py …: {bare}"
