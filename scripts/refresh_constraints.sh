#!/usr/bin/env bash
# Refresh constraints.txt: install the newest versions pyproject.toml allows into a fresh
# virtual environment, run the test suite there, and only if it passes write the exact
# versions to constraints.txt (commit it with the change that needed it).
#   scripts/refresh_constraints.sh            the default suite must pass
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/tree" HEAD >/dev/null
trap 'git -C "$root" worktree remove --force "$work/tree"; rm -rf "$work"' EXIT
cd "$work/tree"
SDSTUDIO_UNPINNED=1 ./test.sh
.venv/bin/python -m pip freeze --exclude-editable >"$root/constraints.txt"
echo "constraints.txt refreshed ($(wc -l <"$root/constraints.txt") packages); review with: git diff constraints.txt"
