"""Security floors in pyproject.toml, and a lock that satisfies them.

Jinja2 3.1.6 closes a sandbox escape through ``|attr`` (CVE-2025-27516: with
3.1.5 the admin template check returned ``SECRET_KEY``); Django's floor is the
current 6.1 patch release, with its security fixes.
"""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"django": Version("6.1.3"), "jinja2": Version("3.1.6")}


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return {req.name.lower(): req for req in requirements}


def locked() -> dict[str, Version]:
    pins = re.findall(
        r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", (ROOT / "requirements.lock").read_text(), re.M
    )
    return {name.lower(): Version(version) for name, version in pins}


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_pyproject_refuses_versions_below_the_floor(name):
    requirement = declared()[name]
    floor = FLOORS[name]
    assert requirement.specifier.contains(floor), f"{requirement} refuses {floor}"
    below = Version(f"{floor.major}.{floor.minor}.{floor.micro - 1}") if floor.micro else None
    if below is not None:
        assert not requirement.specifier.contains(below), f"{requirement} accepts {below}"
    assert not requirement.specifier.contains(Version("3.1.5") if name == "jinja2" else "6.1.2")


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_the_lock_satisfies_the_floors(name):
    version = locked()[name]
    assert declared()[name].specifier.contains(version), f"requirements.lock pins {name}=={version}"
    assert version >= FLOORS[name]
