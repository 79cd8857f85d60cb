"""The error taxonomy: every exception class Clicktrail defines derives from ClicktrailError and
says whose fault it is, so a new class that forgets fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import clicktrail
from clicktrail.errors import ClicktrailError, Fault

# Imports every module of the package in a child process (entry points configure logging,
# Celery signals and Flask apps as they load: none of that may leak into the tests' process)
# and lists each exception class defined there: its MRO, and its fault and status if any.
_WALK = """
import importlib, inspect, json, pkgutil, clicktrail
from clicktrail.errors import ClicktrailError
found = {}
for info in pkgutil.walk_packages(clicktrail.__path__, "clicktrail."):
    if info.name.rsplit(".", 1)[-1] == "__main__":  # runs the command line
        continue
    module = importlib.import_module(info.name)
    for name, cls in vars(module).items():
        if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == info.name:
            ours = issubclass(cls, ClicktrailError)
            declared = [
                c.__qualname__ for c in cls.__mro__
                if ours and c is not ClicktrailError and issubclass(c, ClicktrailError)
                and "fault" in vars(c)
            ]
            found[f"{info.name}.{name}"] = {
                "ours": ours,
                "declared": declared,
                "fault": str(cls.fault) if ours else None,
                "status": cls.status if ours else None,
            }
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def classes() -> dict[str, dict[str, object]]:
    # The child walks the very package these tests import, wherever it is installed.
    root = str(Path(clicktrail.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _WALK],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_walk_finds_the_package_s_exception_classes(
    classes: dict[str, dict[str, object]],
) -> None:
    for known in (
        "clicktrail.errors.InvalidInput",
        "clicktrail.errors.DependencyUnavailable",
        "clicktrail.config.ConfigError",
        "clicktrail.pipeline.PublishIncomplete",
        "clicktrail.purge.PurgeFailed",
        "clicktrail.message.Unencodable",
    ):
        assert known in classes


def test_every_exception_class_derives_from_clicktrail_error_and_declares_a_fault(
    classes: dict[str, dict[str, object]],
) -> None:
    outside = sorted(name for name, c in classes.items() if not c["ours"])
    assert outside == [], "derive these from ClicktrailError and give them a fault"
    # The base's INTERNAL is only a fallback: each class (or a family it joins) says its own.
    undeclared = sorted(
        name
        for name, c in classes.items()
        if c["ours"] and name != "clicktrail.errors.ClicktrailError" and not c["declared"]
    )
    assert undeclared == []


def test_a_class_s_own_status_lies_within_its_fault_s_family(
    classes: dict[str, dict[str, object]],
) -> None:
    for name, c in classes.items():
        if not c["ours"] or c["status"] is None:
            continue
        assert c["fault"] == Fault.CLIENT, f"{name}: only the client's faults name a status"
        assert 400 <= int(str(c["status"])) < 500, name


def test_every_fault_is_one_of_three() -> None:
    assert {f.value for f in Fault} == {"client", "dependency", "internal"}
    assert ClicktrailError.fault is Fault.INTERNAL
