#!/usr/bin/env bash
# `make release`: the release binary, built with profile-guided optimisation (PGO).
#
# 1. Portico is built with LLVM's instrumentation (`-Cprofile-generate`, target/pgo-instrumented);
# 2. scripts/pgo-train.py runs that binary as an edge under load: HTTP/1.1 plain and over TLS,
#    HTTP/2 over TLS and in cleartext, request bodies, JWT auth with a rate limit, CORS,
#    the access log; the binary writes what ran how often;
# 3. llvm-profdata (the one of rustc's LLVM version) merges that into target/pgo-HASH.profdata;
# 4. Portico is built again with it (`-Cprofile-use`): the compiler lays the request path out
#    hot and inlines along it. On the load benchmark's machine this took a passthrough request
#    from 35.0k to 24.9k instructions and 11.0 to 6.5 µs of user time (docs/performance.md,
#    "Profile-guided build").
#
# The result is target/pgo/release/portico; the Dockerfile ships it. The profile is made anew
# whenever the instrumented binary changes (this checkout, this compiler), so it never goes
# stale, and a second `make release` or `make bench` on the same checkout builds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

profdata="$(scripts/llvm-profdata.sh)"

# The trainer's helpers (the demo upstream), built as usual.
cargo build --release -p portico-e2e --bins

profiles="$PWD/target/pgo-profiles"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$profiles" CARGO_TARGET_DIR=target/pgo-instrumented \
  cargo build --release -p portico
# The training is redone only when what it runs changed: the instrumented binary (cargo leaves
# it untouched when nothing it is built from changed), the demo upstream and the trainer's
# scripts. A profile trained on the same binary would differ only by the run's timing, and
# would cost the full final build again.
key="$(cat target/pgo-instrumented/release/portico target/release/portico-demo-upstream \
  scripts/pgo-train.py benches/procs.py benches/load/bench.py | sha256sum | cut -c1-16)"
profile=""
if [ -f target/pgo-key ] && [ "$(cut -d' ' -f1 target/pgo-key)" = "$key" ]; then
  profile="$(cut -d' ' -f2 target/pgo-key)"
  [ -f "$profile" ] || profile=""
fi
if [ -n "$profile" ]; then
  echo "release: the instrumented build is unchanged; reusing $profile"
else
  # Only the training run's counts: the build scripts above were instrumented too.
  rm -rf "$profiles"
  mkdir -p "$profiles"
  LLVM_PROFILE_FILE="$profiles/portico-%p.profraw" \
    python3 scripts/pgo-train.py target/pgo-instrumented/release/portico target/release/portico-demo-upstream
  "$profdata" merge -o target/pgo-merged.profdata "$profiles"
  # Named by its content: cargo does not read the profile, only the flags, so a new profile
  # under the old name would leave the previous build in place as up to date.
  rm -f target/pgo-[0-9a-f]*.profdata
  profile="$PWD/target/pgo-$(sha256sum target/pgo-merged.profdata | cut -c1-16).profdata"
  mv target/pgo-merged.profdata "$profile"
  echo "$key $profile" > target/pgo-key
fi

RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$profile" CARGO_TARGET_DIR=target/pgo \
  cargo build --release -p portico
echo "release: target/pgo/release/portico"
