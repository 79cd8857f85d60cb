"""The checkout the bench runs in."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
