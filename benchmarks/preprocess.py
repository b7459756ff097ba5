"""Data preparation of a large JSONL: today's loader (🤗 Datasets) against the old one (all records in memory).

    python benchmarks/preprocess.py [--mb 1024] [--kind text|instruction] [--max-seq-len 512]
                                    [--old-rss-limit-mb N] [--old-time-limit-s 900] [--json PATH]

Writes a JSONL of about --mb MB (`text` records of 50-400 words, or `prompt` + `completion` records) to a temp
dir, builds the tests' tiny byte-level BPE tokenizer there (nothing downloaded), then runs, each in a fresh
subprocess, one after another:

1. new, first time: `cloudtune.train.data.encode_input(file, ...)` (what the causal-LM recipe runs: load_dataset
   into Arrow, one batched map, in several processes for large data) with HF_DATASETS_CACHE pointing at an empty
   temp dir, so the JSON -> Arrow conversion and the map are paid in full (no cache hit);
2. new, cache hit: the same call again on the same cache dir (what a restarted job, or the other ranks, pay); the
   report says whether it wrote any new cache file (it should not);
3. old: the causal-LM loader before the 🤗 Datasets rewrite, loaded from git (the parent of the commit that added
   `cloudtune/train/data.py`; its loader was `cloudtune/data/records.py` then): `read_records` (the whole file
   read, decoded and parsed into a list of dicts) + `encode_records` (one tokenizer call per record, every example
   a Python list). It is stopped when its process tree passes --old-rss-limit-mb (default: the smaller of 20 GB
   and 80% of the memory available at start) or --old-time-limit-s, and reported as stopped, with what it had
   reached: that is a result.

Each side is timed inside its subprocess around the loader call alone (the tokenizer is loaded before; imports and
interpreter start are outside), MB/s = file size / that time. Peak RSS: of the subprocess's whole process tree
(the map's worker processes included), see `benchmarks/measure.py`. The cache dir is removed at the end.

Targets: new peak RSS < 2 GB; new first-time MB/s > old MB/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from measure import MB, child_rusage, run_child  # noqa: E402

WORDS = ("the quick brown fox jumps over lazy dog a small model learns to repeat simple sentences roast beans "
         "until first crack then cool them fast boat sails north when wind comes from south numbers appear in "
         "text too 0 1 2 3 4 5 6 7 8 9 The End. Questions? Answers! {json: [1, 2]} <tags> and_underscores").split()


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def write_jsonl(path: Path, mb: float, kind: str, seed: int = 0) -> dict[str, Any]:
    """About `mb` MB of records: a pool of distinct records, written in a random order until the size is reached."""
    rng = random.Random(seed)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    if kind == "text":
        pool = [json.dumps({"text": words(50, 400)}) + "\n" for _ in range(20_000)]
    else:
        pool = [json.dumps({"prompt": words(10, 120), "completion": words(20, 280)}) + "\n" for _ in range(20_000)]
    target = int(mb * MB)
    written = records = 0
    with open(path, "w", encoding="utf-8", buffering=8 * MB) as fh:
        while written < target:
            chunk = "".join(rng.choices(pool, k=2000))
            fh.write(chunk)
            written += len(chunk.encode("utf-8")) if not chunk.isascii() else len(chunk)
            records += 2000
    return {"path": str(path), "bytes": path.stat().st_size, "records": records, "kind": kind}


def old_loader_source(dest: Path) -> dict[str, str]:
    """Write the old loader module (from git) to `dest`; return which commit and file it came from."""
    added = subprocess.run(["git", "-C", str(ROOT), "log", "--diff-filter=A", "--format=%H", "-1", "--",
                            "cloudtune/train/data.py"], capture_output=True, text=True, check=True).stdout.strip()
    if not added:
        raise SystemExit("preprocess: cannot find the commit that added cloudtune/train/data.py (a shallow clone?)")
    rev = f"{added}^"
    for path in ("cloudtune/data/records.py", "cloudtune/train/data.py"):
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True)
        if shown.returncode == 0 and "def read_records" in shown.stdout and "def encode_records" in shown.stdout:
            dest.write_text(shown.stdout)
            full = subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True, text=True,
                                  check=True).stdout.strip()
            return {"commit": full, "path": path}
    raise SystemExit(f"preprocess: no loader with read_records + encode_records at {rev}")


# ----------------------------------------------------------------------------------------------
# Children
# ----------------------------------------------------------------------------------------------


def _tokenizer(model_dir: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _cache_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.is_dir() else []


def child_new(a: argparse.Namespace) -> dict[str, Any]:
    from cloudtune.spec import DataSpec
    from cloudtune.train.data import encode_input

    tokenizer = _tokenizer(a.model)
    data = DataSpec(format=a.kind)
    cache = Path(os.environ["HF_DATASETS_CACHE"])
    before = set(_cache_files(cache))
    started = time.perf_counter()
    enc = encode_input(Path(a.data), None, data, tokenizer, a.max_seq_len)
    seconds = time.perf_counter() - started
    after = _cache_files(cache)
    return {"seconds": seconds, "examples": enc.examples, "dropped": enc.dropped, "format": enc.fmt,
            "new_cache_files": len([f for f in after if f not in before]),
            "cache_bytes": sum((cache / f).stat().st_size for f in after)}


def child_old(a: argparse.Namespace) -> dict[str, Any]:
    import importlib.util

    from cloudtune.spec import DataSpec

    spec = importlib.util.spec_from_file_location("old_loader", a.old_module)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)  # type: ignore[union-attr]
    tokenizer = _tokenizer(a.model)
    data = DataSpec(format=a.kind)
    progress = Path(a.out).with_suffix(".progress")
    started = time.perf_counter()
    records = old.read_records(Path(a.data), data.text_field)
    read_s = time.perf_counter() - started
    progress.write_text(json.dumps({"read_records_s": read_s, "records": len(records)} | child_rusage()))
    dataset, fmt, dropped = old.encode_records(records, data, tokenizer, a.max_seq_len)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "read_records_s": read_s, "examples": len(dataset), "dropped": dropped, "format": fmt}


def child_main(a: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = child_new(a) if a.child == "new" else child_old(a)
    result |= child_rusage()
    Path(a.out).write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------
# Parent
# ----------------------------------------------------------------------------------------------


def _available_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 20_000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=1024, help="size of the generated JSONL in MB (default 1 GB)")
    parser.add_argument("--kind", choices=["text", "instruction"], default="text")
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--old-rss-limit-mb", type=float, help="stop the old loader past this tree RSS")
    parser.add_argument("--old-time-limit-s", type=float, default=900)
    parser.add_argument("--new-time-limit-s", type=float, default=1800)
    parser.add_argument("--skip-old", action="store_true")
    parser.add_argument("--json", type=Path, help="write the report here too")
    parser.add_argument("--child", choices=["new", "old"], help=argparse.SUPPRESS)
    for name in ("--model", "--data", "--out", "--old-module"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)

    rss_limit = args.old_rss_limit_mb or min(20_000.0, 0.8 * _available_mb())
    root = Path(tempfile.mkdtemp(prefix="cloudtune-preprocess-"))
    try:
        from tests.tiny_models import make_tiny_gpt2

        model_dir = make_tiny_gpt2(root / "tiny")
        t0 = time.perf_counter()
        data_info = write_jsonl(root / "train.jsonl", args.mb, args.kind)
        data_info["write_s"] = round(time.perf_counter() - t0, 1)
        file_mb = data_info["bytes"] / MB
        print(f"[preprocess] {file_mb:.0f} MB, {data_info['records']} {args.kind} records written in "
              f"{data_info['write_s']} s", file=sys.stderr, flush=True)
        old_module = root / "old_loader.py"
        old_from = old_loader_source(old_module)
        cache = root / "hf-datasets-cache"
        base = [sys.executable, __file__, "--model", str(model_dir), "--data", data_info["path"], "--kind", args.kind,
                "--max-seq-len", str(args.max_seq_len), "--old-module", str(old_module)]

        def side(child: str, name: str, **limits: Any) -> dict[str, Any]:
            out = root / f"{name}.json"
            env = dict(os.environ, HF_DATASETS_CACHE=str(cache), PYTHONWARNINGS="ignore")
            res = run_child(base + ["--child", child, "--out", str(out)], out, env=env, log=root / f"{name}.log",
                            **limits)
            progress = out.with_suffix(".progress")
            if res.get("killed") and progress.is_file():
                res["reached"] = json.loads(progress.read_text())
            if res.get("seconds"):
                res["mb_per_s"] = round(file_mb / res["seconds"], 2)
            if res["returncode"] != 0 and not res.get("killed"):
                print(f"[preprocess] {name} failed:\n{res.get('log_tail')}", file=sys.stderr)
            line = (f"stopped ({res['killed']}) after {res['wall_s']} s" if res.get("killed")
                    else f"{res.get('seconds', float('nan')):.1f} s, {res.get('mb_per_s')} MB/s")
            print(f"[preprocess] {name}: {line}, peak RSS {res['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
            return res

        results = {
            "new_first": side("new", "new_first", time_limit_s=args.new_time_limit_s),
            "new_cache_hit": side("new", "new_cache_hit", time_limit_s=args.new_time_limit_s),
        }
        shutil.rmtree(cache, ignore_errors=True)  # before the old loader runs: the disk and page cache are its own
        if not args.skip_old:
            results["old"] = side("old", "old", rss_limit_mb=rss_limit, time_limit_s=args.old_time_limit_s)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    new, old = results["new_first"], results.get("old")
    keep = ("seconds", "mb_per_s", "peak_rss_mb", "self_maxrss_mb", "children_maxrss_mb", "tree_peak_rss_mb", "tree_peak_pss_mb",
            "wall_s", "examples", "dropped", "new_cache_files", "cache_bytes", "read_records_s", "killed", "reached",
            "returncode")
    report: dict[str, Any] = {
        "benchmark": "preprocess",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, sched_getaffinity {len(os.sched_getaffinity(0))}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "file_mb": round(file_mb, 1), "records": data_info["records"], "kind": args.kind,
        "max_seq_len": args.max_seq_len, "old_loader": old_from,
        "old_limits": {"rss_mb": round(rss_limit), "time_s": args.old_time_limit_s},
        "results": {k: {f: v[f] for f in keep if f in v} for k, v in results.items()},
        "targets": {"new_peak_rss_mb": "< 2048", "new_vs_old_speed": "> 1.0"},
    }
    if old and not old.get("killed") and old.get("seconds") and new.get("seconds"):
        report["new_vs_old_speed"] = round(old["seconds"] / new["seconds"], 2)
        report["new_vs_old_peak_rss"] = round(new["peak_rss_mb"] / old["peak_rss_mb"], 3)
    elif old and old.get("killed"):
        report["new_vs_old_speed"] = f"old loader stopped ({old['killed']} bound) after {old['wall_s']} s"
    print_table(report)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_table(report: dict[str, Any]) -> None:
    lines = [f"{report['file_mb']:.0f} MB, {report['records']} {report['kind']} records, max_seq_len {report['max_seq_len']}",
             f"{'loader':<16} {'seconds':>9} {'MB/s':>8} {'peak RSS MB':>12}  note"]
    for name, r in report["results"].items():
        note = f"stopped: {r['killed']} bound" if r.get("killed") else ""
        if name == "new_cache_hit":
            note = f"new cache files: {r.get('new_cache_files')}"
        secs = f"{r['seconds']:.1f}" if r.get("seconds") else "-"
        pss = f", tree PSS {r['tree_peak_pss_mb']:.0f} MB" if r.get("tree_peak_pss_mb") else ""
        lines.append(f"{name:<16} {secs:>9} {r.get('mb_per_s', '-'):>8} {r['peak_rss_mb']:>12.0f}  {note}{pss}")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
