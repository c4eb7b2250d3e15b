#!/usr/bin/env bash
# Prints the path of an llvm-profdata for rustc's LLVM version (profiles are read only by the
# LLVM that wrote their format), or exits 1: rustup's llvm-tools, Debian's llvm-N.
set -euo pipefail
llvm_major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
host="$(rustc -vV | sed -n 's/^host: //p')"
for candidate in \
  "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" \
  "/usr/lib/llvm-$llvm_major/bin/llvm-profdata" \
  "$(command -v "llvm-profdata-$llvm_major" || true)"; do
  if [[ -n "$candidate" && -x "$candidate" ]]; then
    echo "$candidate"
    exit 0
  fi
done
echo "no llvm-profdata for LLVM $llvm_major (rustc's): scripts/setup.sh pgo installs one" >&2
exit 1
