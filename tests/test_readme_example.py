"""The README's example is this module: the Python block that follows the marker
``<!-- tested by tests/test_readme_example.py -->`` in README.md, under
"Testing your application with notify", is executed here and its fixtures and
tests are collected as this module's. The README cannot drift from what runs."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- tested by tests/test_readme_example.py -->"

pytest_plugins = ["notify.pytest_plugin"]  # a no-op when the entry point loaded it


def readme_example() -> str:
    """The code block right after the marker."""
    text = README.read_text(encoding="utf-8")
    assert text.count(MARKER) == 1, f"README.md must hold {MARKER} exactly once"
    match = re.match(r"\s*```python\n(.*?)\n```", text.split(MARKER, 1)[1], re.DOTALL)
    assert match, f"a ```python block must follow {MARKER} in README.md"
    return match.group(1)


EXAMPLE = readme_example()
exec(compile(EXAMPLE, str(README), "exec"), globals())  # the README example defines its tests here


def test_the_readme_example_is_collected_here():
    defined = re.findall(r"^def (test_\w+)\(", EXAMPLE, re.MULTILINE)
    assert len(defined) >= 2
    assert all(callable(globals()[name]) for name in defined)
    assert "notify_outbox.assert_not_notified(" in EXAMPLE  # the fixture, too
    # The context manager's example asserts after the block, not inside it.
    after_block = re.search(
        r"^    with capture_notifications\(\) as outbox:\n(?:        .*\n)+(?:    #.*\n)*"
        r"    outbox\.assert_notified\(",
        EXAMPLE,
        re.MULTILINE,
    )
    assert after_block, "README's example must assert after the capture_notifications() block"
