#!/usr/bin/env bash
# Runs the test suite in .venv (created on first use, with the test extras).
#   ./test.sh            lint (ruff check, ruff format --check, mypy), then the default suite
#   ./test.sh --slow     only the tests marked slow (long end-to-end runs)
#   ./test.sh ARGS...    extra arguments go to pytest (e.g. -k prompts, tests/models); no lint
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/bootstrap.sh
source "$here/scripts/bootstrap.sh"
sdstudio_bootstrap "test"
cd "$here"
# The web UI tests drive Debian's Chromium headless; install it once if missing.
bash "$here/scripts/install_browser.sh"
marker=()
if [[ "${1:-}" == "--slow" ]]; then
    shift
    marker=(-m slow)
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
if [[ ${#marker[@]} -eq 0 && $# -eq 0 ]]; then
    # Lint first: it takes seconds and names the line; mypy is strict on models/, prompts/, engine/.
    linted=(src tests benchmarks scripts)
    echo "lint: ruff check, ruff format --check, mypy"
    "$here/.venv/bin/ruff" check "${linted[@]}"
    "$here/.venv/bin/ruff" format --check --quiet "${linted[@]}"
    "$here/.venv/bin/mypy" src/sdstudio
fi
set +e
"$here/.venv/bin/python" -m pytest "${marker[@]}" "$@"
rc=$?
set -e
# pytest exits 5 when no test was selected: acceptable only for an empty slow target.
if [[ $rc -eq 5 && ${#marker[@]} -gt 0 ]]; then
    echo "no slow tests selected"
    exit 0
fi
exit $rc
