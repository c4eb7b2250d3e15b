#!/usr/bin/env bash
# The load benchmark (`make bench`): see benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Portico itself is the profile-guided release build (`make release`); the load clients here.
cargo build --release -p portico-e2e --bins
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 benches/load/bench.py "$@"
