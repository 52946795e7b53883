"""Reports of a run: one line for the machine, one table of records and skips."""
from __future__ import annotations

import json

from .harness import size_label


def append_line(path, record: dict) -> None:
    """Append ``record`` to the JSON-lines file ``path`` at once (flushed and closed), so a
    run stopped by a time limit keeps every measurement it finished."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _is_peer(contender: str) -> bool:
    return not contender.startswith("hdlfast")


def format_machine(result: dict) -> str:
    """One line: CPU, cores, RAM, GPUs, versions and the measured floors."""
    m, f = result.get("machine", {}), result.get("floors", {})
    cores = f"{m.get('usable_cores')} of {m.get('logical_cores')} cores"
    gpus = ", ".join(m.get("gpus") or []) or "no GPU"
    vers = " ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    floors = f"floors: matmul {f.get('gemm_gflops', float('nan')):.0f} GFLOP/s, copy " \
             f"{f.get('copy_gbs', float('nan')):.1f} GB/s"
    if "gpu_gemm_gflops" in f:
        floors += f"; GPU matmul {f['gpu_gemm_gflops']:.0f} GFLOP/s, copy " \
                  f"{f.get('gpu_copy_gbs', float('nan')):.0f} GB/s"
    if "gpu_error" in f:
        floors += f"; GPU floors failed: {f['gpu_error']}"
    return f"{m.get('cpu', '?')} ({cores}, {m.get('ram_gb', '?')} GB RAM), {gpus}; " \
           f"{m.get('python', '')}; {vers}; {floors}"


def format_table(result: dict) -> str:
    """One line per record, then one per skipped contender."""
    rows = [("capability", "size", "contender", "seconds", "vs fastest peer", "vs floor")]
    records = result.get("records", [])
    fastest = {}  # (capability, size, gpu?) -> (seconds, peer)
    for r in records:
        if r.get("seconds") is not None and _is_peer(r["contender"]):
            key = (r["capability"], size_label(r["capability"], r["params"]),
                   r["device"] != "cpu")
            if key not in fastest or r["seconds"] < fastest[key][0]:
                fastest[key] = (r["seconds"], r["contender"])
    for r in records:
        size = size_label(r["capability"], r["params"])
        if r.get("seconds") is None:
            rows.append((r["capability"], size, r["contender"], "-",
                         f"error: {r.get('error', '?')}"[:60], ""))
            continue
        best = fastest.get((r["capability"], size, r["device"] != "cpu"))
        if best is None:
            rel = "-"
        elif best[1] == r["contender"]:
            rel = "(fastest peer)"
        else:
            rel = f"{best[1]} / {r['contender']} = {best[0] / r['seconds']:.2f}x"
        ratio = r.get("ratio_to_floor")
        flo = f"{ratio:.2f}x {r['floor_kind']}" if ratio else "-"
        rows.append((r["capability"], size, r["contender"], f"{r['seconds']:.4g}", rel, flo))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i == 3 else c.ljust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    grouped = {}  # (contender, reason) -> capabilities, in order
    for s in result.get("skipped", []):
        caps = grouped.setdefault((s["contender"], s["reason"]), [])
        if s["capability"] not in caps:
            caps.append(s["capability"])
    for (name, reason), caps in grouped.items():
        lines.append(f"skipped: {name} ({', '.join(caps)}): {reason}")
    return "\n".join(lines)
