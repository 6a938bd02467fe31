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
storage = "http"
for line in open(sys.argv[1]):
    parts = line.split()
    if parts[0] == "rounds":
        rounds = int(parts[1])
        continue
    if parts[0] == "storage":
        storage = parts[1]
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


variants = [v for v in ["direct", "nginx", "bare", "mirror", "cached", "verify", "alt",
                        "ncache", "store", "altstore", "fill"] if v in rows]
names = {"direct": "direct", "nginx": "nginx, tuned buffers", "bare": "bare hyper-util follower",
         "mirror": "registry_mirror", "cached": "registry_mirror, cache warm",
         "verify": "registry_mirror --verify-digests", "alt": "ALT_BIN",
         "ncache": "nginx proxy_cache, warm", "store": "registry_mirror, store hit",
         "fill": "registry_mirror, store filling", "altstore": "ALT_BIN, store hit"}
print(f"\nmacro benchmark: medians of {rounds} interleaved rounds, 127.0.0.1, 2 shared cores, "
      f"storage over {storage}\n")
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
    ("64 KiB all different (cold), req/s", "d_rps", float, ".0f"),
    ("64 KiB all different (cold), p99 ms", "d_p99", ms, ".2f"),
    ("64 KiB all different (cold), CPU µs per request", "d_cpu", float, ".0f"),
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


def compare(name, a, b, measure, ok, conv=float):
    """A goal on variant a's measure over variant b's: the ratio of their medians, with the
    same ratio round by round beside it."""
    goal(name, ratio(med(a, measure, conv), med(b, measure, conv)), ok, per_round(a, b, measure, conv))


# The goals against nginx's recipe: over https storage the recipe opens a connection (and a
# TLS handshake, resumed) per blob while the mirror pools them.
RPS, P99 = (1.5, 0.7) if storage == "https" else (1.3, 0.8)
if "mirror" in rows:
    compare("1 GiB: mirror/direct MB/s >= 0.95", "mirror", "direct", "a_mbs", lambda r: r >= 0.95)
    compare(f"{storage}: 1 GiB: mirror/nginx MB/s >= 1.05", "mirror", "nginx", "a_mbs", lambda r: r >= 1.05)
    compare(f"{storage}: 1 GiB: mirror/nginx CPU per GiB <= 0.9", "mirror", "nginx", "a_cpu", lambda r: r <= 0.9)
    compare(f"{storage}: 64 KiB: mirror/nginx req/s >= {RPS}", "mirror", "nginx", "b_rps", lambda r: r >= RPS)
    compare(f"{storage}: 64 KiB: mirror/nginx p99 <= {P99}", "mirror", "nginx", "b_p99", lambda r: r <= P99, ms)
    goal("16 x 64 MiB: mirror peak RSS MiB <= 44", peak_mib("mirror", "c_hwm"), lambda r: r <= 44)
    compare("16 x 64 MiB: mirror/nginx wall <= 1.0", "mirror", "nginx", "c_wall", lambda r: r <= 1.0)
    compare("1 GiB: mirror/bare MB/s >= 0.95", "mirror", "bare", "a_mbs", lambda r: r >= 0.95)
    compare("64 KiB: mirror/bare req/s >= 0.95", "mirror", "bare", "b_rps", lambda r: r >= 0.95)
if "cached" in rows:
    compare("64 KiB: cached/nginx req/s >= 1.5", "cached", "nginx", "b_rps", lambda r: r >= 1.5)
if "verify" in rows:
    compare("cost of --verify-digests, 1 GiB: verify/mirror MB/s", "verify", "mirror", "a_mbs", None)
    compare("cost of --verify-digests, 64 KiB: verify/mirror req/s", "verify", "mirror", "b_rps", None)

if "store" in rows and "ncache" in rows:
    compare("store hit, 64 KiB: store/ncache req/s >= 1.3", "store", "ncache", "b_rps", lambda r: r >= 1.3)
    compare("store hit, 64 KiB: store/ncache p99 <= 0.8", "store", "ncache", "b_p99", lambda r: r <= 0.8, ms)
    compare("store hit, 1 GiB: store/ncache MB/s >= 0.9", "store", "ncache", "a_mbs", lambda r: r >= 0.9)
    compare("store hit, 1 GiB: store/ncache CPU per GiB", "store", "ncache", "a_cpu", None)
    compare("store hit, 16 x 64 MiB: store/ncache wall", "store", "ncache", "c_wall", None)
if "fill" in rows and "mirror" in rows:
    compare("cost of filling, 1 GiB: fill/mirror MB/s", "fill", "mirror", "a_mbs", None)
    compare("cost of filling, 1 GiB: fill/mirror CPU per GiB", "fill", "mirror", "a_cpu", None)
    compare("cost of filling, 64 KiB cold: fill/mirror req/s", "fill", "mirror", "d_rps", None)
    compare("cost of filling, 64 KiB cold: fill/mirror p99", "fill", "mirror", "d_p99", None, ms)
    compare("cost of filling, 16 x 64 MiB (one download): fill/mirror wall", "fill", "mirror", "c_wall", None)

if "alt" in rows and "mirror" in rows:
    compare("A/B, 1 GiB: alt/mirror MB/s", "alt", "mirror", "a_mbs", None)
    compare("A/B, 1 GiB: alt/mirror CPU per GiB", "alt", "mirror", "a_cpu", None)
    compare("A/B, 64 KiB: alt/mirror req/s", "alt", "mirror", "b_rps", None)
    compare("A/B, 64 KiB: alt/mirror p99", "alt", "mirror", "b_p99", None, ms)

if "altstore" in rows and "store" in rows:
    compare("A/B store hit, 1 GiB: altstore/store MB/s", "altstore", "store", "a_mbs", None)
    compare("A/B store hit, 1 GiB: altstore/store CPU per GiB", "altstore", "store", "a_cpu", None)
    compare("A/B store hit, 64 KiB: altstore/store req/s", "altstore", "store", "b_rps", None)
    compare("A/B store hit, 64 KiB: altstore/store p99", "altstore", "store", "b_p99", None, ms)

print()
for name, value, ok, paired in goals:
    tag = "info" if ok is None and value is not None else "n/a " if value is None else "met " if ok else "MISS"
    round_by_round = f" (round by round: {paired:.2f})" if paired is not None else ""
    print(f"{tag} {name}: {fmt(value, '.2f')}{round_by_round}")
