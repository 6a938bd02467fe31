#!/usr/bin/env bash
# Micro benchmarks: criterion medians (noisy on a shared 2-core machine) and instruction
# counts under callgrind (deterministic), both reported as ratios measured in the same run.
#
# usage: bash benches/micro.sh            (needs valgrind for the instruction counts)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }

cargo bench --bench overhead -- --warm-up-time 1 --measurement-time 5 | tee target/micro-bench.txt \
  | grep -E "^allocations|^  [a-z_]+/|time:"
BIN=$(cargo bench --bench overhead --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="overhead" and m.get("executable"): print(m["executable"])' | tail -n1)

instructions() { # variant count
  OVERHEAD_COUNT="$1:$2" valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
declare -A PER
for v in pass_through/bare pass_through/signed_redirect pass_through/tower_http one_redirect/signed_redirect one_redirect/tower_http; do
  a=$(instructions "$v" 0); b=$(instructions "$v" 2000)
  PER[$v]=$(( (b - a) / 2000 ))
done

python3 - "${PER[pass_through/bare]}" "${PER[pass_through/signed_redirect]}" "${PER[pass_through/tower_http]}" \
  "${PER[one_redirect/signed_redirect]}" "${PER[one_redirect/tower_http]}" <<'PY'
import json, sys, pathlib
bare, sig, th, sig1, th1 = map(int, sys.argv[1:])
def median(group, name):
    p = pathlib.Path("target/criterion") / group / name / "new" / "estimates.json"
    return json.loads(p.read_text())["median"]["point_estimate"]
t = {k: median(*k.split("/", 1)) for k in [
    "pass_through/bare", "pass_through/signed_redirect", "pass_through/tower_http",
    "one_redirect/signed_redirect", "one_redirect/tower_http"]}
print()
print("| variant | median ns | instructions/request |")
print("|---|---:|---:|")
for k, i in zip(t, [bare, sig, th, sig1, th1]):
    print(f"| {k} | {t[k]:.0f} | {i} |")
print()
print(f"pass-through added over bare: signed_redirect +{sig-bare} instr ({(sig-bare)/bare:.0%}), "
      f"tower_http +{th-bare} instr ({(th-bare)/bare:.0%}); ours/theirs added = {(sig-bare)/(th-bare):.2f}")
print(f"pass-through time ratio: signed_redirect/bare {t['pass_through/signed_redirect']/t['pass_through/bare']:.2f}, "
      f"tower_http/bare {t['pass_through/tower_http']/t['pass_through/bare']:.2f}")
print(f"one redirect: signed_redirect/tower_http time {t['one_redirect/signed_redirect']/t['one_redirect/tower_http']:.2f}, "
      f"instructions {sig1/th1:.2f}")
PY
