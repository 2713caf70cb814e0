#!/usr/bin/env bash
# Runs ddbcache in front of a local DynamoDB engine (dynalite, in memory) that it installs and
# starts itself; Ctrl-C stops both. Works from any directory on a fresh machine with Rust and
# Node.js.
#
#   scripts/run-local.sh
#   AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:8000 aws dynamodb list-tables   # in another shell
#
# Env: DDBCACHE_LISTEN_ADDR [127.0.0.1:8000], DDBCACHE_ADMIN_ADDR [127.0.0.1:9000],
#      DYNALITE_PORT [4567], PROFILE [release] (cargo profile: release or dev),
#      and any other DDBCACHE_* override (config/ddbcache.toml lists them).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { printf 'run-local: %s\n' "$*" >&2; }

listen="${DDBCACHE_LISTEN_ADDR:-127.0.0.1:8000}"
admin="${DDBCACHE_ADMIN_ADDR:-127.0.0.1:9000}"
dynalite_port="${DYNALITE_PORT:-4567}"
profile="${PROFILE:-release}"

bash scripts/setup.sh node
say "building ddbcache ($profile)"
cargo build --locked --profile "$profile" --bin ddbcache
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$profile" == dev ]] && profile_dir=debug || profile_dir="$profile"
binary="$target_dir/$profile_dir/ddbcache"

node scripts/upstream/node_modules/dynalite/cli.js --host 127.0.0.1 --port "$dynalite_port" \
    --createTableMs 0 --deleteTableMs 0 --updateTableMs 0 &
dynalite=$!
cleanup() { kill "$dynalite" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >&2 <<MSG
run-local: dynalite on http://127.0.0.1:$dynalite_port; ddbcache on http://$listen (admin http://$admin)
run-local: point any AWS SDK or the AWS CLI at it:
    export AWS_ENDPOINT_URL_DYNAMODB=http://$listen
    export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
    export AWS_DEFAULT_REGION=us-east-1   # AWS CLI v1 reads this one, not AWS_REGION
run-local: metrics at http://$admin/metrics, cache stats at http://$admin/cache; Ctrl-C stops.
MSG
# Not exec: the EXIT trap must stop dynalite when ddbcache exits.
DDBCACHE_LISTEN_ADDR="$listen" DDBCACHE_ADMIN_ADDR="$admin" \
    DDBCACHE_UPSTREAM_ENDPOINT="http://127.0.0.1:$dynalite_port" DDBCACHE_UPSTREAM_SIGN=false \
    DDBCACHE_UPSTREAM_PIN_REGION=true \
    "$binary" --config config/ddbcache.toml run &
ddbcache=$!
trap 'kill -TERM "$ddbcache" 2>/dev/null || true' INT TERM
status=0
wait "$ddbcache" || status=$?
# A trapped signal ends the wait early: wait again while ddbcache drains.
if kill -0 "$ddbcache" 2>/dev/null; then
    status=0
    wait "$ddbcache" || status=$?
fi
exit "$status"
