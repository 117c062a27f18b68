#!/usr/bin/env bash
# Checks systemd/edgeinferd.service: `systemd-analyze verify` must be clean (run against the built
# binary), the unit must set the resource limits MemoryHigh=, MemoryMax= and TasksMax= (finite;
# MemoryHigh below MemoryMax when both are percentages), and `systemd-analyze security
# --offline=yes` must rate the unit as shipped at an exposure of at most 2.0 (prints the score;
# exits 1 above it).
#
#   systemd/check-unit.sh [path/to/edgeinferd]    (default: target/debug/edgeinferd)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/edgeinferd}")
max=2.0
[ -x "$bin" ] || { echo "error: $bin is not built" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cli=$(dirname "$bin")/edgeinfer   # ExecReload= runs the CLI built beside it
sed -e "s#/usr/bin/edgeinferd#$bin#" -e "s#/usr/bin/edgeinfer #$cli #" systemd/edgeinferd.service > "$work/edgeinferd.service"
if ! out=$(systemd-analyze verify "$work/edgeinferd.service" 2>&1) || [ -n "$out" ]; then
  echo "systemd-analyze verify is not clean:" >&2
  echo "$out" >&2
  exit 1
fi
# Resource limits: the last assignment in [Service] wins, as systemd reads it.
limit() { sed -n '/^\[Service\]/,/^\[/s/^'"$1"'=[[:space:]]*\([^[:space:]]*\).*/\1/p' systemd/edgeinferd.service | tail -n 1; }
declare -A lim
limits=""
for key in MemoryHigh MemoryMax TasksMax; do
  value=$(limit "$key")
  case "$value" in
    "" | infinity) echo "error: edgeinferd.service must set $key= to a finite limit (got '${value}')" >&2; exit 1 ;;
  esac
  limits+=" $key=$value"
  lim[$key]=$value
done
if [[ ${lim[MemoryHigh]} == *% && ${lim[MemoryMax]} == *% ]]; then
  awk -v h="${lim[MemoryHigh]%\%}" -v m="${lim[MemoryMax]%\%}" 'BEGIN { exit !(h < m) }' \
    || { echo "error: MemoryHigh=${lim[MemoryHigh]} must be below MemoryMax=${lim[MemoryMax]}" >&2; exit 1; }
fi
echo "resource limits:$limits"
score=$(systemd-analyze security --offline=yes systemd/edgeinferd.service 2>&1 \
  | sed -n 's/.*Overall exposure level for edgeinferd.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { echo "error: no exposure score from systemd-analyze security" >&2; exit 1; }
echo "systemd-analyze verify: clean; security exposure of edgeinferd.service: $score (limit $max)"
awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }' || { echo "error: exposure $score is above $max" >&2; exit 1; }
