"""A vulnerable interpreter (CVE-2024-6923, email header injection) refuses to start."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks

from notify.observability.checks import check_interpreter

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("version", [(3, 12, 0), (3, 12, 1), (3, 12, 4), (3, 11, 9)])
def test_a_vulnerable_interpreter_is_refused(version):
    [error] = check_interpreter(version_info=(*version, "final", 0))
    assert error.id == "notify.E210"
    assert error.level == checks.CRITICAL
    assert "CVE-2024-6923" in error.msg
    assert "3.12.5" in error.hint


@pytest.mark.parametrize("version", [(3, 12, 5), (3, 12, 9), (3, 13, 0), (3, 14, 1)])
def test_a_fixed_interpreter_passes(version):
    assert check_interpreter(version_info=(*version, "final", 0)) == []


def test_the_running_interpreter_is_safe():
    assert check_interpreter() == []


def test_the_check_is_registered():
    assert check_interpreter in checks.registry.registry.get_checks()


def test_requires_python_excludes_the_vulnerable_releases():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.12.5"' in text


def test_find_python_skips_vulnerable_candidates_and_says_so(tmp_path):
    old = tmp_path / "old"
    # A fake interpreter that reports 3.12.1 whatever it is asked.
    old.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        "  *version_info\\ \\<*) exit 1 ;;\n"
        "  *print*%d*) echo 3.12.1 ;;\n"
        "esac\n"
    )
    old.chmod(0o755)
    result = subprocess.run(
        [str(ROOT / "scripts" / "find-python")],
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(old), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert f"skipping {old} (Python 3.12.1" in result.stderr
    assert "CVE-2024-6923" in result.stderr
    assert str(old) not in result.stdout


def test_find_python_picks_a_safe_interpreter():
    result = subprocess.run(
        [str(ROOT / "scripts" / "find-python")],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        check=True,
    )
    chosen = result.stdout.strip()
    out = subprocess.run(
        [chosen, "-c", "import sys; print(sys.version_info >= (3, 12, 5))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "True"
