#!/usr/bin/env python3
"""Benchmark `kboot create` against the same steps done by hand, in one run.

For each profile (numpy and jax-cpu by default), alternating runs of:
  (a) python -m venv + pip install + one `import keras`
  (b) uv venv + uv pip install + one `import keras`
  (k) kboot create (virtualenv + uv + keras.json + smoke test)
with a warm installer cache (one unmeasured warm-up round first). Prints medians
and the ratios k/b and a/k, and kboot's own overhead: its start-up, the
keras.json write, and what its probe costs on top of a plain `import keras`.

Nothing touches ~/.keras: KERAS_HOME points into a temporary folder.
Usage: python scripts/bench.py [--runs 3] [--profiles numpy jax-cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bootstrap.paths import builtin_profiles_dir  # noqa: E402
from bootstrap.profiles import load_profile  # noqa: E402


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"benchmark step failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return elapsed


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def by_hand_pip(work: Path, reqs: list[str], backend: str, env: dict[str, str]) -> float:
    venv = work / "a"
    py = str(venv / "bin" / "python")
    import_env = {**env, "KERAS_BACKEND": backend}
    return (
        timed([sys.executable, "-m", "venv", str(venv)], env, work)
        + timed([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs], env, work)
        + timed([py, "-c", "import keras"], import_env, work)
    )


def by_hand_uv(
    work: Path, reqs: list[str], backend: str, env: dict[str, str]
) -> tuple[float, float]:
    venv = work / "b"
    py = str(venv / "bin" / "python")
    build = timed([uv_bin(), "venv", "-q", "--python", sys.executable, str(venv)], env, work)
    build += timed([uv_bin(), "pip", "install", "-q", "--python", py, *reqs], env, work)
    imported = timed([py, "-c", "import keras"], {**env, "KERAS_BACKEND": backend}, work)
    return build + imported, imported


def with_kboot(work: Path, profile: str, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    kenv = {**env, "KBOOT_HOME": str(work / "kboot-home")}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bootstrap", "create", profile, "--json"],
        env=kenv,
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"kboot create {profile} failed:\n{proc.stderr[-2000:]}")
    steps = {s["step"].split(" ")[0]: s["seconds"] for s in json.loads(proc.stdout)["steps"]}
    return elapsed, steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="measured runs of each variant")
    parser.add_argument("--profiles", nargs="+", default=["numpy", "jax-cpu"])
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="kboot-bench-"))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(scratch / "keras-home")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = str(ROOT)  # this checkout's kboot, installed or not

    startup = []
    for _ in range(max(args.runs, 3)):
        startup.append(timed([sys.executable, "-m", "bootstrap", "--version"], env, scratch))

    print(f"kboot benchmark: {args.runs} measured runs after one warm-up, medians in seconds")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    header = ("profile", "(a) venv+pip", "(b) uv", "kboot", "kboot/b", "a/kboot")
    print(f"{header[0]:10} {header[1]:>13} " + " ".join(f"{h:>8}" for h in header[2:]))
    overheads = []
    try:
        for name in args.profiles:
            profile = load_profile(builtin_profiles_dir() / f"{name}.toml")
            reqs = list(profile.requirements())
            samples: dict[str, list[float]] = {"a": [], "b": [], "k": [], "imp": []}
            steps_seen: list[dict[str, float]] = []
            for run in range(args.runs + 1):  # run 0 warms the caches and is not counted
                work = scratch / f"{name}-{run}"
                work.mkdir()
                a = by_hand_pip(work, reqs, profile.backend, env)
                b, imported = by_hand_uv(work, reqs, profile.backend, env)
                k, steps = with_kboot(work, name, env)
                shutil.rmtree(work, ignore_errors=True)
                if run:
                    samples["a"].append(a)
                    samples["b"].append(b)
                    samples["k"].append(k)
                    samples["imp"].append(imported)
                    steps_seen.append(steps)
            a, b, k = (statistics.median(samples[x]) for x in "abk")
            print(f"{name:10} {a:13.2f} {b:8.2f} {k:8.2f} {k / b:8.2f} {a / k:8.2f}")
            smoke = statistics.median(s.get("smoke", 0.0) for s in steps_seen)
            write = statistics.median(s.get("write", 0.0) for s in steps_seen)
            overheads.append((name, smoke - statistics.median(samples["imp"]), write))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nkboot start-up (`python -m bootstrap --version`): {statistics.median(startup):.3f} s")
    for name, probe_extra, write in overheads:
        print(
            f"{name}: keras.json write {write:.3f} s; probe beyond a plain `import keras` "
            f"{probe_extra:.3f} s"
        )
    print("\ntargets: kboot/b <= 1.25, a/kboot >= 3, start-up + write + probe extra < 0.5 s")


if __name__ == "__main__":
    main()
