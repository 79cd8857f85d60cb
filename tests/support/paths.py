"""Where the tests find the checkout's files (the compose file, the Procfile, the catalogue, the
examples); the package itself never looks outside its own directory."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
