#!/usr/bin/env bash
# Run a benchmark against PostgreSQL 18 (builds and installs first):
#   scripts/bench.sh read [--rows N] [--repeat N]
#   scripts/bench.sh write [--rows N] [--commits N]
#   scripts/bench.sh ivm [--sizes 1000000,10000000] [--repeat N]
#   scripts/bench.sh tpch [--sf 1] [--repeat N] [--timeout S] [--queries 1,6,18]
#   scripts/bench.sh tpch_streams [--sf 1] [--fractions 0.001,0.01] [--inserts 0.001]
#   scripts/bench.sh object_store [--rows N] [--bulk-rows N] [--commits N] [--server s3s-fs|moto]
set -euo pipefail
source "$(dirname "$0")/env.sh"
which="${1:?usage: bench.sh read|write|ivm|tpch|tpch_streams|object_store [options]}"; shift
"$PROJECT_ROOT/scripts/setup.sh"
"$PROJECT_ROOT/scripts/install.sh" pg18
exec "$PYTHON" "$PROJECT_ROOT/benches/${which}_bench.py" "$@"
