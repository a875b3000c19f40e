# Sourced by dev/test and dev/numbat: make sure .venv holds numbat and what it needs.
# Works on a fresh Debian machine with python3 (root, package registries reachable).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
_apt_install() {
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    fi
}
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then _apt_install python3-venv; fi
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
# Reinstall only when pyproject.toml changed since the last install.
STAMP="$VENV/.numbat-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)-${NUMBAT_EXTRAS:-}"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT${NUMBAT_EXTRAS:+[$NUMBAT_EXTRAS]}"
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
