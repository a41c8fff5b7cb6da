#!/usr/bin/env bash
# The test command: installs what the tests need (a virtualenv with the package, and the buf CLI
# from the npm registry) and runs the suite. Extra arguments go to pytest (e.g. --run-slow, -k name).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
pip install --quiet --disable-pip-version-check -e '.[dev,embedded]'

if [ ! -x .tools/node_modules/.bin/buf ]; then
  npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0 >/dev/null
fi
export PATH="$PWD/.tools/node_modules/.bin:$PATH"

# The browser tests (tests/test_web.py) drive Debian's Chromium through Playwright; Playwright's own
# browser download does not work here. Installed once (needs root, as in the CI image).
if ! command -v chromium >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq chromium fonts-noto-color-emoji) >/dev/null \
    || echo "warning: could not install chromium: tests/test_web.py will be skipped" >&2
fi

# The manifest tests (tests/test_k8s.py) render deploy/k8s with kustomize, which kubectl embeds;
# this machine image ships kubectl (Debian's kubernetes-client is too old for kustomize v5 files).
if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null; then
  echo "warning: neither kubectl nor kustomize is on PATH: tests/test_k8s.py will fail" >&2
fi

# Lint and types first (configured in pyproject.toml): a finding fails the run before any test starts.
python -m ruff check .
python -m mypy

exec python -m pytest "$@"
