#!/usr/bin/env bash
# Installs the local tools ddbcache's tests use; safe to run again (a step whose inputs did not
# change since its last success is skipped), from any directory, on a fresh machine.
#
#   scripts/upstream/node_modules  dynalite (local DynamoDB engine) and the AWS SDK for
#                                  JavaScript v3, from package-lock.json (npm ci)
#   .venv                          moto (local engine with transactions and PartiQL), boto3 and
#                                  pytest, from scripts/requirements.txt
#   redis-server                   the fleet bus the fleet tests start (Debian's package, with
#                                  apt-get, when it is not on PATH)
#
# Usage: scripts/setup.sh [node|python|redis]...   (no argument: all three)
# Needs: node >= 18 with npm, python3 >= 3.9 with the venv module.
# Env: PYTHON (default python3) picks the interpreter for .venv.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
upstream="$root/scripts/upstream"
venv="$root/.venv"
requirements="$root/scripts/requirements.txt"
python="${PYTHON:-python3}"

say() { printf 'setup: %s\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1 || { say "missing '$1': $2" >&2; exit 1; }; }
# A stamp holds the checksum of the inputs of the last successful install.
checksum() { cat "$@" | sha256sum | cut -d' ' -f1; }
up_to_date() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

node_deps() {
    need node "install Node.js 18 or newer"
    need npm "install npm (it comes with Node.js)"
    local stamp="$upstream/node_modules/.ddbcache-setup" sum
    sum="$(checksum "$upstream/package.json" "$upstream/package-lock.json")"
    if up_to_date "$stamp" "$sum" && [[ -f "$upstream/node_modules/dynalite/cli.js" ]]; then
        say "node packages up to date"
        return
    fi
    say "installing node packages in scripts/upstream"
    # No dependency needs an install script: classic-level (dynalite's on-disk store) ships
    # prebuilt binaries, and the tests run dynalite in memory anyway.
    (cd "$upstream" && npm ci --no-audit --no-fund --ignore-scripts)
    printf '%s\n' "$sum" >"$stamp"
}

python_deps() {
    need "$python" "install Python 3 (with its venv module), or set PYTHON"
    # (Re)create it when missing or broken, e.g. after the system python changed version.
    if ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
        say "creating .venv"
        "$python" -m venv --clear "$venv"
    fi
    local stamp="$venv/.ddbcache-setup" sum
    sum="$(checksum "$requirements")"
    if up_to_date "$stamp" "$sum" && [[ -x "$venv/bin/moto_server" ]]; then
        say "python packages up to date"
        return
    fi
    say "installing python packages into .venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    printf '%s\n' "$sum" >"$stamp"
}

redis_server() {
    if command -v redis-server >/dev/null 2>&1; then
        say "redis-server present"
        return
    fi
    need apt-get "install redis-server (or Valkey's valkey-server as redis-server) yourself"
    local sudo=()
    [[ "$(id -u)" == 0 ]] || sudo=(sudo)
    say "installing redis-server with apt-get"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    # The package starts a system-wide server; the tests start their own on free ports.
    if command -v systemctl >/dev/null 2>&1; then "${sudo[@]}" systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
}

parts=("$@")
[[ ${#parts[@]} -gt 0 ]] || parts=(node python redis)
for part in "${parts[@]}"; do
    case "$part" in
        node) node_deps ;;
        python) python_deps ;;
        redis) redis_server ;;
        *) say "unknown part '$part' (expected node, python or redis)" >&2; exit 2 ;;
    esac
done
say "done"
