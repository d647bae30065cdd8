#!/usr/bin/env bash
# Runs every test: unit, property, CLI, and the end-to-end tests against the real Docker Swarm
# and Redis that scripts/setup.sh installs and starts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DOCKER_API_VERSION=1.41
# e2e tests share one Swarm; they run one at a time to keep timing measurements honest.
cargo test --locked --no-fail-fast -- --test-threads=1
