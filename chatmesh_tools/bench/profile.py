"""Sample the services with py-spy while a throughput step runs, and summarize where time goes.

`chatmesh bench --profile` records each service for the first throughput step (collapsed stacks,
`<name>.folded`, loadable in speedscope or flamegraph.pl) and writes `profile.txt`: per process, the
functions with the most samples at the top of the stack (self), by the innermost function of the
project's own code (what a change there would save), and anywhere on the stack (total). These are
wall-clock samples of a busy thread: read them as shares, and results.json's CPU columns as the cost.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path


def start(pids: dict[str, int], folder: Path, duration_s: float) -> list[subprocess.Popen[bytes]]:
    exe = shutil.which("py-spy")
    if not exe:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid in pids.items():
        if name in ("postgres", "redis") or name.startswith("loadgen"):
            continue
        procs.append(
            subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(duration_s)),
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "-o",
                    str(folder / f"{name}.folded"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


def finish(procs: list[subprocess.Popen[bytes]], folder: Path, top: int = 25) -> str:
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
    lines = []
    for path in sorted(folder.glob("*.folded")):
        own: Counter[str] = Counter()
        total: Counter[str] = Counter()
        ours: Counter[str] = Counter()  # by the innermost frame of the project's own code
        samples = 0
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            samples += n
            frames = stack.split(";")
            own[frames[-1]] += n
            mine = [
                f
                for f in frames
                if ("services/" in f or "chatmesh/" in f) and "__main__" not in f and "eventloop.py" not in f
            ]
            ours[mine[-1].split(" (")[0] if mine else "(event loop and libraries only)"] += n
            for frame in set(frames):
                total[frame] += n
        lines.append(f"== {path.stem}: {samples} samples")
        lines.append("  self:")
        lines += [f"    {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)] if samples else []
        lines.append("  by innermost project function (the libraries it calls included):")
        lines += [f"    {100 * n / samples:5.1f}%  {f}" for f, n in ours.most_common(top)] if samples else []
        lines.append("  total:")
        lines += [f"    {100 * n / samples:5.1f}%  {f}" for f, n in total.most_common(top)] if samples else []
    text = "\n".join(lines)
    (folder / "profile.txt").write_text(text + "\n")
    return text
