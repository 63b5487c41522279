"""``python -m benchmarks [NAME ...] [--quick] [--out FILE]``: run benchmarks, print each
result, and update their generated blocks in ``docs/performance.md``.

Each benchmark owns one block between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``;
running one benchmark rewrites only its block (and the machine block), so hand-written text
and the other benchmarks' last results stay. Benchmarks report; the exit status is 0 even
when a target is missed (1 only if a benchmark could not run at all).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .common import (
    ROOT,
    Figure,
    Section,
    byte_compile_package,
    machine_line,
    machine_markdown,
    settle,
)

# In the order of the blocks in docs/performance.md.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "overhead": ("benchmarks.overhead", "1. Orchestration overhead"),
    "datapath": ("benchmarks.datapath", "2. Data path"),
    "detection": ("benchmarks.detection", "3. Detection latency"),
    "critical-path": ("benchmarks.critical_path", "4. Critical path on real AWS (model)"),
    "reap": ("benchmarks.reap", "5. Reap at scale"),
    "cli": ("benchmarks.cli_speed", "6. CLI responsiveness"),
    "memory": ("benchmarks.memory", "7. Memory"),
    "fastpaths": ("benchmarks.fastpaths", "8. Speed tricks, with and without"),
    "growth": ("benchmarks.growth", "9. Snapshot growth"),
    "fidelity": ("benchmarks.fidelity", "10. Fidelity"),
}
# The timing-sensitive small ones first; the two that write GiBs (memory, datapath) last, so
# their write-back never lands in another benchmark's timings.
DEFAULT_ORDER = [
    "overhead",
    "detection",
    "cli",
    "fastpaths",
    "critical-path",
    "reap",
    "growth",
    "memory",
    "fidelity",
    "datapath",
]

DOC = ROOT / "docs" / "performance.md"


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    """A replacement for ``re.sub`` taken as it is (no backslash escapes)."""
    return lambda _match: text


def block(name: str, body: str) -> str:
    return f"<!-- bench:{name} -->\n{body.rstrip()}\n<!-- /bench:{name} -->"


def update_doc(path: Path, sections: dict[str, str]) -> None:
    """Replace the named blocks in ``path`` (appending blocks it does not have yet)."""
    text = path.read_text() if path.exists() else _skeleton()
    for name, body in sections.items():
        pattern = re.compile(
            rf"<!-- bench:{re.escape(name)} -->\n.*?<!-- /bench:{re.escape(name)} -->", re.S
        )
        new = block(name, body)
        if pattern.search(text):
            text = pattern.sub(_literal(new), text)
        else:
            text = text.rstrip() + "\n\n" + new + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _skeleton() -> str:
    parts = ["# Performance\n", block("machine", "(not measured yet)"), "\n## Results\n"]
    parts += [
        block(name, f"### {title}\n\nNot run yet.") + "\n"
        for name, (_, title) in BENCHMARKS.items()
    ]
    return "\n".join(parts)


def failed_section(name: str, title: str, error: str) -> Section:
    return Section(
        key=name,
        title=title,
        command=f"python -m benchmarks {name}",
        figures=[],
        notes=[f"**Could not run**: {error}"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller trees")
    parser.add_argument("--out", type=Path, default=DOC, help="Markdown file to update")
    parser.add_argument("--no-doc", action="store_true", help="print only; do not write")
    args = parser.parse_args(argv)
    names = args.names or DEFAULT_ORDER
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    byte_compile_package()
    sections: dict[str, str] = {"machine": "## Machine\n\n" + machine_markdown()}
    status = 0
    line = machine_line()
    for name in names:
        module_name, title = BENCHMARKS[name]
        print(f"== {title} (python -m benchmarks {name})", file=sys.stderr, flush=True)
        settled = settle()
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        try:
            module = importlib.import_module(module_name)
            section: Section = module.run(quick=args.quick)
        except Exception as exc:  # a benchmark reports; it does not take the suite down
            traceback.print_exc()
            section = failed_section(name, title, f"{type(exc).__name__}: {exc}")
            status = 1
        section.seconds = time.perf_counter() - start
        section.notes.append(
            f"Load average (1 min) at start / end: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
            f"on {os.cpu_count()} cores; above the core count, other work was competing and "
            f"the timings are pessimistic. Started after {settled:.1f} s of waiting for the "
            "page cache's write-back (os.sync, then Dirty + Writeback under 16 MiB)."
        )
        if args.quick:
            section.command += " --quick"
        text = section.markdown(line)
        print(text, flush=True)
        sections[name] = text
        if not args.no_doc:
            update_doc(args.out, {"machine": sections["machine"], name: text})
    _print_summary([sections[n] for n in names])
    return status


def _print_summary(texts: list[str]) -> None:
    missed = [ln for t in texts for ln in t.splitlines() if "**missed**" in ln]
    if missed:
        print("Targets missed:", file=sys.stderr)
        for ln in missed:
            print("  " + ln, file=sys.stderr)


__all__ = ["Figure", "Section", "main"]

if __name__ == "__main__":
    sys.exit(main())
