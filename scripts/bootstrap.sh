# Sourced by run.sh and test.sh: make sure .venv exists with sdstudio installed.
# A stamp file records a hash of pyproject.toml and constraints.txt (and the extras asked
# for), so the install runs only on first use or after the dependencies changed.
# constraints.txt pins every package to the version CI last passed with, so a new user
# installs what was tested; scripts/refresh_constraints.sh updates it.

sdstudio_bootstrap() {
    local extras="$1"
    local root venv python stamp want
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    venv="$root/.venv"
    python="${SDSTUDIO_PYTHON:-python3}"
    stamp="$venv/.sdstudio-installed"
    want="$( (cat "$root/pyproject.toml" "$root/constraints.txt"; echo "extras=$extras") | sha256sum | cut -d' ' -f1)"
    if [[ -x "$venv/bin/python" && -f "$stamp" ]] && grep -qx "$want" "$stamp" 2>/dev/null; then
        return 0
    fi
    # An install with the test extras also serves run.sh.
    if [[ -z "$extras" && -f "$stamp" ]] && grep -qx "$( (cat "$root/pyproject.toml" "$root/constraints.txt"; echo "extras=test") | sha256sum | cut -d' ' -f1)" "$stamp"; then
        return 0
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "sdstudio needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2
        exit 1
    fi
    echo "sdstudio: setting up $venv (first run; this downloads PyTorch and takes a few minutes)..." >&2
    [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
    local spec="$root"
    [[ -n "$extras" ]] && spec="$root[$extras]"
    local log="$venv/install.log"
    local constraints=()
    [[ "${SDSTUDIO_UNPINNED:-}" == "1" ]] || constraints=(-c "$root/constraints.txt")
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check "${constraints[@]}" -e "$spec" >"$log" 2>&1; then
        grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 30 >&2
        echo "sdstudio: installation failed; the full log is $log" >&2
        exit 1
    fi
    echo "$want" >"$stamp"
    echo "sdstudio: setup done." >&2
}
