# Sourced by bin/serve and bin/test: make .venv and install requirements into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Install only when the requirements changed since the last install.
stamp=".venv/.requirements-$(cat "$@" requirements.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  for req in "$@"; do
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  done
  touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
