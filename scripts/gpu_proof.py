#!/usr/bin/env python3
"""Prove kboot's GPU profiles on a machine with an NVIDIA GPU.

For each GPU profile (jax-gpu, torch-gpu, tf-gpu by default) it builds the environment
with kboot, then runs a few training steps of a small conv net in it, on the GPU and
again with the GPU hidden (the CPU), and prints one table: backend, build, the device the
backend used, step time on the GPU and on the CPU.

On a GPU node with no network and a preinstalled CUDA stack (a Python with CUDA builds of
torch and jax), give that Python and a wheelhouse per profile made elsewhere over its
packages; each environment then sits on the base (--system-site-packages) and gets only
keras and the few packages the base lacks:

    # where there is a network; base.txt: `python -m pip list --format=freeze` on the node
    kboot lock jax-gpu --accelerator cuda-13 --python-version 3.12 \
        --base-packages base.txt -o jax.lock
    kboot download jax-gpu --lock jax.lock --dest wheelhouses/jax-gpu
    # on the node:
    python scripts/gpu_proof.py --python /opt/venv/bin/python --wheelhouses wheelhouses

A profile whose backend the base lacks, with no wheelhouse for it, is skipped with the
reason. On a machine without an NVIDIA driver it stops at once, saying so (exit 2).
Usage: gpu_proof.py [--python BASE] [--wheelhouses DIR] [--profiles P ...] [--steps 30]
                    [--json FILE] [--accelerator cuda-13]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bootstrap.install.accelerators import read_host  # noqa: E402

HIDE_GPU = {
    "jax": {"JAX_PLATFORMS": "cpu"},
    "torch": {"CUDA_VISIBLE_DEVICES": ""},
    "tensorflow": {"CUDA_VISIBLE_DEVICES": "-1"},
}
BACKEND_OF = {"jax-gpu": "jax", "torch-gpu": "torch", "tf-gpu": "tensorflow"}


def kboot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootstrap", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def train(python: Path, steps: int, extra: dict[str, str], env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [str(python), str(ROOT / "scripts" / "proof_train.py"), str(steps)],
        capture_output=True,
        text=True,
        env={**env, **extra},
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--python", help="the base Python (default: the one kboot picks)")
    parser.add_argument("--wheelhouses", type=Path, help="a folder with one wheelhouse per profile")
    parser.add_argument("--profiles", nargs="+", default=list(BACKEND_OF))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--accelerator", default=None, help="passed to kboot create")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    host = read_host()
    if not host.driver:
        print(
            f"gpu_proof: {host.describe()}: this script proves the GPU profiles on a machine "
            "with an NVIDIA GPU; nothing was built",
            file=sys.stderr,
        )
        return 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERAS_")}
    home = Path(tempfile.mkdtemp(prefix="kboot-gpu-proof-"))
    env.setdefault("KBOOT_HOME", str(home / "kboot-home"))
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    print(f"gpu_proof: {host.describe()}, Python {args.python or sys.executable}", flush=True)

    rows = [build_and_train(profile, args, env) for profile in args.profiles]
    failed = print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"host": host.to_dict(), "rows": rows}, indent=2))
    built = [r for r in rows if "skipped" not in r]
    return 1 if failed or not built else 0


def build_and_train(profile: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    backend = BACKEND_OF.get(profile, profile)
    create = ["create", profile, "--name", f"proof-{profile}", "--json"]
    if args.python:
        create += ["--python", args.python, "--system-site-packages"]
    if args.accelerator:
        create += ["--accelerator", args.accelerator]
    if args.wheelhouses:
        house = args.wheelhouses / profile
        if not (house / "kboot-lock.txt").is_file():
            return {"profile": profile, "backend": backend, "skipped": f"no wheelhouse {house}"}
        create += ["--offline", "--wheelhouse", str(house)]
    made = kboot(*create, env=env)
    if made.returncode != 0:
        reason = " ".join(made.stderr.strip().splitlines()[-2:]) or "failed"
        print(f"gpu_proof: {profile}: {reason}", file=sys.stderr, flush=True)
        return {"profile": profile, "backend": backend, "skipped": reason}
    data = json.loads(made.stdout)
    python = Path(data["path"]) / "bin" / "python"
    row = {
        "profile": profile,
        "backend": backend,
        "smoke_devices": [d["name"] for d in data["smoke"]["devices"]],
        "accelerator": (data.get("accelerator") or {}).get("chosen"),
        "gpu": train(python, args.steps, {}, env),
        "cpu": train(python, max(args.steps // 3, 5), HIDE_GPU.get(backend, {}), env),
        "create_seconds": round(sum(s["seconds"] for s in data["steps"]), 2),
    }
    print(f"gpu_proof: {profile}: {json.dumps(row)}", flush=True)
    return row


def print_table(rows: list[dict]) -> bool:
    """The table; True when a backend did not compute on the GPU."""
    print()
    print(
        f"{'backend':11} {'build':38} {'device':7} {'GPU ms/step':>12} {'CPU ms/step':>12} "
        f"{'speed-up':>9}"
    )
    failed = False
    for row in rows:
        if "skipped" in row:
            print(f"{row['backend']:11} skipped: {row['skipped']}")
            continue
        gpu, cpu = row["gpu"], row["cpu"]
        if "error" in gpu or "error" in cpu:
            failed = True
            print(f"{row['backend']:11} FAILED: {gpu.get('error') or cpu.get('error')}")
            continue
        speed = cpu["step_ms"] / gpu["step_ms"] if gpu["step_ms"] else float("nan")
        failed |= not (gpu["device"] == "gpu" or gpu["device"].startswith("cuda"))
        print(
            f"{row['backend']:11} {gpu['build'][:38]:38} {gpu['device']:7} "
            f"{gpu['step_ms']:12.2f} {cpu['step_ms']:12.2f} {speed:8.1f}x"
        )
    return failed


if __name__ == "__main__":
    sys.exit(main())
