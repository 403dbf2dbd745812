#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every check: lint, format, types, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest -q -p no:cacheprovider "$@"
