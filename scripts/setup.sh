#!/usr/bin/env bash
# Installs the system packages Portico's build, tests and benchmarks need, when missing.
# Idempotent: does nothing when everything is there.
# Usage: scripts/setup.sh [build|pgo|test|bench|fuzz]
#   build: what compiling Portico needs (cmake for Pingora's zlib-ng, a C toolchain);
#   pgo:   + what the profile-guided release build needs (scripts/release.sh): the training
#          run's clients (wrk, h2load, openssl, python3) and an llvm-profdata of rustc's LLVM
#          version (Debian's llvm-N, else rustup's llvm-tools component);
#   test:  + redis-server, Node.js and the Better Auth server the end-to-end tests run (npm ci,
#          from the lockfile in tests/better-auth); Debian's Chromium with playwright-core and
#          Socket.io (npm ci in tests/browser); docker-compose, systemd-analyze and, in
#          target/tools-venv, tests/requirements.txt (kubernetes-validate for the deploy/
#          checks, grpcio for the gRPC tests);
#   bench: + nginx, wrk, HAProxy, valgrind, perf, bpftrace and the tools of the load benchmark;
#   fuzz:  cargo-fuzz (and a check that a nightly toolchain is there).
set -euo pipefail

mode="${1:-test}"
want=(cmake gcc make pkg-config)
if [[ "$mode" == "pgo" ]]; then
  want+=(wrk h2load openssl python3)
elif [[ "$mode" != "build" ]]; then
  want+=(redis-server node npm)
fi
if [[ "$mode" == "test" ]]; then
  want+=(docker-compose systemd-analyze chromium)
fi
if [[ "$mode" == "bench" ]]; then
  want+=(nginx wrk haproxy taskset openssl python3 valgrind perf bpftrace)
fi

package_for() {
  case "$1" in
    redis-server) echo redis-server ;;
    nginx) echo nginx-light ;;
    taskset) echo util-linux ;;
    perf) echo linux-perf ;;
    h2load) echo nghttp2-client ;;
    pkg-config) echo pkg-config ;;
    node) echo nodejs ;;
    systemd-analyze) echo systemd ;;
    *) echo "$1" ;;
  esac
}

missing=()
for cmd in "${want[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$cmd" ]]; then
    missing+=("$(package_for "$cmd")")
  fi
done

sudo=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
  sudo="sudo"
fi

if ((${#missing[@]} > 0)); then
  echo "setup: installing ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 && -z "$sudo" ]]; then
    echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ "$mode" == "pgo" ]] && ! "$(dirname "$0")/llvm-profdata.sh" >/dev/null 2>&1; then
  llvm_major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
  if apt-cache show "llvm-$llvm_major" >/dev/null 2>&1; then
    echo "setup: installing llvm-$llvm_major (llvm-profdata)" >&2
    $sudo apt-get install -y -qq --no-install-recommends "llvm-$llvm_major" >/dev/null
  else
    echo "setup: rustup component add llvm-tools (llvm-profdata)" >&2
    rustup component add llvm-tools
  fi
fi

if [[ "$mode" == "build" || "$mode" == "pgo" ]]; then
  exit 0
fi

if [[ "$mode" == "fuzz" ]]; then
  # libFuzzer's instrumentation needs a nightly toolchain; cargo-fuzz comes from crates.io.
  if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "setup: fuzzing needs a nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "setup: cargo install cargo-fuzz" >&2
    cargo install --quiet cargo-fuzz
  fi
  exit 0
fi

# The Better Auth server of the end-to-end tests, exactly as locked; reinstalled only when
# the lockfile changed since the last install.
ba="$(dirname "$0")/../tests/better-auth"
if [[ ! -f "$ba/node_modules/.package-lock.json" || "$ba/package-lock.json" -nt "$ba/node_modules/.package-lock.json" ]]; then
  echo "setup: npm ci in tests/better-auth" >&2
  (cd "$ba" && npm ci --no-audit --no-fund --loglevel=error)
fi

if [[ "$mode" == "test" ]]; then
  # playwright-core drives Debian's Chromium (it downloads no browser); Socket.io peers.
  browser="$(dirname "$0")/../tests/browser"
  if [[ ! -f "$browser/node_modules/.package-lock.json" || "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]]; then
    echo "setup: npm ci in tests/browser" >&2
    (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  # The tests' Python tools (the deploy/ checks, a gRPC server and client), pinned in
  # tests/requirements.txt, in a virtualenv of their own; reinstalled when that file changes.
  venv="$(dirname "$0")/../target/tools-venv"
  requirements="$(dirname "$0")/../tests/requirements.txt"
  if [[ ! -f "$venv/.installed" || "$requirements" -nt "$venv/.installed" ]]; then
    echo "setup: tests/requirements.txt into target/tools-venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    touch "$venv/.installed"
  fi
fi
