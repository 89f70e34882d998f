"""Sampling profiles of the running services with py-spy (no code change in the services).

``py-spy record`` attaches to each process for a few seconds and writes a speedscope file
(open it at speedscope.app, or read ``summary.txt``). Only samples where a thread was running are
kept (py-spy's default), so the figures are shares of CPU time, not of wall time.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from deploy.local.system import ROOT

_ROOT = f"{ROOT}/"


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


async def record(pids: dict[str, int], seconds: float, out_dir: Path, *, rate: int = 100,
                 native: bool = False) -> dict[str, Any]:
    """Profile every process of ``pids`` at once; returns {name: summary or error}."""
    exe = py_spy()
    if exe is None:
        return {"error": "py-spy is not installed (pip install -c constraints.txt -e '.[dev]')"}
    out_dir.mkdir(parents=True, exist_ok=True)

    async def one(name: str, pid: int) -> tuple[str, Any]:
        path = out_dir / f"{name.replace('#', '-')}.speedscope.json"
        cmd = [exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(rate),
               "--format", "speedscope", "-o", str(path)]
        cmd += ["--native"] if native else ["--nonblocking"]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        output, _ = await proc.communicate()
        if proc.returncode != 0 or not path.exists():
            return name, {"error": output.decode(errors="replace")[-500:]}
        return name, {"file": str(path.name), **summarize(json.loads(path.read_text()))}

    results = await asyncio.gather(*(one(n, p) for n, p in pids.items()))
    return dict(results)


def _label(frame: dict[str, Any]) -> str:
    file = str(frame.get("file") or "")
    for marker in ("site-packages/", _ROOT, "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    else:
        if match := _OWN.search(file):
            file = file[match.start():].lstrip("/")
    # per function, not per line: py-spy gives each sampled line its own frame
    return f"{frame.get('name')} ({file})"


# Leaves where a thread waits rather than works. py-spy's idle detection is unreliable on this
# machine (it counts waiting threads as active), so these samples are dropped: what remains is
# Python code running (or in a blocking call it made). The event loop's own C code (uvloop:
# epoll, socket I/O, callbacks) is dropped with them and is not attributed.
IDLE_LEAVES = re.compile(r"^(Runner\.run \(asyncio/runners|Condition\.wait \(|Event\.wait \(|"
                         r"_worker \(concurrent/futures|Thread\.join|select \(|epoll)")


def summarize(doc: dict[str, Any], top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares per function, and per package (the frame's top-level module),
    of the samples where Python code was running (see ``IDLE_LEAVES``)."""
    frames = doc["shared"]["frames"]
    labels = [_label(f) for f in frames]
    idle = {i for i, label in enumerate(labels) if IDLE_LEAVES.search(label)}
    dropped = 0.0
    own = [_is_own(f) for f in frames]
    self_w: Counter[str] = Counter()
    total_w: Counter[str] = Counter()
    own_w: Counter[str] = Counter()
    package_self: Counter[str] = Counter()
    weight_sum = 0.0
    for profile in doc["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if not stack or stack[-1] in idle:
                dropped += weight
                continue
            weight_sum += weight
            leaf = labels[stack[-1]]
            self_w[leaf] += weight
            package_self[_package(frames[stack[-1]])] += weight
            for label in {labels[i] for i in stack}:
                total_w[label] += weight
            for label in {labels[i] for i in stack if own[i]}:
                own_w[label] += weight

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / max(weight_sum, 1e-9), 1)) for k, v in counter.most_common(top)]

    return {
        "python_seconds_sampled": round(weight_sum, 2),
        "idle_or_event_loop_seconds_dropped": round(dropped, 2),
        "top_self_pct": share(self_w),
        "top_inclusive_pct": share(total_w),
        # the project's own functions, inclusive of what they call: where a change would land
        "top_own_inclusive_pct": share(own_w),
        "by_package_self_pct": share(package_self),
    }


_OWN = re.compile(r"(^|/)(services|shared|sandbox)/")


def _is_own(frame: dict[str, Any]) -> bool:
    file = str(frame.get("file") or "")
    entry = frame.get("name") in ("<module>", "serve", "main")
    return "site-packages/" not in file and bool(_OWN.search(file)) and not entry


def _package(frame: dict[str, Any]) -> str:
    file = str(frame.get("file") or "")
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/", 1)[0]
    if match := _OWN.search(file):
        return "/".join(file[match.start():].lstrip("/").split("/")[:2])
    if "python3.11/" in file:
        return "stdlib:" + file.split("python3.11/", 1)[1].split("/", 1)[0].removesuffix(".py")
    return file or "?"


def render(profiles: dict[str, Any], lines: int = 12) -> str:
    out = []
    for name, prof in profiles.items():
        if "error" in prof:
            out.append(f"== {name}: {prof['error']}")
            continue
        out.append(f"== {name} ({prof['python_seconds_sampled']} s of Python running sampled;"
                   f" {prof['idle_or_event_loop_seconds_dropped']} s idle or in the event loop's"
                   " C code dropped)")
        out.append("  by package (self %): " + ", ".join(
            f"{k} {v}" for k, v in prof["by_package_self_pct"][:8]))
        out.append("  self %:")
        out += [f"    {v:5.1f}  {k}" for k, v in prof["top_self_pct"][:lines]]
        out.append("  own code, inclusive %:")
        out += [f"    {v:5.1f}  {k}" for k, v in prof["top_own_inclusive_pct"][:lines]]
        out.append("  inclusive %:")
        out += [f"    {v:5.1f}  {k}" for k, v in prof["top_inclusive_pct"][:lines]]
    return "\n".join(out)


def inclusive_share(doc: dict[str, Any], pattern: str) -> dict[str, float]:
    """Share of the running samples (%) whose stack passes through a function matching
    ``pattern``."""
    frames = doc["shared"]["frames"]
    wanted = re.compile(pattern)
    hits = {i for i, f in enumerate(frames) if wanted.search(_label(f))}
    idle = {i for i, f in enumerate(frames) if IDLE_LEAVES.search(_label(f))}
    per_label: Counter[str] = Counter()
    any_hit = 0.0
    total = 0.0
    for profile in doc["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if not stack or stack[-1] in idle:
                continue
            total += weight
            matched = {_label(frames[i]) for i in stack if i in hits}
            for label in matched:
                per_label[label] += weight
            any_hit += weight if matched else 0.0
    out = {k: round(100 * v / total, 1) for k, v in per_label.most_common(15)} if total else {}
    out["(any of these)"] = round(100 * any_hit / total, 1) if total else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.profiling",
        description="Summarize py-spy speedscope files: top self / own-code / inclusive shares.")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--grep", help="regex: inclusive share of the matching functions")
    parser.add_argument("--lines", type=int, default=15)
    args = parser.parse_args(argv)
    for path in args.files:
        doc = json.loads(path.read_text())
        name = path.name.split(".")[0]
        if args.grep:
            print(f"== {name}: {inclusive_share(doc, args.grep)}")
        else:
            print(render({name: summarize(doc, top=args.lines)}, lines=args.lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
