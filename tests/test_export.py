"""`kboot export`: the build files it writes (fast, no builder), its refusals, and a real
image built with buildah from a Debian base made here (integration, needs the builder).

No container registry is reachable from the test machines: the base is a Debian bookworm
root file system made by debootstrap from Debian's packages (python3 3.11 with its venv
module), imported into a buildah storage of the session's own, once per session."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootstrap.fleet import containers, export
from bootstrap.fleet.containers import ImageSpec, apptainer_definition, containerfile
from bootstrap.system.errors import EXIT_USAGE, KbootError
from bootstrap.system.progress import RecordingReporter
from helpers import kboot, resolved_lock
from machine import buildah_argv

SPEC = ImageSpec(
    profile="numpy",
    profile_name="numpy",
    python="3.11",
    base="python:3.11-slim",
    lock_file="numpy.lock",
    lock_sha256="ab" * 32,
    wheelhouse=True,
    kboot_version="9.9.9",
)
COMMAND = "kboot export numpy --lock numpy.lock --wheelhouse wh"


def run_steps(text: str) -> list[str]:
    """The Containerfile's RUN commands, continuation lines joined, the mount dropped."""
    joined = text.replace("\\\n", " ")
    steps = re.findall(r"^RUN (.*)$", joined, re.M)
    return [re.sub(r"^--mount=\S+\s+", "", " ".join(s.split())) for s in steps]


def sections(definition: str) -> dict[str, str]:
    """An Apptainer definition's header (key "") and its %sections, by name."""
    found: dict[str, str] = {}
    name = ""
    for line in definition.splitlines():
        if line.startswith("%"):
            name = line[1:].split()[0]
            found[name] = ""
        else:
            found[name] = found.get(name, "") + line + "\n"
    return found


# --- the files written (fast) ---------------------------------------------------------------


def test_the_containerfile_installs_the_lock_offline_then_proves_the_environment() -> None:
    text = containerfile(SPEC, COMMAND)
    steps = run_steps(text)
    assert len(steps) == 4
    tool, create, compile_step, check = steps
    assert "--require-hashes --find-links /kboot-export/tool" in tool and "--no-index" in tool
    assert create == (
        "/opt/kboot/bin/kboot create numpy --dest /opt/keras-env --python 3.11 "
        "--lock /kboot-export/lock/numpy.lock --wheelhouse /kboot-export/wheelhouse --offline"
    )
    assert "compileall" in compile_step
    assert check == "/opt/kboot/bin/kboot check /opt/keras-env"  # the last step, its own
    assert "ARG BASE=python:3.11-slim\nFROM ${BASE}" in text
    assert f'io.kboot.lock.sha256="{"ab" * 32}"' in text and 'io.kboot.version="9.9.9"' in text
    for setting in ("KERAS_HOME=/opt/keras-env/keras-home", "VIRTUAL_ENV=/opt/keras-env"):
        assert setting in text
    assert "PATH=/opt/keras-env/bin:/opt/kboot/bin:$PATH" in text
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in text  # one framework: nothing to tame
    assert text.startswith(f"# Written by kboot 9.9.9: {COMMAND}\n")


def test_without_a_wheelhouse_the_image_installs_the_lock_from_the_index() -> None:
    spec = ImageSpec(**{**SPEC.__dict__, "wheelhouse": False})
    (_, create, _, _) = run_steps(containerfile(spec, COMMAND))
    assert create.endswith("--lock /kboot-export/lock/numpy.lock")
    assert "--offline" not in create


def test_jax_and_tensorflow_together_get_the_memory_settings(write_profile) -> None:  # type: ignore[no-untyped-def]
    from bootstrap.profiles.catalog import load_profile

    both = load_profile(
        write_profile("both", 'backend = "jax"\npackages = ["jax", "tensorflow-cpu"]\n')
    )
    jax = load_profile(write_profile("jaxonly", 'backend = "jax"\npackages = ["jax"]\n'))
    assert export._jax_and_tensorflow(both) and not export._jax_and_tensorflow(jax)
    spec = ImageSpec(**{**SPEC.__dict__, "memory_settings": True})
    for text in (containerfile(spec, COMMAND), apptainer_definition(spec, COMMAND)):
        assert "XLA_PYTHON_CLIENT_PREALLOCATE=false" in text
        assert "TF_FORCE_GPU_ALLOW_GROWTH=true" in text


def test_the_apptainer_definition_runs_the_same_steps_and_tests_with_kboot_check() -> None:
    """Apptainer is not installable here (no Debian 12 package): the definition is checked
    for its structure, its scripts by the shell's parser, and against the Containerfile
    that is built for real below."""
    definition = apptainer_definition(SPEC, COMMAND)
    parts = sections(definition)
    header = dict(
        line.split(": ", 1) for line in parts[""].splitlines() if ": " in line and line[0] != "#"
    )
    assert header == {"Bootstrap": "docker", "From": "python:3.11-slim"}
    assert set(parts) >= {"labels", "files", "environment", "post", "test", "runscript", "help"}
    assert parts["files"].split() == ["kboot-export", "/kboot-export"]
    post = [line.strip() for line in parts["post"].splitlines() if line.strip()[:1] not in "#"]
    steps = run_steps(containerfile(SPEC, COMMAND))
    tool = " && ".join(post[2:5])
    assert [tool, *post[5:7]] == steps[:3]  # kboot, create, bytecode: as in the Containerfile
    assert parts["test"].split("exec ", 1)[1].strip() == steps[3]  # and kboot check is %test
    labels = dict(line.split(None, 1) for line in parts["labels"].strip().splitlines())
    assert labels["io.kboot.lock.sha256"] == "ab" * 32 and labels["io.kboot.version"] == "9.9.9"
    assert "export KERAS_HOME=/opt/keras-env/keras-home" in parts["environment"]
    for name in ("post", "test", "environment", "runscript"):
        parsed = subprocess.run(["bash", "-n"], input=parts[name], text=True, check=False)
        assert parsed.returncode == 0, name


def test_a_lock_file_name_is_quoted_for_the_shell() -> None:
    spec = ImageSpec(**{**SPEC.__dict__, "lock_file": "my lock's.txt"})
    (tool, create, _, _) = run_steps(containerfile(spec, COMMAND))
    assert "cp '/kboot-export/lock/my lock'\"'\"'s.txt' /opt/kboot/" in tool
    assert "--lock '/kboot-export/lock/my lock'\"'\"'s.txt'" in create


# --- refusals (fast) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["numpy"], "needs the lock the image installs"),
        (["numpy", "--lock", "nowhere.lock"], "--lock"),
        (["numpy", "--wheelhouse", "nowhere"], "--wheelhouse"),
        (["numpy", "--lock", "x.lock", "--to", "docker"], "--to 'docker'"),
        (["numpy", "--lock", "x.lock", "--python", "3"], "--python '3'"),
        (["numpy", "--lock", "x.lock", "--python", "3.11", "--base", "a b"], "--base 'a b'"),
        (["no-such-profile", "--lock", "x.lock"], "no-such-profile"),
        # the lock is read at export, not minutes into the build
        (["numpy", "--lock", "notes.txt"], "notes.txt is not a lock"),
        (["jax-cpu", "--lock", "x.lock"], "other requirements than profile jax-cpu"),
        (["numpy", "--lock", "x.lock", "--python", "3.12"], "uses Python 3.12"),
    ],
)
def test_bad_usage_is_refused_with_exit_2_and_nothing_written(
    tmp_path: Path, args: list[str], said: str
) -> None:
    resolved_lock(tmp_path / "x.lock")
    (tmp_path / "notes.txt").write_text("numpy>=1\n", encoding="utf-8")
    proc = kboot("export", *args, cwd=tmp_path)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert said in proc.stderr and "Traceback" not in proc.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("export-", ".export-"))]


def test_a_wheelhouse_without_its_lock_is_refused(tmp_path: Path) -> None:
    (tmp_path / "wh").mkdir()
    proc = kboot("export", "numpy", "--wheelhouse", "wh", cwd=tmp_path)
    assert proc.returncode == EXIT_USAGE
    assert "holds no lock" in proc.stderr


@pytest.fixture
def offline_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """export_profile with kboot's own wheels stood in for (they come from the index): for
    the folder's rules, which do not depend on them."""

    def tool_wheels(dest: Path, python: str) -> int:
        dest.mkdir()
        (dest / "requirements.txt").write_text("kboot==0 --hash=sha256:00\n", encoding="utf-8")
        return 0

    monkeypatch.setattr(export, "_tool_wheels", tool_wheels)
    lock = resolved_lock(tmp_path / "numpy.lock")

    def run(output: Path) -> export.ExportResult:
        return export.export_profile(
            "numpy",
            formats=[],
            lock=lock,
            wheelhouse=None,
            output=output,
            base=None,
            python="3.11",
            accelerator=None,
            command="kboot export numpy",
            reporter=RecordingReporter(),
        )

    return run


def test_an_export_is_replaced_only_while_it_is_all_kboots(tmp_path: Path, offline_export) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "out"
    first = offline_export(folder)
    assert first.files == ("Containerfile", "numpy.def") and not first.replaced
    assert first.lock_sha256 == hashlib.sha256((tmp_path / "numpy.lock").read_bytes()).hexdigest()
    assert (folder / "kboot-export" / "lock" / "numpy.lock").is_file()
    record = json.loads((folder / ".kboot-export.json").read_text(encoding="utf-8"))
    assert set(record["files"]) >= {"Containerfile", "numpy.def", "kboot-export/lock/numpy.lock"}
    assert offline_export(folder).replaced  # unchanged: kboot's own, replaced

    containerfile_path = folder / "Containerfile"
    containerfile_path.write_text(containerfile_path.read_text() + "RUN echo mine\n")
    with pytest.raises(export.ExportFolderError, match="changed since kboot wrote it"):
        offline_export(folder)
    assert containerfile_path.read_text().endswith("RUN echo mine\n")  # the edit stays

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(export.ExportFolderError, match="kboot did not write"):
        offline_export(other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_empty_folder_is_used(tmp_path: Path, offline_export) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "empty").mkdir()
    assert not offline_export(tmp_path / "empty").replaced
    assert (tmp_path / "empty" / "Containerfile").is_file()


@given(st.binary(max_size=300))
def test_any_record_bytes_give_files_or_kboots_error(raw: bytes) -> None:
    try:
        files = export.parse_record(raw, Path("/x/.kboot-export.json"))
    except KbootError as exc:
        assert exc.exit_code == EXIT_USAGE
    else:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(JSON)
def test_any_record_json_gives_files_or_kboots_error(data: object) -> None:
    raw = json.dumps({"files": data}).encode()
    try:
        export.parse_record(raw, Path("/x/.kboot-export.json"))
    except KbootError as exc:
        assert exc.exit_code == EXIT_USAGE


# --- a real image (integration) -------------------------------------------------------------


@pytest.fixture(scope="session")
def image_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A buildah storage of the session's own, holding the Debian base image."""
    store = tmp_path_factory.mktemp("buildah")
    buildah = buildah_argv(store)
    rootfs = store / "rootfs"
    started = time.monotonic()
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv",
            "bookworm",
            str(rootfs),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    container = subprocess.run(
        [*buildah, "from", "scratch"], check=True, capture_output=True, text=True
    ).stdout.strip()
    for step in (
        ["copy", "--quiet", container, f"{rootfs}/", "/"],
        ["commit", "--rm", container, BASE],
    ):
        subprocess.run([*buildah, *step], check=True, capture_output=True)
    shutil.rmtree(rootfs)
    print(f"\nDebian base image made in {time.monotonic() - started:.0f} s")
    yield store
    subprocess.run([*buildah, "rmi", "--all", "--force"], check=False, capture_output=True)
    shutil.rmtree(store, ignore_errors=True)


BASE = "localhost/kboot-test-base:bookworm"


def build(
    store: Path, folder: Path, containerfile_path: Path, tag: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *buildah_argv(store),
            "build",
            "--isolation",
            "chroot",
            "--pull=never",
            "-f",
            str(containerfile_path),
            "-t",
            tag,
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


@pytest.mark.integration
@pytest.mark.needs("buildah", "debootstrap")
def test_an_exported_image_builds_offline_and_its_checks_run_inside(
    tmp_path: Path, image_store: Path
) -> None:
    downloaded = kboot(
        "download", "numpy", "--python-version", "3.11", "--dest", "wh", cwd=tmp_path
    )
    assert downloaded.returncode == 0, downloaded.stderr
    exported = kboot(
        "export",
        "numpy",
        "--to",
        "oci",
        "--wheelhouse",
        "wh",
        "--python",
        "3.11",
        "--base",
        BASE,
        "-o",
        "ctx",
        "--json",
        cwd=tmp_path,
    )
    assert exported.returncode == 0, exported.stderr
    result = json.loads(exported.stdout)
    folder = tmp_path / "ctx"
    assert result["files"] == ["Containerfile"] and result["offline"]

    started = time.monotonic()
    built = build(image_store, folder, folder / "Containerfile", "keras-numpy")
    print(f"\nimage built in {time.monotonic() - started:.0f} s")
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-2000:]
    log = built.stdout
    # kboot's smoke test ran inside, in the create step, then kboot check in its own step
    assert "smoke test passed" in log
    assert re.search(
        r"STEP \d+/\d+: RUN /opt/kboot/bin/kboot check /opt/keras-env\nkeras-env: ok", log
    )
    inspected = subprocess.run(
        [*buildah_argv(image_store), "inspect", "--type", "image", "keras-numpy"],
        capture_output=True,
        text=True,
        check=True,
    )
    labels = json.loads(inspected.stdout)["OCIv1"]["config"]["Labels"]
    assert labels["io.kboot.lock.sha256"] == result["lock_sha256"]
    assert labels["io.kboot.version"] == kboot("--version").stdout.split()[1]

    container = subprocess.run(
        [*buildah_argv(image_store), "from", "--pull=never", "keras-numpy"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ran = subprocess.run(
        [
            *buildah_argv(image_store),
            "run",
            "--isolation",
            "chroot",
            container,
            "--",
            "python",
            "-c",
            "import keras, sys; print(keras.backend.backend(), keras.config.floatx(), sys.prefix)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    subprocess.run([*buildah_argv(image_store), "rm", container], check=False, capture_output=True)
    assert ran.stdout.split() == ["numpy", "float32", "/opt/keras-env"], ran.stderr

    # a step that changes keras.json after create: the check step fails the build
    text = (folder / "Containerfile").read_text(encoding="utf-8")
    tamper = (
        'RUN echo \'{"backend": "jax", "floatx": "float16"}\' '
        f"> {containers.KERAS_HOME}/keras.json\n"
    )
    check_step = "RUN /opt/kboot/bin/kboot check"
    tampered = tmp_path / "Tampered"
    tampered.write_text(text.replace(check_step, tamper + check_step), encoding="utf-8")
    failed = build(image_store, folder, tampered, "keras-numpy-tampered")
    assert failed.returncode != 0
    assert "keras-env: FAILED" in failed.stdout
    assert "backend: keras reports 'jax', the profile asks for 'numpy'" in failed.stdout
