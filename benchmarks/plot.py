"""Charts from benchmark result files (the JSON written by ``hdlfast bench --out`` and by
``benchmarks/million.py``; schema in ``hdlfast/bench/__init__.py``).

For every capability: time against N (log-log, one line per contender, the floor dashed), time
against k where several k were measured, and, at the largest N measured, each contender's time
relative to hdlfast and to the floor.
Scaling runs with a ``peak_rss_mb`` also get a memory chart.

Run: python benchmarks/plot.py benchmarks/results/million-cpu-*.json --out benchmarks/results/plots
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(paths):
    """Records of all files, each tagged with its file's machine line."""
    out = []
    for p in paths:
        res = json.loads(Path(p).read_text())
        m = res.get("machine", {})
        where = m.get("gpu") or m.get("cpu") or m.get("platform", "?")
        if isinstance(where, list):
            where = ", ".join(where)
        for r in res.get("records", []):
            if r.get("seconds") is not None and "error" not in r:
                out.append({**r, "machine": where})
    return out


def _series(records):
    """(capability, k, d) -> contender -> sorted [(n, seconds, floor_seconds, peak_rss_mb)]."""
    groups = defaultdict(lambda: defaultdict(list))
    for r in records:
        key = (r["capability"], r.get("k"), r.get("d"))
        groups[key][r["contender"]].append(
            (r["n"], r["seconds"], r.get("floor_seconds"), r.get("peak_rss_mb")))
    for by in groups.values():
        for pts in by.values():
            pts.sort()
    return groups


def _label(cap, k, d):
    parts = [cap]
    if d:
        parts.append(f"d={d}")
    if k:
        parts.append(f"k={k}")
    return ", ".join(parts)


def _log_lines(series, xlabel, title, path, floor=None):
    """One log-log chart: ``series`` maps a contender to {x: seconds}; hdlfast lines bold;
    ``floor`` {x: seconds} dashed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in sorted(series.items()):
        xs = sorted(pts)
        ax.plot(xs, [pts[x] for x in xs], marker="o", label=name,
                linewidth=2.5 if name.startswith("hdlfast") else 1.2)
    if floor:
        xs = sorted(floor)
        ax.plot(xs, [floor[x] for x in xs], "k--", label="floor")
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="seconds", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_vs_n(groups, machine, out: Path):
    files = []
    for (cap, k, d), by in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if max(len(p) for p in by.values()) < 2:
            continue
        series = {name: {p[0]: p[1] for p in pts} for name, pts in by.items()}
        floor = {p[0]: p[2] for pts in by.values() for p in pts if p[2]}
        name = f"{cap}-time-vs-n{'-k' + str(k) if k else ''}{'-d' + str(d) if d else ''}.png"
        files.append(_log_lines(series, "N", f"{_label(cap, k, d)} ({machine})", out / name,
                                floor))
    return files


def time_vs_k(records, machine, out: Path):
    """Time against k at a fixed N, for the capabilities measured at several k."""
    by = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r.get("k"):
            by[(r["capability"], r["n"], r.get("d"))][r["contender"]][r["k"]] = r["seconds"]
    files = []
    for (cap, n, d), cont in sorted(by.items(), key=lambda kv: str(kv[0])):
        if max(len(v) for v in cont.values()) < 3:
            continue
        title = f"{cap}, N={n:,}{f', d={d}' if d else ''} ({machine})"
        files.append(_log_lines(cont, "k", title, out / f"{cap}-time-vs-k-n{n}.png"))
    return files


def ratios(groups, machine, out: Path):
    """Per capability at its largest N: time / hdlfast's best time and time / floor."""
    rows = []
    for (cap, k, d), by in sorted(groups.items(), key=lambda kv: str(kv[0])):
        n_max = max(p[0] for pts in by.values() for p in pts)
        at = {name: [p for p in pts if p[0] == n_max][0] for name, pts in by.items()
              if any(p[0] == n_max for p in pts)}
        ours = [v[1] for name, v in at.items() if name.startswith("hdlfast")]
        if not ours:
            continue
        best = min(ours)
        for name, (n, sec, fl, _) in sorted(at.items()):
            rows.append((f"{_label(cap, k, d)}, N={n:,}", name, sec / best,
                         sec / fl if fl else None))
    if not rows:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(rows) + 1.5), sharey=True)
    labels = [f"{w}: {name}" for w, name, _, _ in rows]
    y = range(len(rows))
    colors = ["tab:blue" if name.startswith("hdlfast") else "tab:gray" for _, name, _, _ in rows]
    axes[0].barh(y, [r[2] for r in rows], color=colors)
    axes[0].axvline(1.0, color="k", linewidth=0.8)
    axes[0].set(xscale="log", xlabel="time / hdlfast's best (lower is faster)")
    axes[1].barh(y, [r[3] or float("nan") for r in rows], color=colors)
    axes[1].axvline(1.0, color="k", linewidth=0.8)
    axes[1].set(xscale="log", xlabel="time / floor (log)")
    axes[0].set_yticks(list(y), labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(f"relative times at the largest N ({machine})")
    fig.tight_layout()
    path = out / "ratios.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def memory_vs_n(groups, machine, out: Path):
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for (cap, k, d), by in sorted(groups.items(), key=lambda kv: str(kv[0])):
        for name, pts in sorted(by.items()):
            mem = [(p[0], p[3]) for p in pts if p[3]]
            if len(mem) >= 2 and name.startswith("hdlfast"):
                ax.plot(*zip(*mem), marker="o", label=f"{_label(cap, k, d)}: {name}")
                drawn = True
    if not drawn:
        plt.close(fig)
        return []
    ax.set(xscale="log", yscale="log", xlabel="N", ylabel="peak RSS (MiB)",
           title=f"peak memory ({machine})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "memory-vs-n.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="result JSON files")
    ap.add_argument("--out", default="benchmarks/results/plots", help="folder for the PNGs")
    a = ap.parse_args(argv)
    records = load(a.results)
    if not records:
        raise SystemExit("no timed records in the given files")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = records[0]["machine"]
    groups = _series(records)
    files = time_vs_n(groups, machine, out) + time_vs_k(records, machine, out) + \
        ratios(groups, machine, out) + memory_vs_n(groups, machine, out)
    for f in files:
        print(f)


if __name__ == "__main__":
    main()
