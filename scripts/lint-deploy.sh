#!/usr/bin/env bash
# Lints deploy/ (scripts/lint_deploy.py says what is checked): installs the lint tools into .venv,
# builds ddbcache (whose `check-config --json` reads every config), and runs the linter.
#
#   scripts/lint-deploy.sh          lint deploy/
#   scripts/lint-deploy.sh --test   the linter's own tests (scripts/test_lint_deploy.py)
#
# Tools: pinned in scripts/requirements-lint.txt, installed into .venv (created if missing, with
# python3 >= 3.11 or $PYTHON) and reinstalled only when that file changes. Runs offline once they
# are in.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
requirements="$root/scripts/requirements-lint.txt"
python="${PYTHON:-python3}"

if ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "lint-deploy: needs python3 >= 3.11, or PYTHON set to one" >&2
        exit 1
    fi
    echo "lint-deploy: creating .venv"
    "$python" -m venv --clear "$venv"
fi
stamp="$venv/.ddbcache-lint"
sum="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$sum" ]]; then
    echo "lint-deploy: installing lint tools into .venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    printf '%s\n' "$sum" >"$stamp"
fi

cargo build --quiet --locked --bin ddbcache --manifest-path "$root/Cargo.toml"
binary="${CARGO_TARGET_DIR:-$root/target}/debug/ddbcache"

if [[ "${1:-}" == --test ]]; then
    LINT_DDBCACHE="$binary" exec "$venv/bin/python" -m pytest -q -p no:cacheprovider \
        "$root/scripts/test_lint_deploy.py"
fi
exec "$venv/bin/python" "$root/scripts/lint_deploy.py" --root "$root" --ddbcache "$binary"
