"""The client's footprint: packages, disk and import time of a fresh client-only install,
and how fast `clipserve models` answers.

    python benchmarks/bench_client_footprint.py [--python 3.10 3.11 3.13] [--runs 15]
        [--baseline main] [--reuse]

For each Python it builds fresh venvs under ``.cache/footprint/`` from a wheel of this
checkout: ``clipserve`` (the base client) and ``clipserve[docarray]``; with ``--baseline
REF`` also the base install of that git ref (``git archive``), measured in the same run.
Then it prints one table: distributions installed (pip, setuptools and wheel not counted,
clipserve counted), site-packages size, and the time of ``from clipserve import Client`` in
a fresh interpreter (min and median of ``--runs``, wall clock and process CPU: on a busy
machine CPU time is the steadier figure), plus the import a first ``encode`` adds
(numpy, protobuf, the pipeline and the gRPC transport load then, not on import).

Targets (issue 15): the base client at most 16 packages, the import at most 150 ms,
`clipserve models` well under a second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.client_envs.venvs import REPO, build_wheel, find_python  # noqa: E402

ROOT = REPO / ".cache" / "footprint"
NOT_COUNTED = {"pip", "setuptools", "wheel"}
IMPORT = (
    "import time; w = time.perf_counter(); c = time.process_time()\n"
    "from clipserve import Client\n"
    "w1, c1 = time.perf_counter(), time.process_time()\n"
    "from clipserve.client import core, pipeline\n"
    "from clipserve.client.transports import grpc\n"
    "print((w1 - w) * 1e3, (c1 - c) * 1e3, (time.perf_counter() - w1) * 1e3,"
    " (time.process_time() - c1) * 1e3)"
)
IMPORT_BEFORE = (  # a baseline without the lazy modules: only the import itself
    "import time; w = time.perf_counter(); c = time.process_time()\n"
    "from clipserve import Client\n"
    "print((time.perf_counter() - w) * 1e3, (time.process_time() - c) * 1e3, 0, 0)"
)


def run(command: list[str], **kwargs) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return done.stdout


def run_bytes(command: list[str]) -> bytes:
    return subprocess.run(command, capture_output=True, check=True).stdout


def baseline_wheel(ref: str, out: Path) -> Path:
    """The wheel of git ``ref`` (its files as committed)."""
    source = out / "source"
    source.mkdir(parents=True)
    archive = run_bytes(["git", "-C", str(REPO), "archive", ref])
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)])
    return next(out.glob("clipserve-*.whl"))


def venv_with(python: Path, name: str, requirement: str, reuse: bool) -> Path:
    path = ROOT / name
    marker = path / ".installed"
    wheel, _, extras = requirement.partition("[")
    identity = hashlib.sha256(Path(wheel).read_bytes()).hexdigest() + extras
    if reuse and marker.exists() and marker.read_text() == identity:
        return path
    shutil.rmtree(path, ignore_errors=True)
    run([str(python), "-m", "venv", str(path)])
    run([str(path / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", requirement])  # fmt: skip
    marker.write_text(identity)
    return path


def packages(venv: Path) -> list[str]:
    listed = run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json",
                  "--disable-pip-version-check"])  # fmt: skip
    return sorted(p["name"] for p in json.loads(listed) if p["name"].lower() not in NOT_COUNTED)


def site_packages_mb(venv: Path) -> float:
    total = 0
    for site in venv.glob("lib/python*/site-packages"):
        for entry in site.iterdir():
            if entry.name.split("-")[0].lower() in NOT_COUNTED or entry.name == "_distutils_hack":
                continue
            files = [entry] if entry.is_file() else entry.rglob("*")
            total += sum(f.stat().st_size for f in files if f.is_file())
    return total / 1e6


def import_times(venv: Path, runs: int, code: str) -> list[list[float]]:
    """[wall, cpu, first-call wall, first-call cpu] in ms, one row per fresh interpreter."""
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return [
        [float(x) for x in run([python, "-c", code], env=env, cwd="/").split()]
        for _ in range(runs)
    ]


def command_times(command: list[str], runs: int) -> list[list[float]]:
    """[wall, cpu] in ms of a whole command, children included."""
    rows = []
    for _ in range(runs):
        before = os.times()
        started = time.perf_counter()
        run(command)
        after = os.times()
        cpu = (after.children_user - before.children_user) + (
            after.children_system - before.children_system
        )
        rows.append([(time.perf_counter() - started) * 1e3, cpu * 1e3])
    return rows


def spread(values: list[float]) -> str:
    return f"{min(values):.0f} / {statistics.median(values):.0f}"


def machine() -> str:
    model = "unknown CPU"
    flags = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    kind = "AVX-512 (VNNI)" if "avx512_vnni" in flags else "AVX2" if "avx2" in flags else "?"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {kind}, {os.cpu_count()} CPUs, load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", nargs="+", default=["3.10", "3.13"])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--baseline", help="also measure this git ref's base install")
    parser.add_argument("--reuse", action="store_true", help="keep venvs installed before")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp) / "now")
        old = baseline_wheel(args.baseline, Path(tmp) / "old") if args.baseline else None
        for version in args.python:
            python = find_python(version)
            if python is None:
                print(f"no Python {version}: skipped", file=sys.stderr)
                continue
            variants = [("base", str(wheel), IMPORT), ("docarray", f"{wheel}[docarray]", IMPORT)]
            if old is not None:
                variants.insert(0, (f"base @ {args.baseline}", str(old), IMPORT_BEFORE))
            for label, requirement, code in variants:
                name = f"py{version}-{label.replace(' @ ', '-at-').replace('/', '-')}"
                venv = venv_with(python, name, requirement, args.reuse)
                times = import_times(venv, args.runs, code)
                columns = list(zip(*times, strict=True))
                rows.append((version, label, len(packages(venv)), site_packages_mb(venv),
                             spread(list(columns[0])), spread(list(columns[1])),
                             spread(list(columns[3])) if code is IMPORT else "-"))  # fmt: skip
    runs = max(3, args.runs // 3)
    models = command_times([sys.executable, "-m", "clipserve", "models"], runs)
    models_before = None
    if args.baseline:  # the ref's code with this venv's packages, in the same run
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp)
            archive = run_bytes(["git", "-C", str(REPO), "archive", args.baseline])
            subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
            code = (f"import sys; sys.path.insert(0, {str(source)!r}); "
                    "from clipserve.cli import main; main(['models'])")  # fmt: skip
            models_before = command_times([sys.executable, "-c", code], runs)
    print(f"\n{machine()}\n{started}, `python {' '.join(sys.argv)}`\n")
    print("| Python | install | packages | site-packages MB | import Client ms, wall "
          "min / median | CPU min / median | + first call, CPU ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for version, label, count, size, wall, cpu, first in rows:
        print(f"| {version} | {label} | {count} | {size:.0f} | {wall} | {cpu} | {first} |")
    for label, times in (("", models), (f" @ {args.baseline}", models_before)):
        if times is None:
            continue
        walls, cpus = zip(*times, strict=True)
        print(f"\n`clipserve models`{label} (Python {platform.python_version()}, server "
              f"install): {spread(list(walls))} ms wall, {spread(list(cpus))} ms CPU "
              "(min / median)")  # fmt: skip


if __name__ == "__main__":
    main()
