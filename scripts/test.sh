#!/usr/bin/env bash
# The test command: installs what the tests need (a virtualenv with the package, and the Node tools
# from the npm registry) and runs the suite. Extra arguments go to pytest (e.g. --run-slow, -k name).
set -euo pipefail
cd "$(dirname "$0")/.."

# Setup prints nothing of its own for up to a minute: say what is happening (stderr, with the time).
step() { echo "test.sh [$(date +%H:%M:%S)] $*" >&2; }

if [ ! -x .venv/bin/python ]; then
  step "creating the virtualenv .venv"
  python3 -m venv .venv
fi
. .venv/bin/activate
step "installing chatmesh and its test dependencies into .venv (pip; about 20-40 s the first time)"
pip install --quiet --disable-pip-version-check -e '.[dev,embedded]'

# Node tools, pinned: buf (tests/test_contract.py), Redocly's linter for /openapi.json
# (tests/test_openapi_lint.py) and the AsyncAPI parser for /asyncapi.json (tests/test_asyncapi.py).
# Installed again whenever this list changes.
NODE_TOOLS="@bufbuild/buf@1.75.0 @redocly/cli@2.77.0 @asyncapi/parser@3.6.3"
if [ "$(cat .tools/installed 2>/dev/null)" != "$NODE_TOOLS" ]; then
  step "installing the Node tools into .tools (npm: buf, Redocly CLI, AsyncAPI parser)"
  # shellcheck disable=SC2086 # one word per package
  npm install --silent --no-audit --no-fund --prefix .tools $NODE_TOOLS >/dev/null
  echo "$NODE_TOOLS" > .tools/installed
fi
export PATH="$PWD/.tools/node_modules/.bin:$PATH"

# The browser tests (tests/test_web.py) drive Debian's Chromium through Playwright; Playwright's own
# browser download does not work here. Installed once (needs root, as in the CI image).
if ! command -v chromium >/dev/null; then
  step "installing Chromium for the browser tests (apt-get)"
  (apt-get update -qq && apt-get install -y -qq chromium fonts-noto-color-emoji) >/dev/null \
    || echo "warning: could not install chromium: tests/test_web.py will be skipped" >&2
fi

# The manifest tests (tests/test_k8s.py) render deploy/k8s with kustomize, which kubectl embeds;
# this machine image ships kubectl (Debian's kubernetes-client is too old for kustomize v5 files).
if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null; then
  echo "warning: neither kubectl nor kustomize is on PATH: tests/test_k8s.py will fail" >&2
fi

# Lint and types first (configured in pyproject.toml).
step "ruff (lint, format) and mypy (types): a finding fails the run before any test starts"
python -m ruff check .
python -m ruff format --check .
python -m mypy

step "running pytest (about 12 minutes on 2 cores; a dot per test)"
exec python -m pytest "$@"
