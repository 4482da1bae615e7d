# Sourced by scripts/start and scripts/test: makes .venv from the pinned requirements.
# Usage: ensure_venv REQUIREMENTS_FILE
set -eu
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

pick_python() {
  for py in python3.11 python3.12 python3.13 python3; do
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  echo "pytbmq needs Python 3.11 or newer (apt-get install python3)" >&2
  return 1
}

ensure_venv() {
  local req="$ROOT/$1" stamp="$VENV/.pytbmq-requirements"
  local want
  want="$(cat "$ROOT/requirements.txt" "$req" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  local py
  py="$(pick_python)"
  if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      echo "Python's venv module is missing: run 'sudo apt-get install python3-venv' first" >&2
      return 1
    fi
  fi
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$ROOT"
  echo "$want" > "$stamp"
}
