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
# Reinstall only when pyproject.toml changed since the last install, or an extra is
# asked for that is not installed yet (dev/test wants [test], dev/numbat none: running
# one after the other must not reinstall each time).
STAMP="$VENV/.numbat-installed"
HASH="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
HAVE_HASH="" HAVE_EXTRAS=""
if [ -f "$STAMP" ]; then read -r HAVE_HASH HAVE_EXTRAS < "$STAMP" || true; fi
[ "$HAVE_HASH" = "$HASH" ] || HAVE_EXTRAS=""
EXTRAS="$HAVE_EXTRAS" NEED=""
[ "$HAVE_HASH" = "$HASH" ] || NEED=1
for extra in ${NUMBAT_EXTRAS:+${NUMBAT_EXTRAS//,/ }}; do
    case ",$EXTRAS," in
        *",$extra,"*) ;;
        *) EXTRAS="${EXTRAS:+$EXTRAS,}$extra"; NEED=1 ;;
    esac
done
if [ -n "$NEED" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT${EXTRAS:+[$EXTRAS]}"
    echo "$HASH $EXTRAS" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
