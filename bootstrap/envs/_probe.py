# Runs inside the environment under test, with that environment's Python (which
# may be as old as 3.6): standard library only, no annotations, no f-strings.
# argv[1] is a JSON object {"floatx": ...}; the report is one JSON line on
# stdout after MARKER, since backends print their own chatter.
import json
import os
import re
import sys
import time
import traceback

MARKER = "KBOOT-PROBE:"


def emit(report):
    sys.stdout.write("\n" + MARKER + json.dumps(report) + "\n")
    sys.stdout.flush()


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions():
    """What is installed, from the .dist-info/.egg-info folder names on sys.path: no
    METADATA file is read (that would cost a tenth of a second and more)."""
    return scan_dist_info()


def scan_dist_info():
    found = {}
    for entry in sys.path:
        if not os.path.isdir(entry):
            continue
        for item in sorted(os.listdir(entry)):
            for suffix in (".dist-info", ".egg-info"):
                if item.endswith(suffix):
                    stem = item[: -len(suffix)]
                    name, _, version = stem.partition("-")
                    if name and version:
                        found.setdefault(canonical(name), version.split("-")[0])
    return found


def module_version(name):
    try:
        module = __import__(name)
    except Exception:
        return None
    return getattr(module, "__version__", None)


def devices_for(backend, report):
    devices = []
    if backend == "tensorflow":
        import tensorflow as tf

        for dev in tf.config.list_physical_devices():
            devices.append({"kind": dev.device_type.lower(), "name": dev.name})
        report["build"] = {"cuda": bool(tf.test.is_built_with_cuda())}
    elif backend == "jax":
        import jax

        for dev in jax.devices():
            kind = "gpu" if dev.platform in ("gpu", "cuda", "rocm") else dev.platform
            devices.append({"kind": kind, "name": str(dev)})
        report["build"] = {"default_backend": jax.default_backend()}
    elif backend == "torch":
        import torch

        devices.append({"kind": "cpu", "name": "cpu"})
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                devices.append({"kind": "gpu", "name": torch.cuda.get_device_name(index)})
        report["build"] = {"cuda": torch.version.cuda}
    elif backend == "openvino":
        import openvino

        for name in openvino.Core().available_devices:
            devices.append({"kind": name.split(".")[0].lower(), "name": name})
    else:
        devices.append({"kind": "cpu", "name": "cpu"})
    return devices


def compute_keras3(keras, floatx):
    ops = keras.ops
    x = ops.ones((2, 2), dtype=floatx)
    y = ops.matmul(x, x)
    arr = ops.convert_to_numpy(y)
    return str(arr.dtype), [float(v) for v in arr.reshape(-1)]


def compute_keras2(keras, floatx):
    import numpy as np

    K = keras.backend
    x = K.variable(np.ones((2, 2)), dtype=floatx)
    arr = np.asarray(K.eval(K.dot(x, x)))
    return str(arr.dtype), [float(v) for v in arr.reshape(-1)]


def check_backend_module(name):
    """An external Keras 2 backend: does it import, and define what Keras requires?

    Imported the way Keras does it (KERAS_BACKEND is set by the caller), so that a
    module that itself imports keras works; Keras stops at the first missing entry,
    the module object tells all of them.
    """
    report = {"module": name}
    try:
        import keras  # noqa: F401
    except BaseException as exc:
        report["keras_error"] = "{}: {}".format(type(exc).__name__, exc)
    module = sys.modules.get(name)
    if module is None:
        try:
            module = __import__(name, fromlist=["_"])
        except BaseException as exc:
            report["import_error"] = "{}: {}".format(type(exc).__name__, exc)
            report["traceback"] = traceback.format_exc()[-4000:]
            return report
    report["missing"] = [
        e for e in ("placeholder", "variable", "function") if not hasattr(module, e)
    ]
    return report


def main():
    expected = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    mode = expected.get("mode", "compute")
    if mode == "packages":
        emit({"packages": distributions()})
        return
    if mode == "backend-module":
        emit(check_backend_module(expected["backend"]))
        return
    report = {
        "python": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "executable": sys.executable,
        "keras_home_env": os.environ.get("KERAS_HOME"),
        "keras_backend_env": os.environ.get("KERAS_BACKEND"),
        "jax_enable_x64_env": os.environ.get("JAX_ENABLE_X64"),
    }
    started = time.time()
    module_name = expected.get("keras_module", "keras")
    try:
        keras = __import__(module_name)
    except BaseException as exc:  # report, never crash: the caller explains it
        report["import_error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()[-4000:]
        report["packages"] = distributions()
        emit(report)
        return
    report["import_seconds"] = round(time.time() - started, 3)
    report["keras_version"] = getattr(keras, "__version__", None)
    generation = 3 if hasattr(keras, "config") and hasattr(keras, "ops") else 2
    report["keras_generation"] = generation
    api = keras.config if generation == 3 else keras.backend
    backend = api.backend()
    report["backend"] = backend
    report["floatx"] = api.floatx()
    report["image_data_format"] = api.image_data_format()
    report["epsilon"] = api.epsilon()
    module = {
        "tensorflow": "tensorflow",
        "jax": "jax",
        "torch": "torch",
        "numpy": "numpy",
        "openvino": "openvino",
        "theano": "theano",
        "cntk": "cntk",
    }.get(backend, backend.split(".")[0])
    report["backend_version"] = module_version(module)
    if module_name == "tf_keras":  # does `tf.keras` reach tf-keras (TF_USE_LEGACY_KERAS=1)?
        try:
            import tensorflow as tf

            # tf.keras is a lazy loader without __version__: ask where its layers live
            report["tf.keras_package"] = tf.keras.layers.Dense.__module__.split(".")[0]
        except Exception as exc:
            report["tf.keras_package"] = "error: {}".format(exc)
    try:
        report["devices"] = devices_for(backend, report)
    except Exception as exc:
        report["devices"] = []
        report["devices_error"] = f"{type(exc).__name__}: {exc}"
    floatx = expected.get("floatx") or report["floatx"]
    if mode == "import":
        report["packages"] = distributions()
        emit(report)
        return
    try:
        compute = compute_keras3 if generation == 3 else compute_keras2
        dtype, values = compute(keras, floatx)
        report["compute"] = {"dtype": dtype, "values": values}
    except Exception as exc:
        report["compute_error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()[-4000:]
    report["packages"] = distributions()
    emit(report)


if __name__ == "__main__":
    main()
