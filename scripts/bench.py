#!/usr/bin/env python3
"""Benchmark `kboot create` against the same steps done by hand, in one run.

For each profile (numpy and jax-cpu by default), alternating runs of:
  (a) python -m venv + pip install + one `import keras`
  (b) uv venv + uv pip install + one `import keras`
  (c) a careful user: uv venv + uv pip install --compile-bytecode, then one matmul in the
      profile's floatx (what the smoke test proves), in the same interpreter
  (k) kboot create (virtualenv + uv + keras.json + smoke test)
with a warm installer cache (one unmeasured warm-up round first). Prints medians, the
ratios k/b, k/c and a/k, and where kboot's time goes: each step it reports, and the
rest (start-up, ledger and record writes). Then the first `import keras` a user's
script pays in the fresh kboot environment against the fresh (a) venv, with
PYTHONDONTWRITEBYTECODE=1 (a lab's case: nothing is ever written at import) and without,
next to (b)'s first import (uv without --compile-bytecode: it writes the bytecode).
The two targets of issue 16 end the table with PASS or MISS. `--quick` measures only
those (no (b), no fleet figures): a few minutes for numpy and jax-cpu.

Then, for fleets: a no-op `kboot create` on an environment that already matches, a
no-op `kboot sync` and a `kboot list` of ten environments, three CPU profiles built in
one call against the same three built by three calls in a row, an offline create
from a wheelhouse with an empty installer cache against a warm online create, the
accelerator detection and `kboot doctor` without --import; `kboot run` on existing
environments against the command run directly.

Nothing touches ~/.keras: KERAS_HOME points into a temporary folder.
Usage: python scripts/bench.py [--runs 3] [--profiles numpy jax-cpu]
                               [--batch numpy jax-cpu openvino] [--skip-baselines]
                               [--fleet-size 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bootstrap.profiles.catalog import load_profile  # noqa: E402
from bootstrap.system.paths import builtin_profiles_dir  # noqa: E402


def timed(cmd: list[str], env: dict[str, str], cwd: Path, ok: tuple[int, ...] = (0,)) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode not in ok:
        sys.exit(f"benchmark step failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return elapsed


def cpu() -> float:
    """CPU seconds of every finished child so far (their own children included): where
    several people share two cores, the load moves wall times by tens of percent, and CPU
    time much less, so each figure has its CPU twin."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def load() -> str:
    """The load averages: on a shared machine, what the figures were measured under."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def by_hand_pip(work: Path, reqs: list[str], env: dict[str, str]) -> tuple[float, Path]:
    """python -m venv + pip install (pip compiles bytecode by default); the import is
    timed apart, by `first_imports`, and added to (a)."""
    venv = work / "a"
    py = str(venv / "bin" / "python")
    build = timed([sys.executable, "-m", "venv", str(venv)], env, work)
    build += timed([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs],
                   env, work)  # fmt: skip
    return build, venv / "bin" / "python"


def uv_install(python: str, reqs: list[str], *, compile_bytecode: bool) -> list[str]:
    """`uv pip install` as a user types it; (c) compiles bytecode, as pip and kboot do."""
    compiled = ["--compile-bytecode"] if compile_bytecode else []
    return [uv_bin(), "pip", "install", "-q", *compiled, "--python", python, *reqs]


def by_hand_uv(
    work: Path, reqs: list[str], backend: str, env: dict[str, str]
) -> tuple[float, float]:
    venv = work / "b"
    py = str(venv / "bin" / "python")
    build = timed([uv_bin(), "venv", "-q", "--python", sys.executable, str(venv)], env, work)
    build += timed(uv_install(py, reqs, compile_bytecode=False), env, work)
    imported = timed([py, "-c", "import keras"], {**env, "KERAS_BACKEND": backend}, work)
    return build + imported, imported


CAREFUL = (
    "import keras, keras.ops as ops\n"
    "x = ops.ones((2, 2), dtype=keras.config.floatx())\n"
    "print(ops.convert_to_numpy(ops.matmul(x, x)).dtype)"
)


def by_hand_careful(
    work: Path, reqs: list[str], backend: str, env: dict[str, str]
) -> tuple[float, float]:
    """What a careful user does to know it works: build with bytecode compiled (as pip and
    kboot do), import, one matmul in floatx."""
    venv = work / "c"
    py = str(venv / "bin" / "python")
    build = timed([uv_bin(), "venv", "-q", "--python", sys.executable, str(venv)], env, work)
    build += timed(uv_install(py, reqs, compile_bytecode=True), env, work)
    check = timed([py, "-c", CAREFUL], {**env, "KERAS_BACKEND": backend}, work)
    return build + check, check


def with_kboot(
    work: Path, profile: str, env: dict[str, str]
) -> tuple[float, dict[str, float], Path]:
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
    report = json.loads(proc.stdout)
    steps = {s["step"].split(" ")[0]: s["seconds"] for s in report["steps"]}
    steps["rest"] = elapsed - sum(steps.values())  # start-up, ledger, record, exit
    return elapsed, steps, Path(report["path"]) / "bin" / "python"


def import_environs(env: dict[str, str], backend: str) -> dict[tuple[str, str], dict[str, str]]:
    """The variables of each first `import keras`, by (side, mode): side "pip" (the pip
    venv) or "k" (kboot's environment), mode "nowrite" (PYTHONDONTWRITEBYTECODE=1: a lab's
    case, nothing is ever written at import) or "default".

    The pip venv gets its backend from KERAS_BACKEND, as a user of one sets it; the kboot
    environment from its own keras.json, with neither KERAS_BACKEND nor KERAS_HOME set
    (its start-up file points KERAS_HOME there), as a user's script runs in it."""
    plain = {k: v for k, v in env.items() if k not in ("PYTHONDONTWRITEBYTECODE", "KERAS_BACKEND")}
    sides = {
        "pip": {**plain, "KERAS_BACKEND": backend},
        "k": {k: v for k, v in plain.items() if k != "KERAS_HOME"},
    }
    modes: dict[str, dict[str, str]] = {"nowrite": {"PYTHONDONTWRITEBYTECODE": "1"}, "default": {}}
    return {
        (side, mode): {**base, **extra}
        for mode, extra in modes.items()
        for side, base in sides.items()
    }


def first_imports(
    pythons: dict[str, Path],
    backend: str,
    env: dict[str, str],
    work: Path,
    kboot_first: bool,
) -> dict[str, float]:
    """The first `import keras` of a user's script in each fresh environment (pythons:
    side -> interpreter), with PYTHONDONTWRITEBYTECODE=1 first (it writes nothing, so the
    environment stays as fresh for the import without it), pip and kboot alternating."""
    environs = import_environs(env, backend)
    sides = ["k", "pip"] if kboot_first else ["pip", "k"]
    found: dict[str, float] = {}
    for mode in ("nowrite", "default"):
        for side in sides:
            command = [str(pythons[side]), "-c", "import keras"]
            before = cpu()
            found[f"{side}_{mode}"] = timed(command, environs[side, mode], work)
            found[f"{side}_{mode}_cpu"] = cpu() - before
    return found


# issue 16's targets: (name, numerator, denominator, the most the ratio may be)
TARGETS = (
    ("first import keras, PYTHONDONTWRITEBYTECODE=1: kboot/pip venv", "k_nowrite",
     "pip_nowrite", 1.10),
    ("first import keras: kboot/pip venv", "k_default", "pip_default", 1.10),
    ("kboot create / careful user (c)", "k", "c", 1.05),
)  # fmt: skip


def verdicts(
    medians: dict[str, float],
) -> list[tuple[str, float, float, bool, float | None]]:
    """Each target with its ratio of wall times, its limit, whether it is met, and the
    ratio of CPU times where measured (the same comparison, less moved by the load)."""
    found = []
    for name, top, bottom, limit in TARGETS:
        ratio = medians[top] / medians[bottom]
        cpu_top, cpu_bottom = medians.get(f"{top}_cpu"), medians.get(f"{bottom}_cpu")
        cpu_ratio = cpu_top / cpu_bottom if cpu_top is not None and cpu_bottom else None
        found.append((name, ratio, limit, round(ratio, 2) <= limit, cpu_ratio))  # as printed
    return found


def kboot_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bootstrap", *args]


def fleet(work: Path, env: dict[str, str], runs: int, batch: list[str], size: int) -> None:
    """No-op create, sync and list medians; one call for several profiles against several
    calls; offline from a wheelhouse against online."""
    kenv = {**env, "KBOOT_HOME": str(work / "noop-home")}
    manifest = work / "lab.toml"
    manifest.write_text(
        "".join(f'[[env]]\nname = "lab-{i}"\nprofile = "{batch[0]}"\n' for i in range(size))
    )
    timed(kboot_cmd("sync", str(manifest)), kenv, work)  # build them once
    repeat = max(runs, 15)  # fast: more samples for a steady median
    noop_create = [timed(kboot_cmd("create", batch[0], "--name", "lab-0"), kenv, work)
                   for _ in range(repeat)]  # fmt: skip
    noop_sync = [timed(kboot_cmd("sync", str(manifest)), kenv, work) for _ in range(repeat)]
    listing = [timed(kboot_cmd("list"), kenv, work) for _ in range(repeat)]
    print(f"\nno-op kboot create {batch[0]}: {statistics.median(noop_create):.3f} s (target < 1 s)")
    print(f"no-op kboot sync ({size} environments): {statistics.median(noop_sync):.3f} s "
          "(target < 1 s)")  # fmt: skip
    print(f"kboot list ({size} environments): {statistics.median(listing):.3f} s "
          "(target < 0.5 s)")  # fmt: skip
    project = work / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        f'[tool.kboot]\ndefault = "dev"\n[tool.kboot.profiles.dev]\nextends = "{batch[0]}"\n'
    )
    timed(kboot_cmd("create"), kenv, project)  # build it once
    noop_project = [timed(kboot_cmd("create"), kenv, project) for _ in range(repeat)]
    a, b = statistics.median(noop_project), statistics.median(noop_create)
    print(f"no-op kboot create in a project folder (its default): {a:.3f} s, "
          f"no-op kboot create NAME {b:.3f} s, ratio {a / b:.2f} (target: the same)")  # fmt: skip

    together, in_a_row = [], []
    for run in range(runs + 1):  # run 0 warms the caches
        one = {**env, "KBOOT_HOME": str(work / f"one-{run}")}
        row = {**env, "KBOOT_HOME": str(work / f"row-{run}")}
        t_one = timed(kboot_cmd("create", *batch), one, work)
        t_row = sum(timed(kboot_cmd("create", p), row, work) for p in batch)
        shutil.rmtree(work / f"one-{run}", ignore_errors=True)
        shutil.rmtree(work / f"row-{run}", ignore_errors=True)
        if run:
            together.append(t_one)
            in_a_row.append(t_row)
    a, b = statistics.median(together), statistics.median(in_a_row)
    print(
        f"{len(batch)} profiles ({' '.join(batch)}): one call {a:.2f} s, "
        f"{len(batch)} calls in a row {b:.2f} s, ratio {a / b:.2f} (target < 1)"
    )
    offline(work, env, runs, batch[0])


def offline(work: Path, env: dict[str, str], runs: int, profile: str) -> None:
    """create --offline --wheelhouse with an empty uv cache, against a warm online create."""
    lock, house = work / "offline.lock", work / "wheelhouse"
    timed(kboot_cmd("lock", profile, "-o", str(lock)), env, work)
    timed(kboot_cmd("download", profile, "--lock", str(lock), "--dest", str(house)), env, work)
    cold, warm = [], []
    for run in range(runs + 1):
        empty = {
            **env,
            "KBOOT_HOME": str(work / f"off-{run}"),
            "UV_CACHE_DIR": str(work / f"c{run}"),
        }
        online = {**env, "KBOOT_HOME": str(work / f"on-{run}")}
        t_cold = timed(kboot_cmd("create", profile, "--offline", "--wheelhouse", str(house)),
                       empty, work)  # fmt: skip
        t_warm = timed(kboot_cmd("create", profile, "--lock", str(lock)), online, work)
        for name in (f"off-{run}", f"on-{run}", f"c{run}"):
            shutil.rmtree(work / name, ignore_errors=True)
        if run:
            cold.append(t_cold)
            warm.append(t_warm)
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"offline create {profile} (empty installer cache) {c:.2f} s, warm online {w:.2f} s, "
          f"ratio {c / w:.2f} (target <= 1.2)")  # fmt: skip


def diagnostics(work: Path, env: dict[str, str], runs: int) -> None:
    """Accelerator detection in-process (what every create of tf/jax/torch pays) and
    `kboot doctor` without --import on a Python with keras (a kboot environment)."""
    from bootstrap.install.accelerators import read_host

    read_host()  # warm the imports; then the reads themselves
    detect = []
    for _ in range(max(runs, 20)):
        started = time.perf_counter()
        read_host()
        detect.append(time.perf_counter() - started)
    kenv = {**env, "KBOOT_HOME": str(work / "noop-home")}
    doctor = [timed(kboot_cmd("doctor", "lab-0"), kenv, work, ok=(0, 1))
              for _ in range(max(runs, 5))]  # fmt: skip
    print(f"accelerator detection: {statistics.median(detect) * 1000:.1f} ms (target < 50 ms)")
    print(f"kboot doctor (no --import): {statistics.median(doctor):.3f} s (target < 1 s)")


def run_overhead(work: Path, env: dict[str, str], runs: int, size: int) -> None:
    """What `kboot run` adds per environment to the command itself (start-up, finding and
    checking each environment, the table): `kboot run ENV... --jobs 1 -- python -c pass`
    on the fleet's existing environments against that Python run directly."""
    kenv = {**env, "KBOOT_HOME": str(work / "noop-home")}
    names = [f"lab-{i}" for i in range(min(3, size))]
    python = str(work / "noop-home" / "envs" / names[0] / "bin" / "python")
    direct: list[float] = []
    through: dict[int, list[float]] = {1: [], len(names): []}
    for _ in range(max(runs, 5)):  # alternating, so that load hits both alike
        direct.append(timed([python, "-c", "pass"], env, work))
        for count, samples in through.items():
            run = kboot_cmd("run", *names[:count], "--jobs", "1", "--logs", str(work / "logs"),
                            "--", "python", "-c", "pass")  # fmt: skip
            samples.append(timed(run, kenv, work))
    alone = statistics.median(direct)
    for count, samples in through.items():
        total = statistics.median(samples)
        print(f"kboot run on {count} existing environment(s): {total:.3f} s, the command alone "
              f"{alone:.3f} s: {(total - count * alone) / count:.3f} s added per environment "
              "(target < 0.3 s)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="measured runs of each variant")
    parser.add_argument("--profiles", nargs="+", default=["numpy", "jax-cpu"])
    parser.add_argument(
        "--batch",
        nargs="+",
        default=["numpy", "jax-cpu", "openvino"],
        help="CPU profiles for the one-call-versus-several comparison",
    )
    parser.add_argument("--fleet-size", type=int, default=10, help="environments for no-op sync")
    parser.add_argument(
        "--skip-baselines",
        action="store_true",
        help="only the fleet figures (no-op, several at once)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only issue 16's targets: (a), (c), kboot create and the first imports; "
        "no (b), no fleet figures",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="kboot-bench-"))
    # PYTHONDONTWRITEBYTECODE from the caller's shell would apply to every step, kboot's
    # own start-up included: only the first-import figures set it, where they say so
    env = {
        k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONDONTWRITEBYTECODE")
    }
    env["KERAS_HOME"] = str(scratch / "keras-home")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = str(ROOT)  # this checkout's kboot, installed or not

    startup = []
    timed([sys.executable, "-m", "bootstrap", "--version"], env, scratch)  # writes bytecode
    for _ in range(max(args.runs, 3)):
        startup.append(timed([sys.executable, "-m", "bootstrap", "--version"], env, scratch))

    print(f"kboot benchmark: {args.runs} measured runs after one warm-up, medians in seconds")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {load()}\n")
    overheads: list[tuple[str, float, float]] = []
    try:
        if not args.skip_baselines:
            baselines(args, scratch, env, overheads)
        if not args.quick:
            fleet(scratch, env, args.runs, args.batch, args.fleet_size)
            diagnostics(scratch, env, args.runs)
            run_overhead(scratch, env, args.runs, args.fleet_size)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nkboot start-up (`python -m bootstrap --version`): {statistics.median(startup):.3f} s")
    for name, probe_extra, write in overheads:
        print(
            f"{name}: keras.json write {write:.3f} s; probe beyond a plain `import keras` "
            f"{probe_extra:.3f} s"
        )
    print(f"at the end: {load()}")
    print(
        "\ntargets: kboot/c <= 1.05, first import kboot/pip venv <= 1.10, kboot/b <= 1.25, "
        "a/kboot >= 3, start-up + write + probe extra < 0.5 s"
    )


def baselines(
    args: argparse.Namespace,
    scratch: Path,
    env: dict[str, str],
    overheads: list[tuple[str, float, float]],
) -> None:
    """kboot create against the same steps by hand, per profile, then the first imports
    and issue 16's targets; fills `overheads`."""
    header = ("profile", "(a) venv+pip", "(b) uv", "(c) careful", "kboot", "kboot/b", "kboot/c",
              "a/kboot")  # fmt: skip
    print(f"{header[0]:10} {header[1]:>13} " + " ".join(f"{h:>11}" for h in header[2:]))
    imports: list[str] = []
    for name in args.profiles:
        profile = load_profile(builtin_profiles_dir() / f"{name}.toml")
        reqs = list(profile.requirements())
        samples: dict[str, list[float]] = {}
        steps_seen: list[dict[str, float]] = []
        for run in range(args.runs + 1):  # run 0 warms the caches and is not counted
            work = scratch / f"{name}-{run}"
            work.mkdir()
            found: dict[str, float] = {}
            # alternating: odd runs start with kboot, even runs end with it
            order = ["a", "b", "c", "k"] if run % 2 == 0 else ["k", "c", "b", "a"]
            for variant in order:
                before = cpu()
                if variant == "a":
                    found["a_build"], pip_python = by_hand_pip(work, reqs, env)
                elif variant == "b" and not args.quick:
                    found["b"], found["imp"] = by_hand_uv(work, reqs, profile.backend, env)
                elif variant == "c":
                    found["c"], found["c_check"] = by_hand_careful(work, reqs, profile.backend, env)
                elif variant == "k":
                    found["k"], steps, kboot_python = with_kboot(work, name, env)
                if variant != "b" or not args.quick:
                    found[f"{variant}_cpu"] = cpu() - before
            pythons = {"pip": pip_python, "k": kboot_python}
            found.update(first_imports(pythons, profile.backend, env, work, run % 2 == 1))
            found["a"] = found.pop("a_build") + found["pip_default"]
            found["a_cpu"] += found["pip_default_cpu"]
            shutil.rmtree(work, ignore_errors=True)
            if run:
                for key, value in found.items():
                    samples.setdefault(key, []).append(value)
                steps_seen.append(steps)
        med = {key: statistics.median(values) for key, values in samples.items()}
        a, c, k = med["a"], med["c"], med["k"]
        b = med.get("b", float("nan"))
        print(
            f"{name:10} {a:13.2f} {b:11.2f} {c:11.2f} {k:11.2f} {k / b:11.2f} {k / c:11.2f} "
            f"{a / k:11.2f}"
        )
        where = {step: statistics.median(s.get(step, 0.0) for s in steps_seen)
                 for step in steps_seen[0]}  # fmt: skip
        print("  kboot's time: " + ", ".join(f"{step} {t:.2f} s" for step, t in where.items()))
        print(f"  (c)'s time: build {c - med['c_check']:.2f} s, import + one op "
              f"{med['c_check']:.2f} s")  # fmt: skip
        print(
            "  CPU seconds: "
            + ", ".join(f"{v} {med[v + '_cpu']:.2f}" for v in "abck" if v + "_cpu" in med)
            + (f"; kboot/c {med['k_cpu'] / med['c_cpu']:.2f}" if med["c_cpu"] else "")
        )
        smoke = statistics.median(s.get("smoke", 0.0) for s in steps_seen)
        write = statistics.median(s.get("write", 0.0) for s in steps_seen)
        if "imp" in med:
            overheads.append((name, smoke - med["imp"], write))
        imports.append(
            f"{name:10} {med['k_nowrite']:13.2f} {med['pip_nowrite']:13.2f} "
            f"{med['k_default']:11.2f} {med['pip_default']:11.2f} "
            + (f"{med['imp']:11.2f}" if "imp" in med else f"{'-':>11}")
        )
        for target, ratio, limit, met, cpu_ratio in verdicts(med):
            also = "" if cpu_ratio is None else f"; CPU time ratio {cpu_ratio:.2f}"
            imports.append(f"  {target}: {ratio:.2f} (target <= {limit:.2f}) "
                           f"{'PASS' if met else 'MISS'}{also}")  # fmt: skip
    print("\nfirst `import keras` in a fresh environment (a user's first script), seconds:")
    print(f"{'profile':10} {'kboot nowrite':>13} {'pip nowrite':>13} {'kboot':>11} {'pip venv':>11}"
          f" {'(b) uv':>11}")  # fmt: skip
    print("  (nowrite: PYTHONDONTWRITEBYTECODE=1; (b): uv without --compile-bytecode)")
    for line in imports:
        print(line)


if __name__ == "__main__":
    main()
