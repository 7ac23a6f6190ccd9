#!/usr/bin/env bash
# The test suite: lint, strict typing, then pytest. Expects tools/install.sh to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PACKAGES=(common guest initializer meshproxy image attestation coordinator oci genpolicy runtime)
present=()
for p in "${PACKAGES[@]}"; do [ -d "$p" ] && present+=("$p"); done
echo "== ruff"
$PY -m ruff check "${present[@]}" tools tests
echo "== mypy --strict"
$PY -m mypy --strict --explicit-package-bases "${present[@]}" tools
echo "== pytest"
set +e
$PY -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
