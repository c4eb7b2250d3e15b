"""Locked (atomic read-modify-write) instructions executed, from a callgrind profile written
with `--dump-instr=yes --compress-pos=no --compress-strings=no`.

An atomic operation (`lock`-prefixed, or `xchg` with memory) is one instruction to the ruler
but costs ~20 cycles, the time of dozens of ordinary ones, so the instruction count alone
hides it: reference counts (`Arc`, `Bytes`), tokio's wakers and readiness, metric counters.
Each object the profile names is disassembled once (`objdump -d`) to find its locked
instructions; callgrind reports addresses as the object's own, so they match directly.
"""

import re
import subprocess
from collections import Counter

LOCKED = re.compile(r"^\s*([0-9a-f]+):\s+(?:lock\b|xchg\s+\S*\()")
COST = re.compile(r"^(0x[0-9a-f]+) \S+ (\d+)")


def locked_addresses(obj, cache):
    if obj not in cache:
        out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj],
                             capture_output=True, text=True).stdout
        cache[obj] = {int(m.group(1), 16) for m in map(LOCKED.match, out.splitlines()) if m}
    return cache[obj]


def locked_executed(paths):
    """The number of locked instructions the profiles in `paths` executed."""
    cache = {}
    total = 0
    for path in paths:
        counts = Counter()
        obj = None
        after_call = False
        with open(path) as f:
            for line in f:
                if line.startswith("ob="):
                    obj = line[3:].strip()
                elif line.startswith("calls="):
                    # The next cost line is the call's inclusive cost, not an instruction's.
                    after_call = True
                    continue
                else:
                    m = COST.match(line)
                    if m and not after_call and obj:
                        counts[(obj, int(m.group(1), 16))] += int(m.group(2))
                after_call = False
        for (obj, addr), n in counts.items():
            if addr in locked_addresses(obj, cache):
                total += n
    return total
