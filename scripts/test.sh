#!/usr/bin/env bash
# Runs every test: unit, property, CLI, and the end-to-end tests against the real Docker Swarm
# and Redis that scripts/setup.sh installs and starts. Then 13 of the controller's end-to-end
# tests, three of the node agent's and the task-fault one once more on a newer Docker Engine
# (Debian 13's 26.1, API 1.45; scripts/newer-engine.sh), as most users run one: skipped with a
# warning when it cannot be fetched, unless SWARMLAB_REQUIRE_NEWER_ENGINE=1 (CI); SWARMLAB_NEWER_ENGINE=skip skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
export DOCKER_API_VERSION=1.41

# The machine's set-up (packages, dockerd, Redis, the test image, the user-mode kernel), the
# newer Engine's download and the build need nothing of each other: on a fresh machine they
# take a minute or two each, so they run side by side (their logs interleave, each line tagged).
bash scripts/setup.sh & setup=$!
fetched=
if [ "${SWARMLAB_NEWER_ENGINE:-}" != skip ]; then
  bash scripts/newer-engine.sh fetch & fetched=$!
fi
built=0
cargo test --locked --no-run || built=$?
wait "$setup"
[ "$built" = 0 ] || exit "$built"

# The pure core and the controller with its fakes: no shared Swarm, so in parallel.
cargo test --locked --no-fail-fast --lib --bins
# e2e tests share one Swarm; they run one at a time to keep timing measurements honest.
cargo test --locked --no-fail-fast --test '*' -- --test-threads=1

[ "${SWARMLAB_NEWER_ENGINE:-}" = skip ] && { echo "[test] newer Engine: skipped (SWARMLAB_NEWER_ENGINE=skip)" >&2; exit 0; }
if ! wait "$fetched"; then
  [ "${SWARMLAB_REQUIRE_NEWER_ENGINE:-}" = 1 ] && exit 1
  echo "[test] WARNING: NOT RUN: the e2e tests on a newer Docker Engine (it could not be fetched; see above)" >&2
  exit 0
fi
trap 'bash scripts/newer-engine.sh down' EXIT
bash scripts/newer-engine.sh up
# The controller's tests whose outcome depends on what the Engine answers (creates, updates,
# drift, adoption by hash, networks, health, reservations, files, errors); not those of labd's
# own logic (files and symlinks, Redis, the lease, metrics, `labctl wait`, suspension, the order
# of `dependsOn`), which the first pass covers and which ask the Engine nothing the others do
# not, nor those of plain spec fields Docker applies itself (logging, read-only, capabilities:
# checked by hand on 26.1 when added).
cargo test --locked --no-fail-fast --test e2e_reconcile -- --test-threads=1 \
  --skip an_invalid_edit_keeps --skip a_symlink_swap_or --skip with_redis_down_labd --skip labd_once_exits \
  --skip a_standby_labd_waits --skip labctl_wait_says_why --skip prometheus_scrapes --skip a_suspended_lab_keeps \
  --skip a_service_is_created_only_once --skip logging_options_rotate --skip a_read_only_task
# The agent's Docker surface (a task's container found, shaped, edited, cleared; a killed task and
# new tasks followed by events), without the slower TCP and 500-probe measurements.
cargo test --locked --no-fail-fast --test e2e_shaping -- --test-threads=1 delay_jitter_edits a_preset_applies links_give_each_pair
# Tasks frozen, thawed and killed through the Engine (pause, unpause, kill, paused listings).
cargo test --locked --no-fail-fast --test e2e_schedule -- --test-threads=1 a_step_freezes
