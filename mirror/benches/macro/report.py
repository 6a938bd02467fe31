"""Reads the macro benchmark's raw results (one line per variant and measure: the values
of every round) and prints the table of medians, the ratios and which goals hold.

A goal's ratio is between two medians, each over rounds minutes apart. Beside it, in
parentheses, is the median of the ratios taken round by round (the two variants measured
seconds apart, in the same round): the same question with some of the drift between rounds
cancelled."""
import re
import statistics as st
import sys

rows = {}
rounds = 0
for line in open(sys.argv[1]):
    parts = line.split()
    if parts[0] == "rounds":
        rounds = int(parts[1])
        continue
    variant, measure, *values = parts
    rows.setdefault(variant, {})[measure] = values


def ms(x):
    v, u = re.match(r"([\d.]+)(us|ms|s)", x).groups()
    return float(v) * {"us": 1e-3, "ms": 1, "s": 1e3}[u]


def med(variant, measure, conv=float):
    values = rows.get(variant, {}).get(measure)
    return st.median(conv(v) for v in values) if values else None


def fmt(v, spec):
    return "" if v is None else format(v, spec)


variants = [v for v in ["direct", "nginx", "bare", "mirror", "cached", "verify", "alt"] if v in rows]
names = {"direct": "direct", "nginx": "nginx, tuned buffers", "bare": "bare hyper-util follower",
         "mirror": "registry_mirror", "cached": "registry_mirror, cache warm",
         "verify": "registry_mirror --verify-digests", "alt": "ALT_BIN"}
print(f"\nmacro benchmark: medians of {rounds} interleaved rounds, 127.0.0.1, 2 shared cores\n")
print("| | " + " | ".join(names[v] for v in variants) + " |")
print("|---|" + "---:|" * len(variants))
lines = [
    ("1 GiB single stream, MB/s", "a_mbs", float, ".0f"),
    ("CPU s per GiB in the proxy", "a_cpu", float, ".2f"),
    ("64 KiB, wrk -t2 -c64, req/s", "b_rps", float, ".0f"),
    ("p50 ms", "b_p50", ms, ".2f"),
    ("p99 ms", "b_p99", ms, ".2f"),
    ("CPU µs per request in the proxy", "b_cpu", float, ".0f"),
    ("16 × 64 MiB, wall s", "c_wall", float, ".2f"),
    ("16 × 64 MiB, peak RSS MiB", "c_hwm", None, ".1f"),
    ("peak RSS MiB, whole run", "hwm", lambda k: float(k) / 1024, ".1f"),
]


def peak_mib(variant, measure):
    values = rows.get(variant, {}).get(measure)
    return max(float(v) for v in values) / 1024 if values else None

for label, measure, conv, spec in lines:
    cells = []
    for v in variants:
        value = peak_mib(v, measure) if conv is None else med(v, measure, conv)
        if v == "direct" and measure in ("a_cpu", "b_cpu", "hwm"):
            value = None
        cells.append(fmt(value, spec))
    print(f"| {label} | " + " | ".join(cells) + " |")

goals = []


def ratio(a, b):
    return a / b if a is not None and b else None


def goal(name, value, ok, paired=None):
    goals.append((name, value, None if value is None or ok is None else ok(value), paired))


def per_round(a, b, measure, conv=float):
    """The median of variant a's value over variant b's, round by round."""
    xs, ys = rows.get(a, {}).get(measure), rows.get(b, {}).get(measure)
    if not xs or not ys or len(xs) != len(ys):
        return None
    ratios = [conv(x) / conv(y) for x, y in zip(xs, ys) if conv(y)]
    return st.median(ratios) if ratios else None


m = lambda v, k, c=float: med(v, k, c)
if "mirror" in rows:
    goal("1 GiB: mirror/direct MB/s >= 0.95", ratio(m("mirror", "a_mbs"), m("direct", "a_mbs")), lambda r: r >= 0.95, per_round("mirror", "direct", "a_mbs"))
    goal("1 GiB: mirror/nginx MB/s >= 1.05", ratio(m("mirror", "a_mbs"), m("nginx", "a_mbs")), lambda r: r >= 1.05, per_round("mirror", "nginx", "a_mbs"))
    goal("1 GiB: mirror/nginx CPU per GiB <= 0.9", ratio(m("mirror", "a_cpu"), m("nginx", "a_cpu")), lambda r: r <= 0.9, per_round("mirror", "nginx", "a_cpu"))
    goal("64 KiB: mirror/nginx req/s >= 1.3", ratio(m("mirror", "b_rps"), m("nginx", "b_rps")), lambda r: r >= 1.3, per_round("mirror", "nginx", "b_rps"))
    goal("64 KiB: mirror/nginx p99 <= 0.8", ratio(m("mirror", "b_p99", ms), m("nginx", "b_p99", ms)), lambda r: r <= 0.8, per_round("mirror", "nginx", "b_p99", ms))
    goal("16 x 64 MiB: mirror peak RSS MiB <= 44", peak_mib("mirror", "c_hwm"), lambda r: r <= 44)
    goal("16 x 64 MiB: mirror/nginx wall <= 1.0", ratio(m("mirror", "c_wall"), m("nginx", "c_wall")), lambda r: r <= 1.0, per_round("mirror", "nginx", "c_wall"))
    goal("1 GiB: mirror/bare MB/s >= 0.95", ratio(m("mirror", "a_mbs"), m("bare", "a_mbs")), lambda r: r >= 0.95, per_round("mirror", "bare", "a_mbs"))
    goal("64 KiB: mirror/bare req/s >= 0.95", ratio(m("mirror", "b_rps"), m("bare", "b_rps")), lambda r: r >= 0.95, per_round("mirror", "bare", "b_rps"))
if "cached" in rows:
    goal("64 KiB: cached/nginx req/s >= 1.5", ratio(m("cached", "b_rps"), m("nginx", "b_rps")), lambda r: r >= 1.5, per_round("cached", "nginx", "b_rps"))
if "verify" in rows:
    goal("cost of --verify-digests, 1 GiB: verify/mirror MB/s", ratio(m("verify", "a_mbs"), m("mirror", "a_mbs")), None, per_round("verify", "mirror", "a_mbs"))
    goal("cost of --verify-digests, 64 KiB: verify/mirror req/s", ratio(m("verify", "b_rps"), m("mirror", "b_rps")), None, per_round("verify", "mirror", "b_rps"))

if "alt" in rows and "mirror" in rows:
    goal("A/B, 1 GiB: alt/mirror MB/s", ratio(m("alt", "a_mbs"), m("mirror", "a_mbs")), None, per_round("alt", "mirror", "a_mbs"))
    goal("A/B, 1 GiB: alt/mirror CPU per GiB", ratio(m("alt", "a_cpu"), m("mirror", "a_cpu")), None, per_round("alt", "mirror", "a_cpu"))
    goal("A/B, 64 KiB: alt/mirror req/s", ratio(m("alt", "b_rps"), m("mirror", "b_rps")), None, per_round("alt", "mirror", "b_rps"))
    goal("A/B, 64 KiB: alt/mirror p99", ratio(m("alt", "b_p99", ms), m("mirror", "b_p99", ms)), None, per_round("alt", "mirror", "b_p99", ms))

print()
for name, value, ok, paired in goals:
    tag = "info" if ok is None and value is not None else "n/a " if value is None else "met " if ok else "MISS"
    round_by_round = f" (round by round: {paired:.2f})" if paired is not None else ""
    print(f"{tag} {name}: {fmt(value, '.2f')}{round_by_round}")
