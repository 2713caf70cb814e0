#!/usr/bin/env bash
# Runs the whole test suite: installs the test engines and SDK clients (scripts/setup.sh), then
# cargo's unit, integration and SDK-compatibility tests (boto3 and JavaScript v3 suites are run
# by tests/sdk_clients.rs) of the whole workspace (the server and benches/load). Extra arguments
# go to `cargo test`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo test --locked --workspace "$@"
