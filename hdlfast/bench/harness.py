"""One measurement (``measure``) and a whole run (``run``): plan, floors, records, skips."""
from __future__ import annotations

import datetime
import gc

import numpy as np

from .machine import floor, gpu_names, machine_info, measure_floors
from .timing import _error_text, _gpu_cleanup, _peak_rss_mb, _reset_peak_rss, timed
from .workloads import (CAPABILITIES, CONTENDERS, FULL, FULL_SIZES, PARAMS, QUICK, _FLAGS,
                        _FLOAT_PARAMS,
                        _GPU_CONTENDERS, availability, prepare, _setup)

SCHEMA = 1
DEFAULT_REPEATS = 3


def _device_name(contender: str, floors: dict) -> str:
    if contender not in _GPU_CONTENDERS:
        return "cpu"
    return floors.get("gpu_device") or (gpu_names() or ["cuda"])[0]


def _record(capability: str, params: dict, contender: str, floors: dict) -> dict:
    """A record without a measurement yet."""
    on_gpu = contender in _GPU_CONTENDERS
    floor_s, floor_kind = floor(capability, params, floors, on_gpu)
    return {"capability": capability, "contender": contender, "n": params["n"],
            "d": params.get("d"), "k": params.get("k"), "params": dict(params),
            "seconds": None, "times": [], "floor_seconds": floor_s, "floor_kind": floor_kind,
            "ratio_to_floor": None, "device": _device_name(contender, floors),
            "peak_rss_mb": None}


def measure(capability: str, params: dict, contender: str, *, data=None, floors=None,
            repeats=DEFAULT_REPEATS, warmup=True) -> dict:
    """One record: ``contender`` on the workload ``capability`` at ``params`` (completed from
    the QUICK preset), median of ``repeats`` runs after one warm-up. A failure (including a
    contender that cannot run here) is recorded in ``"error"``, never raised."""
    params = _complete(capability, params, QUICK)
    if contender not in CONTENDERS[capability]:
        raise ValueError(f"{capability}: unknown contender {contender!r}; choose from "
                         f"{list(CONTENDERS[capability])}")
    on_gpu = contender in _GPU_CONTENDERS
    if floors is None:
        floors = measure_floors(gpu=on_gpu)
    rec = _record(capability, params, contender, floors)
    floor_s = rec["floor_seconds"]
    reason = availability(capability, contender, params)
    if reason is not None:
        rec["error"] = f"unavailable: {reason}"
        return rec
    fn = None
    try:
        if data is None:
            data = prepare(capability, params)
        tracked = _reset_peak_rss()
        fn = _setup(capability, contender, params, data)
        rec["seconds"], rec["times"], _ = timed(fn, repeats, warmup=warmup,
                                                device="cuda" if on_gpu else None)
        if floor_s:
            rec["ratio_to_floor"] = rec["seconds"] / floor_s
        rec["peak_rss_mb"] = _peak_rss_mb() if tracked else None
    except Exception as exc:  # noqa: BLE001 - one failing contender never stops the run
        rec["error"] = _error_text(exc)
    finally:
        del fn
        if on_gpu:
            _gpu_cleanup()
    return rec


def measure_in_turns(capability: str, params: dict, contenders, *, data, floors,
                     repeats=DEFAULT_REPEATS, warmup=True) -> list:
    """Records of the CPU ``contenders`` on one workload, timed in turns: each is set up and
    warmed up (its peak resident memory read then), then round after round every contender
    runs once, so a slow spell of a shared machine falls on all of them and their ratios
    stay steady where sequential medians would not. Failures are recorded, never raised."""
    live, records = [], []
    for name in contenders:
        rec = _record(capability, params, name, floors)
        records.append(rec)
        reason = availability(capability, name, params)
        if reason is not None:
            rec["error"] = f"unavailable: {reason}"
            continue
        try:
            gc.collect()
            tracked = _reset_peak_rss()
            fn = _setup(capability, name, params, data)
            if warmup:
                fn()
            rec["peak_rss_mb"] = _peak_rss_mb() if tracked else None
            live.append((rec, fn))
        except Exception as exc:  # noqa: BLE001 - one failing contender never stops the run
            rec["error"] = _error_text(exc)
    for _ in range(int(repeats)):
        for rec, fn in list(live):
            try:
                rec["times"].append(timed(fn, 1, warmup=False)[0])
            except Exception as exc:  # noqa: BLE001
                rec["error"], rec["times"] = _error_text(exc), []
                live.remove((rec, fn))
    for rec, _fn in live:
        rec["seconds"] = float(np.median(rec["times"]))
        if rec["floor_seconds"]:
            rec["ratio_to_floor"] = rec["seconds"] / rec["floor_seconds"]
    return records


def _complete(capability: str, params: dict, preset: dict) -> dict:
    """``params`` over the preset's for ``capability``, checked; plain ints and floats."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; choose from {list(CAPABILITIES)}")
    if not isinstance(params, dict):
        raise ValueError(f"sizes for {capability!r} must be a dict of params or a list of "
                         f"dicts, got {type(params).__name__}")
    unknown = set(params) - set(PARAMS[capability])
    if unknown:
        raise ValueError(f"{capability}: unknown size params {sorted(unknown)}; known: "
                         f"{list(PARAMS[capability])}")
    out = {}
    for key in PARAMS[capability]:
        value = params.get(key, preset[capability][key])
        if key in _FLOAT_PARAMS:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not 0 < float(value) < float("inf"):
                raise ValueError(f"{capability}: {key} must be a positive number, got {value!r}")
            out[key] = float(value)
        else:
            lowest = 0 if key in _FLAGS else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < lowest:
                what = "a non-negative" if key in _FLAGS else "a positive"
                raise ValueError(f"{capability}: {key} must be {what} integer, got {value!r}")
            out[key] = int(value)
    if out.get("queries") and "k" in out and out["k"] > out["n"]:
        raise ValueError(f"{capability}: k={out['k']} needs a database of n >= k rows, got "
                         f"n={out['n']}")
    if not out.get("queries") and "k" in out and out["k"] > out["n"] - 1:
        raise ValueError(f"{capability}: k={out['k']} needs n > k, got n={out['n']}")
    if "clusters" in out and capability == "kmeans" and out["clusters"] > out["n"]:
        raise ValueError(f"kmeans: clusters={out['clusters']} is larger than n={out['n']}")
    if capability == "hdl" and out["n"] < max(2 * (out["k"] + 1), 2 * out["classes"]):
        raise ValueError(f"hdl: the ring graph needs n >= 2 (k + 1) and n >= 2 classes, got "
                         f"n={out['n']}")
    if "label_fraction" in out and out["label_fraction"] > 1:
        raise ValueError(f"{capability}: label_fraction must be at most 1")
    return out


def _plan(quick, capabilities, sizes, contenders):
    preset = QUICK if quick else FULL
    if sizes is not None and not isinstance(sizes, dict):
        raise ValueError(f"sizes must be a dict capability -> params, got {type(sizes).__name__}")
    sizes = dict(sizes or {})
    if capabilities is None:
        capabilities = [c for c in CAPABILITIES if c in sizes] if sizes else list(CAPABILITIES)
    elif isinstance(capabilities, str):
        capabilities = [capabilities]
    capabilities = list(capabilities)
    for cap in [*capabilities, *sizes]:
        if cap not in CAPABILITIES:
            raise ValueError(f"unknown capability {cap!r}; choose from {list(CAPABILITIES)}")
    if contenders is not None:
        contenders = [contenders] if isinstance(contenders, str) else list(contenders)
        known = {c for names in CONTENDERS.values() for c in names}
        bad = [c for c in contenders if c not in known]
        if bad:
            raise ValueError(f"unknown contenders {bad}; choose from {sorted(known)}")
    plan = []
    for cap in CAPABILITIES:  # a fixed order, whatever order was asked
        if cap not in capabilities:
            continue
        given = sizes.get(cap, [{}] if quick else FULL_SIZES.get(cap, [{}]))
        for params in (given if isinstance(given, (list, tuple)) else [given]):
            names = [c for c in CONTENDERS[cap] if contenders is None or c in contenders]
            plan.append((cap, _complete(cap, params, preset), names))
    return plan


def size_label(capability: str, params: dict) -> str:
    """A short text for one workload size, e.g. ``20,000x128 k=20``."""
    p = params
    if capability == "knn" and p.get("queries"):
        return f"{p['queries']:,} vs {p['n']:,}x{p['d']} k={p['k']}"
    if capability == "knn" or capability == "label":
        return f"{p['n']:,}x{p['d']} k={p['k']}"
    if capability == "hdl":
        return f"{p['n']:,} k={p['k']}"
    if capability == "sinkhorn":
        kind = " swav" if p.get("swav") else ""
        return f"{p['n']:,}x{p['clusters']} it={p['iters']}{kind}"
    if capability == "kmeans":
        kind = " spherical++" if p.get("spherical") else ""
        return f"{p['n']:,}x{p['d']} C={p['clusters']} it={p['iters']}{kind}"
    return str(p)


def run(quick=False, capabilities=None, sizes=None, repeats=None, progress=print, *,
        contenders=None, warmup=True) -> dict:
    """Benchmark hdlfast against its peers; returns the result dict (see the module doc)."""
    repeats = DEFAULT_REPEATS if repeats is None else repeats
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    plan = _plan(quick, capabilities, sizes, contenders)
    say = progress if progress is not None else (lambda _line: None)
    records, skipped = [], []

    def skip(cap, name, reason):
        entry = {"capability": cap, "contender": name, "reason": reason}
        if entry not in skipped:
            skipped.append(entry)

    gpu = any(name in _GPU_CONTENDERS and availability(cap, name, params) is None
              for cap, params, names in plan for name in names)
    say("measuring the floors (matmul rate, copy bandwidth)" + (" on the CPU and the GPU"
                                                                 if gpu else ""))
    floors = measure_floors(gpu=gpu)
    machine = machine_info()
    for cap, params, names in plan:
        size = size_label(cap, params)
        say(f"{cap} {size}")
        runnable = []
        for name in names:
            reason = availability(cap, name, params)
            if reason is None:
                runnable.append(name)
            else:
                skip(cap, name, reason)
                say(f"  {name}: skipped ({reason})")
        if not runnable:
            continue
        try:
            data = prepare(cap, params)
        except Exception as exc:  # noqa: BLE001 - e.g. no memory for the inputs
            for name in runnable:
                rec = _record(cap, params, name, floors)
                rec["error"] = f"preparing data: {_error_text(exc)}"
                records.append(rec)
                say(f"  {name}: error: {rec['error']}")
            continue
        cpu = [name for name in runnable if name not in _GPU_CONTENDERS]
        done = measure_in_turns(cap, params, cpu, data=data, floors=floors, repeats=repeats,
                                warmup=warmup) if cpu else []
        for name in runnable:
            if name in cpu:
                rec = done[cpu.index(name)]
            else:  # GPU contenders one after another, the device's memory freed between
                rec = measure(cap, params, name, data=data, floors=floors, repeats=repeats,
                              warmup=warmup)
            records.append(rec)
            if "error" in rec:
                say(f"  {name}: error: {rec['error']}")
            else:
                ratio = rec["ratio_to_floor"]
                say(f"  {name}: {rec['seconds']:.4g} s" + (f" ({ratio:.2f}x floor)"
                                                           if ratio else ""))
        del data
        gc.collect()
    return {"schema": SCHEMA,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "machine": machine, "floors": floors,
            "settings": {"preset": "quick" if quick else "full", "repeats": int(repeats),
                         "warmup": bool(warmup), "cpu_in_turns": True},
            "records": records, "skipped": skipped}
