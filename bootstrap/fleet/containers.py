"""The text of a Containerfile and an Apptainer definition for one kboot environment.

Pure functions of an `ImageSpec`: `kboot export` (fleet/export.py) gathers what goes into
the build context and writes these files beside it. Both files build the same image in
the same steps, each step kboot's own:

1. kboot itself, in its own virtualenv (/opt/kboot), from the wheels in the context,
   hash-checked, offline;
2. `kboot create PROFILE --dest /opt/keras-env --lock ...` (offline from the wheelhouse
   when there is one): the lock installed hash-checked, keras.json in the environment's
   own Keras home, kboot's smoke test;
3. bytecode compiled, so the first `import keras` in a read-only image writes nothing;
4. `kboot check /opt/keras-env`, a step of its own (`RUN` in the Containerfile, `%test`
   in the definition): anything done to the environment after create (a keras.json
   changed by a later step) fails the build.

The context folder is bound for the steps that read it (`RUN --mount=type=bind`), not
copied into a layer: the wheelhouse does not stay in the image. Only the lock does, in
/opt/kboot, beside its digest in the image's labels.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

#: the build context's folder of kboot's inputs, beside the Containerfile and definition
CONTEXT = "kboot-export"
#: where the image keeps kboot (a virtualenv), its home, and the environment
TOOL_VENV = "/opt/kboot"
KBOOT_HOME = "/opt/kboot/home"
ENV_DIR = "/opt/keras-env"
#: the Keras home kboot keeps inside an environment (bootstrap.system.paths.ENV_KERAS_HOME)
KERAS_HOME = f"{ENV_DIR}/keras-home"
#: inside the image while a step runs: the context folder, bound read-only
MOUNTED = f"/{CONTEXT}"
#: the context's folder of kboot's own wheels and their hash-pinned requirements
TOOL_DIR = "tool"
TOOL_REQUIREMENTS = "requirements.txt"
#: the context's folder of the profile file, when the profile is not one of kboot's own
PROFILE_DIR = "profile"
#: the context's folder of the lock (its own name kept: create reads the format by it)
LOCK_DIR = "lock"
WHEELHOUSE_DIR = "wheelhouse"

#: JAX takes 75% of a GPU at its first computation and TensorFlow nearly all of it: with
#: both in one environment, the second runs out (what `kboot doctor` warns about)
MEMORY_SETTINGS = (
    ("XLA_PYTHON_CLIENT_PREALLOCATE", "false"),
    ("TF_FORCE_GPU_ALLOW_GROWTH", "true"),
)

LABEL_PREFIX = "io.kboot"


@dataclass(frozen=True)
class ImageSpec:
    """What the image holds; every value already checked (fleet/export.py)."""

    profile: str  # the profile's name, or its file's path in the mounted context
    profile_name: str
    python: str  # X.Y
    base: str
    lock_file: str  # the lock's file name (in the context's lock/, and in /opt/kboot)
    lock_sha256: str
    wheelhouse: bool  # the context holds a wheelhouse: the build is offline
    kboot_version: str
    memory_settings: bool = False
    accelerator: str | None = None

    @property
    def image_name(self) -> str:
        return f"keras-{self.profile_name}"

    def labels(self) -> tuple[tuple[str, str], ...]:
        return (
            ("org.opencontainers.image.title", self.image_name),
            (
                "org.opencontainers.image.description",
                f"Keras environment {self.profile_name} built by kboot from its lock",
            ),
            (f"{LABEL_PREFIX}.version", self.kboot_version),
            (f"{LABEL_PREFIX}.profile", self.profile_name),
            (f"{LABEL_PREFIX}.lock", f"{TOOL_VENV}/{self.lock_file}"),
            (f"{LABEL_PREFIX}.lock.sha256", self.lock_sha256),
        )

    def environment(self) -> tuple[tuple[str, str], ...]:
        memory = MEMORY_SETTINGS if self.memory_settings else ()
        return (
            ("VIRTUAL_ENV", ENV_DIR),
            ("KERAS_HOME", KERAS_HOME),
            ("KBOOT_HOME", KBOOT_HOME),
            *memory,
        )

    def install_tool(self, context: str) -> tuple[str, ...]:
        """The shell commands that make kboot's own virtualenv from the context's wheels
        and keep the lock beside it."""
        wheels = f"{context}/{TOOL_DIR}"
        return (
            f"python{self.python} -m venv {TOOL_VENV}",
            f"{TOOL_VENV}/bin/python -m pip install --quiet --no-index --no-cache-dir "
            f"--disable-pip-version-check --require-hashes --find-links {wheels} "
            f"-r {wheels}/{TOOL_REQUIREMENTS}",
            f"cp {shlex.quote(f'{context}/{LOCK_DIR}/{self.lock_file}')} {TOOL_VENV}/",
        )

    def create(self, context: str) -> str:
        """The shell command that builds and smoke-tests the environment, as kboot does."""
        argv = [
            f"{TOOL_VENV}/bin/kboot",
            "create",
            self.profile,
            "--dest",
            ENV_DIR,
            "--python",
            self.python,
            "--lock",
            f"{context}/{LOCK_DIR}/{self.lock_file}",
        ]
        if self.wheelhouse:
            argv += ["--wheelhouse", f"{context}/{WHEELHOUSE_DIR}", "--offline"]
        if self.accelerator:
            argv += ["--accelerator", self.accelerator]
        return shlex.join(argv)

    def compile_bytecode(self) -> str:
        return f"{ENV_DIR}/bin/python -m compileall -q -j 0 {ENV_DIR}"

    def check(self) -> str:
        return f"{TOOL_VENV}/bin/kboot check {ENV_DIR}"


def containerfile(spec: ImageSpec, command: str) -> str:
    """A Containerfile (podman, buildah, docker) that builds and proves the environment."""
    tool = " \\\n && ".join(spec.install_tool(MOUNTED))
    mount = f"RUN --mount=type=bind,source={CONTEXT},target={MOUNTED} \\\n    "
    labels = " \\\n      ".join(f'{key}="{value}"' for key, value in spec.labels())
    environment = " \\\n    ".join(f"{key}={value}" for key, value in spec.environment())
    return f"""\
# Written by kboot {spec.kboot_version}: {command}
# Build it in this folder: buildah build -t {spec.image_name} .   (or podman/docker build)
# Another base with Python {spec.python} and its venv module: --build-arg BASE=IMAGE
ARG BASE={spec.base}
FROM ${{BASE}}

LABEL {labels}

ENV {environment} \\
    PATH={ENV_DIR}/bin:{TOOL_VENV}/bin:$PATH

# kboot, in its own virtualenv, from the wheels in {CONTEXT}/{TOOL_DIR} (hash-checked)
{mount}{tool}

# the environment: the lock installed hash-checked, keras.json, kboot's smoke test
{mount}{spec.create(MOUNTED)}

# bytecode, so that a read-only image writes nothing on the first import
RUN {spec.compile_bytecode()}

# kboot check: the finished environment, proved again (a step above that changed it fails)
RUN {spec.check()}

CMD ["python"]
"""


def apptainer_definition(spec: ImageSpec, command: str) -> str:
    """An Apptainer (Singularity) definition that builds the same environment; its %test
    is kboot check, run at the end of `apptainer build` and by `apptainer test --nv`."""
    labels = "\n".join(f"    {key} {value}" for key, value in spec.labels())
    environment = "\n".join(f"    export {key}={value}" for key, value in spec.environment())
    context = MOUNTED  # %files copies the context where the Containerfile binds it
    newline = "\n    "
    return f"""\
Bootstrap: docker
From: {spec.base}

# Written by kboot {spec.kboot_version}: {command}
# Build it in this folder: apptainer build {spec.image_name}.sif {spec.profile_name}.def
# (another base with Python {spec.python} and its venv module: change From: above)

%labels
{labels}

%files
    {CONTEXT} {context}

%environment
{environment}
    export PATH={ENV_DIR}/bin:{TOOL_VENV}/bin:$PATH

%post
    set -eu
    export KBOOT_HOME={KBOOT_HOME}
    # kboot, in its own virtualenv, from the wheels in {CONTEXT}/{TOOL_DIR} (hash-checked)
    {newline.join(spec.install_tool(context))}
    # the environment: the lock installed hash-checked, keras.json, kboot's smoke test
    {spec.create(context)}
    # bytecode, so that a read-only image writes nothing on the first import
    {spec.compile_bytecode()}
    rm -rf {context}

%test
    # kboot check: the environment proved again (apptainer test --nv IMAGE on a GPU node)
    export KBOOT_HOME={KBOOT_HOME}
    exec {spec.check()}

%runscript
    exec {ENV_DIR}/bin/python "$@"

%help
    Keras environment {spec.profile_name}, built by kboot {spec.kboot_version} from its lock
    ({TOOL_VENV}/{spec.lock_file}). Run: apptainer exec --nv IMAGE python train.py
"""
