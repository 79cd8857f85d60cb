"""`clicktrail schemas ...`, run as `make schemas-check` and `-register` do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.catalogue import add_optional_color, copy_catalogue, evolved, require_sku
from tests.support.infra import child_env
from tests.support.paths import PROJECT_ROOT


def clicktrail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clicktrail", *args],
        env=child_env(),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_new_optional_property_passes_the_check(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path / "schemas")
    evolved(root, "events/product_viewed", "2-0-1", add_optional_color)

    result = clicktrail("schemas", "check", "--dir", str(root))

    assert result.returncode == 0, result.stdout
    assert "ok    events/product_viewed 2-0-0 -> 2-0-1" in result.stdout


def test_a_new_required_property_fails_the_check_with_a_clear_message(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path / "schemas")
    evolved(root, "events/product_viewed", "2-0-1", require_sku)

    result = clicktrail("schemas", "check", "--dir", str(root))

    assert result.returncode == 1
    assert "FAIL  events/product_viewed 2-0-0 -> 2-0-1 is not backward compatible:" in result.stdout
    assert "/properties/sku: now required (events written for the old version may lack it)" in (
        result.stdout
    )
    assert "new MODEL (e.g. 3-0-0)" in result.stdout


def test_the_shipped_catalogue_passes() -> None:
    result = clicktrail("schemas", "check")

    assert result.returncode == 0, result.stdout


def test_register_needs_a_registry() -> None:
    result = clicktrail("schemas", "register")

    assert result.returncode == 2
    assert "SCHEMA_REGISTRY_URL is not set" in result.stderr
