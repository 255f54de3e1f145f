# Runs inside the Python that `kboot doctor` examines, and inside every environment the
# smoke test checks (3.5 or newer): standard library only, no annotations, no f-strings.
# It reports what is there (packages, startup files, the variables the interpreter sees
# after its startup, keras.json, the CUDA libraries of the nvidia-* wheels and those in
# LD_LIBRARY_PATH's folders) without importing keras, unless argv[1] asks for it
# ({"import": true}); one JSON line after MARKER.
import json
import os
import re
import site
import sys
import traceback

MARKER = "KBOOT-DOCTOR:"
WATCHED = (
    "KERAS_BACKEND",
    "KERAS_HOME",
    "JAX_ENABLE_X64",
    "JAX_PLATFORMS",
    "KERAS_TORCH_DEVICE",
    "TF_USE_LEGACY_KERAS",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONPATH",
)
#: Reported, not looked for in startup files: they matter for the GPU only.
GPU_VARIABLES = (
    "LD_LIBRARY_PATH",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_ALLOCATOR",
    "TF_FORCE_GPU_ALLOW_GROWTH",
)


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def packages():
    found = {}
    for entry in sys.path:
        if not os.path.isdir(entry):
            continue
        for item in sorted(os.listdir(entry)):
            for suffix in (".dist-info", ".egg-info"):
                if item.endswith(suffix):
                    name, _, version = item[: -len(suffix)].partition("-")
                    if name and version:
                        found.setdefault(canonical(name), version.split("-")[0])
    return found


def site_folders():
    folders = []
    if hasattr(site, "getsitepackages"):
        folders.extend(site.getsitepackages())
    user = getattr(site, "USER_SITE", None)
    if user and getattr(site, "ENABLE_USER_SITE", False):
        folders.append(user)
    return [f for f in folders if os.path.isdir(f)]


def startup_files(folders):
    """.pth files that run code, and sitecustomize/usercustomize, that touch Keras' variables."""
    found = []
    for folder in folders:
        for item in sorted(os.listdir(folder)):
            path = os.path.join(folder, item)
            if not (item.endswith(".pth") or item in ("sitecustomize.py", "usercustomize.py")):
                continue
            try:
                with open(path, "rb") as handle:
                    text = handle.read(200000).decode("utf-8", "replace")
            except OSError:
                continue
            named = [v for v in WATCHED if v in text]
            if named:
                found.append({"file": path, "names": named})
    return found


def keras_json():
    """The keras.json Keras would read, found as keras/src/backend/config.py does."""
    home = os.environ.get("KERAS_HOME")
    source = "KERAS_HOME"
    if not home:
        base = os.path.expanduser("~")
        if not os.access(base, os.W_OK):
            base = "/tmp"
            source = "/tmp fallback (the home folder is not writable)"
        else:
            source = "the home folder"
        home = os.path.join(base, ".keras")
    path = os.path.join(home, "keras.json")
    report = {"path": path, "source": source, "exists": os.path.exists(path)}
    if report["exists"]:
        try:
            with open(path, "rb") as handle:
                raw = handle.read(1000000).decode("utf-8")
            data = json.loads(raw)
            if isinstance(data, dict):
                report["values"] = data
                report["epsilon_is_int"] = isinstance(data.get("epsilon"), int) and not isinstance(
                    data.get("epsilon"), bool
                )
            else:
                report["error"] = "a JSON {}, not an object".format(type(data).__name__)
        except (ValueError, UnicodeDecodeError) as exc:
            report["error"] = str(exc)
        except OSError as exc:
            report["error"] = str(exc)
    return report


def conda_scripts(prefix):
    found = []
    folder = os.path.join(prefix, "etc", "conda", "activate.d")
    if not os.path.isdir(folder):
        return found
    for item in sorted(os.listdir(folder)):
        path = os.path.join(folder, item)
        try:
            with open(path, "rb") as handle:
                text = handle.read(100000).decode("utf-8", "replace")
        except OSError:
            continue
        for match in re.finditer(r"(KERAS_BACKEND|KERAS_HOME)\s*=\s*['\"]?([^'\"\s;]*)", text):
            found.append({"file": path, "name": match.group(1), "value": match.group(2)})
    return found


def modules_found(names):
    """Whether each backend's top-level module can be found (an external Keras 2 backend
    need not share its distribution's name); found, not imported."""
    import importlib.util

    found = {}
    for name in names:
        if not isinstance(name, str) or not name:
            continue
        top = name.split(".")[0]
        try:
            found[top] = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found[top] = False
    return found


def is_library(name):
    return name.startswith("lib") and ".so" in name


def nvidia_libraries(folders):
    """The shared libraries the nvidia-* wheels brought: {file name: the wheel's folder}
    (site-packages/nvidia/cudnn/lib/libcudnn.so.9 -> "cudnn")."""
    found = {}
    for folder in folders:
        top = os.path.join(folder, "nvidia")
        if not os.path.isdir(top):
            continue
        for sub in sorted(os.listdir(top)):
            lib = os.path.join(top, sub, "lib")
            if not os.path.isdir(lib):
                continue
            for item in sorted(os.listdir(lib)):
                if is_library(item):
                    found.setdefault(item, sub)
    return found


def library_path(wheel_libraries):
    """LD_LIBRARY_PATH's folders, each with its files that bear the name of a library the
    wheels brought (libcudnn.so.9, libcudnn.so.9.1.0: {name: the file a link points to})."""
    entries = []
    value = os.environ.get("LD_LIBRARY_PATH") or ""
    for folder in value.split(os.pathsep):
        if not folder:
            continue
        entry = {"folder": folder, "libraries": {}}
        try:
            names = sorted(os.listdir(folder)) if wheel_libraries else []
        except OSError:
            names = []
        for item in names:
            if any(item == lib or item.startswith(lib + ".") for lib in wheel_libraries):
                target = os.path.basename(os.path.realpath(os.path.join(folder, item)))
                entry["libraries"][item] = target
        entries.append(entry)
    return entries


def imported(config_path):
    """What `import keras` gives; what the import writes (Keras makes a missing keras.json
    and its folder) is taken away again: doctor changes nothing."""
    folder = os.path.dirname(config_path)
    had_folder, had_file = os.path.lexists(folder), os.path.lexists(config_path)
    try:
        return _imported()
    finally:
        if not had_file and os.path.isfile(config_path) and not os.path.islink(config_path):
            try:
                os.remove(config_path)
                if not had_folder:
                    os.rmdir(folder)  # only when empty: nothing else is lost
            except OSError:
                pass


def _imported():
    report = {}
    try:
        import keras
    except BaseException as exc:
        report["error"] = "{}: {}".format(type(exc).__name__, exc)
        report["traceback"] = traceback.format_exc()[-3000:]
        return report
    api = keras.config if hasattr(keras, "config") else keras.backend
    report["version"] = getattr(keras, "__version__", None)
    report["backend"] = api.backend()
    report["floatx"] = api.floatx()
    report["image_data_format"] = api.image_data_format()
    report["epsilon"] = api.epsilon()
    devices = []
    try:
        backend = report["backend"]
        if backend == "jax":
            import jax

            devices = [str(d) for d in jax.devices()]
        elif backend == "torch":
            import torch

            devices = ["cpu"] + [
                torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
            ]
        elif backend == "tensorflow":
            import tensorflow as tf

            devices = [d.name for d in tf.config.list_physical_devices()]
        else:
            devices = ["cpu"]
    except BaseException as exc:
        report["devices_error"] = "{}: {}".format(type(exc).__name__, exc)
    report["devices"] = devices
    return report


def main():
    request = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    prefix = sys.prefix
    folders = site_folders()
    # sys.path, not only the site folders: a base Python's CUDA wheels count too
    wheel_libraries = nvidia_libraries([e for e in sys.path if e and os.path.isdir(e)])
    environ = {k: os.environ.get(k) for k in WATCHED + GPU_VARIABLES}
    report = {
        "python": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "executable": sys.executable,
        "prefix": prefix,
        "venv": prefix != getattr(sys, "base_prefix", prefix),
        "conda": os.path.isdir(os.path.join(prefix, "conda-meta")),
        "environ": environ,
        "packages": packages(),
        "site_folders": folders,
        "startup_files": startup_files(folders),
        "keras_json": keras_json(),
        "conda_scripts": conda_scripts(prefix),
        "nvidia_libraries": wheel_libraries,
        "library_path": library_path(wheel_libraries),
    }
    config = report["keras_json"].get("values") or {}
    report["modules"] = modules_found([environ.get("KERAS_BACKEND"), config.get("backend")])
    if request.get("import"):
        report["imported"] = imported(report["keras_json"]["path"])
    sys.stdout.write("\n" + MARKER + json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
