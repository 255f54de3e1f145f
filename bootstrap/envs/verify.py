"""The smoke test of an environment against its profile, and what to tell the user."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping

from bootstrap.envs.diagnosis import environment_errors
from bootstrap.envs.smoke import (
    Expectation,
    SmokeReport,
    evaluate,
    host_gpu_info,
    inspect_environment,
    probe_environ,
    probe_environment,
)
from bootstrap.install.accelerators import HostAccelerators, read_host
from bootstrap.install.venv import VirtualEnv
from bootstrap.profiles.model import Profile
from bootstrap.system.errors import (
    SmokeError,
)
from bootstrap.system.paths import user_keras_home


def expectation(profile: Profile, *, allow_cpu: bool) -> Expectation:
    return Expectation(
        backend=profile.backend,
        floatx=profile.floatx,
        image_data_format=profile.image_data_format,
        epsilon=profile.epsilon,
        gpu=profile.gpu,
        allow_cpu=allow_cpu,
        keras_module=profile.keras_module,
        mode=profile.smoke,
        # a profile with an accelerator also says which build it must have got
        build=("cuda" if profile.gpu else "cpu") if profile.accelerator else None,
    )


def run_smoke(
    env: VirtualEnv,
    expected: Expectation,
    *,
    scope: str,
    environ: Mapping[str, str],
    host: HostAccelerators | None = None,
) -> SmokeReport:
    """Import keras there and compare with the profile; and fail on every error `kboot
    doctor` reports about the environment, from the same diagnosis (`host`: the machine
    as read, given by tests)."""
    host = host or read_host()
    probe_env = probe_environ(environ, keep_keras_home=scope == "user")
    if scope == "user":  # the keras.json Keras finds from the real home, named outright
        probe_env["KERAS_HOME"] = str(user_keras_home(environ))
    # a home of its own: what backends write at import (openvino's ~/intel, caches) lands
    # there and goes, not in the user's home
    with tempfile.TemporaryDirectory(prefix="kboot-smoke-home-") as home:
        probe_env.update(HOME=home, USERPROFILE=home)
        # what is there before keras is imported (an import may write a keras.json)
        inspected = inspect_environment(env.python, environ=probe_env, version=env.version)
        report, tail, seconds = probe_environment(
            env.python, expected, environ=probe_env, version=env.version
        )
    findings = environment_errors(inspected, probe_env, host) if inspected is not None else ()
    return evaluate(
        report,
        expected,
        host=host_gpu_info(environ, host),
        output_tail=tail,
        seconds=seconds,
        findings=findings,
    )


def smoke_error(name: str, report: SmokeReport, profile: Profile) -> SmokeError:
    hint = None
    details = report.details
    for problem in report.problems:
        missing = re.search(r"No module named '([\w.]+)'", problem)
        if missing:
            module = missing.group(1).split(".")[0]
            hint = f"add {module} to 'packages' in {profile.path}"
            break
        if "shared library" in problem:
            details = None  # diagnosed: the traceback adds nothing (--debug logs the command)
            hint = "install that library, or use another backend's profile"
            if profile.backend == "cntk":
                hint += " (theano or tensorflow for Keras 2)"
            break
    return SmokeError(
        f"smoke test failed for {name}: " + "; ".join(report.problems),
        hint=hint
        or "fix what the line above names, then run it again (nothing half-built was left behind)",
        details=details,
    )
