#!/usr/bin/env python3
"""What is resident in a bake-agent process: per mapping, per ELF section, per crate.

    bench/resident.py [--agent target/release/bake-agent] [--pid PID] [--top 25] [--json OUT]

Without --pid the agent is started idle exactly as bench/restart.py starts it (standalone
identity from the hand-written IMDS stand-in of that script, one supervised app, no [logs], metrics
off), left alone for --settle seconds, analysed and stopped. With --pid a running process is
analysed (e.g. a bake-logship while it ships; its binary is read from /proc/PID/exe).

How: /proc/PID/smaps gives the mappings; /proc/PID/pagemap (needs root) tells for every page of
the binary's mappings whether it is present and whether it is still the file's page or an
anonymous copy (a relocated or written page). Present bytes are attributed to ELF sections (readelf)
and, for .text/.rodata/.data.rel.ro, to symbols (nm; a binary built with `strip = true` has none)
and so to crates (the first non-std path of the demangled name). The kernel maps page-cache pages
around each file fault ("fault-around", 64 KiB by default), so one touched function can bring up to
16 pages into RSS: the "64 KiB windows" column tells how many such windows hold present pages.
"""
import argparse
import bisect
import collections
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PAGE = os.sysconf("SC_PAGE_SIZE")
STD = {"core", "alloc", "std", "hashbrown", "__rustc", "__rust_std"}


def smaps(pid):
    maps, cur = [], None
    head = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ \d+\s*(.*)$")
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = head.match(line)
            if m:
                cur = {"start": int(m[1], 16), "end": int(m[2], 16), "perms": m[3],
                       "offset": int(m[4], 16), "path": m[5].strip(), "kib": {}}
                maps.append(cur)
            elif cur is not None and line.endswith("kB\n"):
                k, v = line.split(":", 1)
                cur["kib"][k] = int(v.split()[0])
    return maps


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, v = line.split(":", 1)
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"):
                out[k] = int(v.split()[0])
    return out


def present_pages(pid, m):
    """[(vaddr, is_file_page)] for the present pages of mapping m."""
    n = (m["end"] - m["start"]) // PAGE
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(m["start"] // PAGE * 8)
        data = f.read(n * 8)
    out = []
    for i, (e,) in enumerate(struct.iter_unpack("<Q", data)):
        if e >> 63 & 1:
            out.append((m["start"] + i * PAGE, bool(e >> 61 & 1)))
    return out


def elf_segments(path):
    """PT_LOAD segments: (p_offset, p_vaddr, p_filesz)."""
    out = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True, check=True).stdout
    segs = []
    for line in out.splitlines():
        p = line.split()
        if p and p[0] == "LOAD":
            segs.append((int(p[1], 16), int(p[2], 16), int(p[4], 16)))
    return segs


def elf_sections(path):
    out = subprocess.run(["readelf", "-SW", path], capture_output=True, text=True, check=True).stdout
    secs = []
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if m and int(m[2], 16):
            secs.append((int(m[2], 16), int(m[4], 16), m[1]))
    return sorted(secs)


def crate_of(name):
    if name.startswith(("aws_lc_", "GFp_", "ring_core_")) or re.match(r"^(BN|EVP|SHA|AES|CRYPTO|OPENSSL|EC|RSA|HMAC|x25519|ChaCha|aes_|bn_|ec_|sha\d|p256|p384|ecp_|gcm_)", name):
        return "aws-lc/ring (C/asm)"
    # The crate of the implementing type for `<T as Trait>::f`, else of the path; generic code
    # instantiated for some type shows as core/alloc/std (legacy symbol names carry no type
    # arguments).
    m = re.match(r"^[<&]*(?:mut |dyn |const |\*)*([A-Za-z_][A-Za-z0-9_]*)::", name)
    if not m:
        return "(C / libc / unnamed)"
    c = m[1]
    return "core/alloc/std (generic)" if c in STD else c


def symbols(path):
    out = subprocess.run(["nm", "-C", "-S", "--defined-only", path], capture_output=True,
                         text=True).stdout
    syms = []
    for line in out.splitlines():
        p = line.split(None, 3)
        if len(p) == 4 and p[2] in "tTrRdDbBvVwW":
            syms.append((int(p[0], 16), int(p[1], 16), p[3]))
    syms.sort()
    return syms


def overlap_attr(pages, intervals, bucket):
    """Adds the present bytes of pages (ELF vaddr, PAGE long) covered by intervals
    (start, size, key; sorted) to bucket[key]; uncovered bytes to bucket[None]."""
    starts = [s for s, _, _ in intervals]
    for p in pages:
        covered = 0
        i = max(bisect.bisect_right(starts, p) - 1, 0)
        # Symbols may overlap (aliases): count each byte once, by a sweep.
        pos = p
        while i < len(intervals) and intervals[i][0] < p + PAGE:
            s, size, key = intervals[i]
            lo, hi = max(s, pos), min(s + size, p + PAGE)
            if hi > lo:
                bucket[key] += hi - lo
                covered += hi - lo
                pos = hi
            i += 1
        bucket[None] += PAGE - covered


def analyse(pid, binary=None, top=25):
    exe = os.path.realpath(f"/proc/{pid}/exe")
    binary = binary or exe
    st = status(pid)
    maps = smaps(pid)
    by_path = collections.defaultdict(lambda: collections.Counter())
    for m in maps:
        key = m["path"] or "[anon]"
        if key == exe:
            key = "[the binary]"
        by_path[key]["rss"] += m["kib"].get("Rss", 0)
        by_path[key]["anon"] += m["kib"].get("Anonymous", 0)
    segs = elf_segments(binary)
    secs = elf_sections(binary)
    syms = symbols(binary)
    base = None
    pages = []  # (elf vaddr, is_file)
    for m in maps:
        if m["path"] != exe:
            continue
        for va, is_file in present_pages(pid, m):
            fo = m["offset"] + (va - m["start"])
            for off, vaddr, filesz in segs:
                if off <= fo < off + max(filesz, PAGE):
                    pages.append((vaddr + fo - off, is_file))
                    break
            else:
                # .bss beyond the file: map through the mapping's own position.
                if base is not None:
                    pages.append((va - base, is_file))
        if base is None:
            # First mapping of a PIE maps file offset 0 at the load base.
            base = m["start"] - m["offset"]
    pages.sort()
    sec_bytes = collections.Counter()
    overlap_attr([p for p, _ in pages], secs, sec_bytes)
    sec_anon = collections.Counter()
    overlap_attr([p for p, f in pages if not f], secs, sec_anon)
    sec_size = {name: size for _, size, name in secs}
    windows = collections.Counter()
    for p, _ in pages:
        windows[p // 65536] += 1
    sym_iv = [(a, s, n) for a, s, n in syms if s]
    sym_bytes = collections.Counter()
    overlap_attr([p for p, _ in pages], sym_iv, sym_bytes)
    crates = collections.Counter()
    for n, b in sym_bytes.items():
        crates[crate_of(n) if n else "(between symbols)"] += b
    crate_size = collections.Counter()
    for _, s, n in sym_iv:
        crate_size[crate_of(n)] += s
    return {
        "pid": pid, "binary": binary, "status_kib": st,
        "by_mapping_kib": {k: dict(v) for k, v in sorted(by_path.items(), key=lambda kv: -kv[1]["rss"])},
        "binary_present_kib": len(pages) * PAGE // 1024,
        "binary_present_anon_kib": sum(1 for _, f in pages if not f) * PAGE // 1024,
        "windows_64k": len(windows),
        "sections": [{"name": n, "size_kib": sec_size.get(n, 0) // 1024,
                      "present_kib": sec_bytes[n] // 1024, "anon_kib": sec_anon[n] // 1024}
                     for n in sorted(sec_bytes, key=lambda n: -sec_bytes[n]) if n],
        "crates": [{"crate": c, "present_kib": b // 1024, "size_kib": crate_size.get(c, 0) // 1024}
                   for c, b in crates.most_common(top)],
        "symbols": [{"symbol": n[:140], "present_kib": b // 1024}
                    for n, b in sym_bytes.most_common(top) if n],
    }


def print_report(r):
    s = r["status_kib"]
    print(f"pid {r['pid']} {r['binary']}")
    print(f"VmRSS {s['VmRSS']/1024:.1f} MiB (anon {s['RssAnon']/1024:.1f}, file {s['RssFile']/1024:.1f}), "
          f"VmHWM {s['VmHWM']/1024:.1f} MiB, threads {s['Threads']}")
    print("\nby mapping (KiB):")
    for k, v in r["by_mapping_kib"].items():
        if v["rss"]:
            print(f"  {v['rss']:8d} rss {v['anon']:8d} anon  {k}")
    print(f"\nthe binary: {r['binary_present_kib']} KiB present ({r['binary_present_anon_kib']} KiB "
          f"anonymous copies) in {r['windows_64k']} distinct 64 KiB windows")
    print("\nby section (KiB):      size  present  of which anon")
    for x in r["sections"]:
        print(f"  {x['name']:20s} {x['size_kib']:7d} {x['present_kib']:8d} {x['anon_kib']:8d}")
    print("\nby crate (KiB, symbols in present pages):   present   crate's symbols")
    for x in r["crates"]:
        print(f"  {x['crate']:40s} {x['present_kib']:8d} {x['size_kib']:8d}")
    print("\nlargest symbols present (KiB):")
    for x in r["symbols"]:
        print(f"  {x['present_kib']:6d}  {x['symbol']}")


def start_idle(agent, settle):
    sys.path.insert(0, HERE)
    import restart  # noqa: E402  (the same IMDS stand-in, app and agent config as the restart bench)
    tmp = tempfile.mkdtemp(prefix="bench-resident-")
    app = os.path.join(tmp, "app")
    with open(app + ".c", "w") as f:
        f.write(restart.APP_C)
    subprocess.run(["cc", "-O2", "-o", app, app + ".c"], check=True)
    imds = restart.QuietServer(("127.0.0.1", 0), restart.Imds)
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    sup = restart.Sup("bake-agent", app, tmp, imds.server_port, os.path.abspath(agent), fast=False)
    sup.start()
    time.sleep(settle)
    return sup, imds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", default=os.path.join(ROOT, "target/release/bake-agent"))
    ap.add_argument("--pid", type=int)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.pid:
        r = analyse(args.pid, top=args.top)
    else:
        sup, imds = start_idle(args.agent, args.settle)
        try:
            r = analyse(sup.proc.pid, top=args.top)
        finally:
            sup.stop()
            imds.shutdown()
    print_report(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
