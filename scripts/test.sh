#!/usr/bin/env bash
# Run every test: build and install both extensions into PostgreSQL 18 and 15, then
# run the integration suite (real servers, real DuckLake, the reference Python
# client) against each. Extra arguments go to pytest (e.g. -k types).
set -euo pipefail
source "$(dirname "$0")/env.sh"
export DUCKLAKE_PHASES="${DUCKLAKE_PHASES:-$(mktemp -t ducklake-phases.XXXXXX)}"
started="$(now)"
print_phases() {
    local rc=$?
    [ -s "$DUCKLAKE_PHASES" ] || return 0
    printf '\n\033[1mwhere the time went\033[0m\n' >&2
    awk -F'\t' '{ printf "%8.1f s  %s\n", $1, $2 }' "$DUCKLAKE_PHASES" >&2
    awk -v a="$started" -v b="$(now)" 'BEGIN { printf "%8.1f s  total\n", b - a }' >&2
    rm -f "$DUCKLAKE_PHASES"
    return $rc
}
trap print_phases EXIT
"$PROJECT_ROOT/scripts/setup.sh"
versions="${DUCKLAKE_PG_VERSIONS:-pg18 pg15}"
for version in $versions; do
    if [ ! -x "$(pg_config_for "$version")" ]; then
        echo "PostgreSQL $version is not installed; run scripts/setup.sh as root, or set DUCKLAKE_PG_VERSIONS=pg18" >&2
        exit 1
    fi
    "$PROJECT_ROOT/scripts/install.sh" "$version"
done
log "cargo test -p ducklake_formats (unit tests of the pure functions)"
phase_begin "unit tests (ducklake_formats)"
(cd "$PROJECT_ROOT" && cargo test -q -p ducklake_formats)
phase_end
# One pytest per PostgreSQL version, side by side: the suite waits on servers and DuckDB
# far more than it computes, so two runs take little longer than one. The first version's
# output is shown as it runs; the others' is shown when they end.
cd "$PROJECT_ROOT"
phase_begin "integration tests (side by side: $versions)"
pids=(); outputs=()
trap 'kill "${pids[@]}" 2>/dev/null; wait; exit 130' INT TERM
for version in $versions; do
    if [ ${#pids[@]} -eq 0 ]; then
        "$PYTHON" -m pytest tests --pg "$version" "$@" &
        outputs+=("")
    else
        output="$(mktemp -t "ducklake-tests-$version.XXXXXX")"
        "$PYTHON" -m pytest tests --pg "$version" --color=yes "$@" >"$output" 2>&1 &
        outputs+=("$output")
    fi
    pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || status=1
    if [ -n "${outputs[$i]}" ]; then
        cat "${outputs[$i]}"
        rm -f "${outputs[$i]}"
    fi
done
phase_end
exit $status
