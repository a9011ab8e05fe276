#!/usr/bin/env bash
# Run the whole test suite in the project venv with an isolated, loopback-only ROS 2 graph.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# a random domain per run so concurrent runs on one machine never see each other
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}"
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$ROOT/config/fastdds.xml}"
echo "run_tests: ROS_DOMAIN_ID=$ROS_DOMAIN_ID"
exec .venv/bin/python -m pytest "$@"
