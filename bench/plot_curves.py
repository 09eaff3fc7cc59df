#!/usr/bin/env python3
"""Draws pg_scale's RESULT lines (bench/curves.sh) as one SVG of three panels against the number
of credentials (log scale): cold miss p50/p99, warm decision p50/p99, and bytes per cached
credential (RSS and the caches' tables). No dependencies beyond Python 3."""
import math
import sys


def parse(path):
    rows = []
    for line in open(path):
        if line.startswith("RESULT"):
            rows.append({k: float(v) for k, v in (f.split("=", 1) for f in line.split()[1:])})
    return sorted(rows, key=lambda r: r["credentials"])


PANELS = [
    ("cold miss (us)", [("cold_p50_us", "p50", "#1f77b4"), ("cold_p99_us", "p99", "#d62728")]),
    ("warm decision (ns)", [("warm_p50_ns", "p50", "#1f77b4"), ("warm_p99_ns", "p99", "#d62728")]),
    ("bytes per cached credential", [("bytes_per_credential", "RSS", "#d62728"),
                                     ("marginal_bytes_per_credential", "RSS, marginal", "#ff7f0e"),
                                     ("table_bytes_per_credential", "cache tables", "#1f77b4")]),
]
W, H, PAD = 300, 220, 45


def panel(rows, x0, title, series):
    xs = [math.log10(r["credentials"]) for r in rows]
    ys = [r[k] for r in rows for k, _, _ in series if k in r]
    if not xs or not ys:
        return ""
    xlo, xhi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    yhi = max(ys) * 1.1 or 1
    sx = lambda x: x0 + PAD + (x - xlo) / (xhi - xlo) * (W - PAD - 10)
    sy = lambda y: H - PAD + 10 - y / yhi * (H - PAD - 20)
    out = [f'<text x="{x0 + W / 2}" y="14" text-anchor="middle" font-size="12">{title}</text>',
           f'<line x1="{x0 + PAD}" y1="{sy(0)}" x2="{x0 + W - 10}" y2="{sy(0)}" stroke="#444"/>',
           f'<line x1="{x0 + PAD}" y1="{sy(0)}" x2="{x0 + PAD}" y2="{sy(yhi)}" stroke="#444"/>']
    for i in range(5):
        y = yhi * i / 4
        out.append(f'<text x="{x0 + PAD - 4}" y="{sy(y) + 4}" text-anchor="end" font-size="9">{y:.0f}</text>')
    for r, x in zip(rows, xs):
        n = int(r["credentials"])
        label = f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"
        out.append(f'<text x="{sx(x)}" y="{sy(0) + 14}" text-anchor="middle" font-size="9">{label}</text>')
    for j, (key, name, color) in enumerate(series):
        pts = [(sx(x), sy(r[key])) for r, x in zip(rows, xs) if key in r]
        if not pts:
            continue
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                   % (color, " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)))
        out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{color}"/>' for a, b in pts]
        out.append(f'<text x="{x0 + PAD + 6}" y="{30 + 12 * j}" font-size="9" fill="{color}">{name}</text>')
    return "\n".join(out)


def main():
    rows = parse(sys.argv[1])
    body = "\n".join(panel(rows, i * W, t, s) for i, (t, s) in enumerate(PANELS))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(PANELS)}" height="{H + 10}" '
           f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n{body}\n'
           f'<text x="6" y="{H + 6}" font-size="9">credentials (log scale); pg_scale, see bench/README.md</text>\n</svg>\n')
    open(sys.argv[2], "w").write(svg)


if __name__ == "__main__":
    main()
