#!/usr/bin/env bash
# Runs the sdstudio CLI. On first use (or when pyproject.toml changed) it creates .venv and
# installs sdstudio into it; later calls start at once. Usage: ./run.sh [sdstudio args...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/bootstrap.sh
source "$here/scripts/bootstrap.sh"
sdstudio_bootstrap ""
exec "$here/.venv/bin/sdstudio" "$@"
