#!/usr/bin/env bash
# The main job: install what is missing, start Docker/Swarm and Redis if absent, build, and run
# labd on ./labs (Ctrl-C stops labd and leaves the labs running).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked --bins
./target/release/labctl validate labs || echo "some labs are invalid: labd keeps their last good version and reports them" >&2
exec ./target/release/labd --labs ./labs "$@"
