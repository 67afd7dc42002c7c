"""The last lines of `make gpu-check` (at most 40): the doctor's checks, the gpu tests, the benchmark's targets.

    python scripts/gpu_summary.py OUT [--seconds S] [--limit L] [--status 0|1]

Reads OUT/doctor.json, OUT/gpu-test.xml and OUT/gpu-bench.json (each may be missing: a step that was killed
says so) and prints the summary; the benchmark's lines come from benchmarks/sections/report.summary_lines.
"""
from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.sections.report import summary_lines  # noqa: E402

MAX_LINES = 40


def doctor_lines(out: Path) -> list[str]:
    path = out / "doctor.json"
    if not path.is_file():
        return ["doctor: no doctor.json (the doctor did not finish)"]
    checks = json.loads(path.read_text())
    failed = [c for c in checks if c["status"] == "FAILED"]
    counts = {s: sum(c["status"] == s for c in checks) for s in ("ok", "skipped", "FAILED")}
    lines = [f"doctor: {counts['ok']} ok, {counts['skipped']} skipped, {counts['FAILED']} FAILED"]
    return lines + [f"  FAILED {c['name']}: {c['detail'].splitlines()[0][:150]}" for c in failed[:4]]


def test_lines(out: Path) -> list[str]:
    path = out / "gpu-test.xml"
    if not path.is_file():
        return ["gpu-test: no gpu-test.xml (the tests did not finish: see gpu-test.log)"]
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n, fails, errors, skips = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    lines = [f"gpu-test: {n - fails - errors - skips} passed, {fails + errors} failed, {skips} skipped "
             f"in {float(suite.get('time', 0)):.0f} s"]
    bad = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
           if c.find("failure") is not None or c.find("error") is not None]
    return lines + [f"  FAILED {b}" for b in bad[:4]] + ([f"  ... {len(bad) - 4} more"] if len(bad) > 4 else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seconds", type=int, default=None, help="how long the check ran")
    ap.add_argument("--limit", type=int, default=None, help="its time limit")
    ap.add_argument("--status", type=int, default=None, help="its exit status so far")
    args = ap.parse_args(argv)
    head = ["== gpu-check summary"] + doctor_lines(args.out) + test_lines(args.out)
    tail = [f"files: {args.out} (summary.txt, doctor.txt, gpu-test.xml, gpu-bench.json and .md, gpu-check.log)"]
    if args.status is not None:
        took = f" in {args.seconds} s" + (f" (limit {args.limit} s)" if args.limit else "") if args.seconds else ""
        tail.append(f"gpu-check: {'passed' if args.status == 0 else 'FAILED'}{took}")
    bench = args.out / "gpu-bench.json"
    room = MAX_LINES - len(head) - len(tail)
    body = (summary_lines(json.loads(bench.read_text()), room) if bench.is_file() else
            ["gpu-bench: no gpu-bench.json (the benchmark did not start)"])
    print("\n".join(head + body + tail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
