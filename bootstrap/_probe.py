# Runs inside the environment under test, with that environment's Python (which
# may be as old as 3.6): standard library only, no annotations, no f-strings.
# argv[1] is a JSON object {"floatx": ...}; the report is one JSON line on
# stdout after MARKER, since backends print their own chatter.
import json
import os
import sys
import time
import traceback

MARKER = "KBOOT-PROBE:"


def emit(report):
    sys.stdout.write("\n" + MARKER + json.dumps(report) + "\n")
    sys.stdout.flush()


def distributions():
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8
        try:
            import importlib_metadata as metadata
        except ImportError:
            metadata = None
    found = {}
    if metadata is not None:
        for dist in metadata.distributions():
            name = dist.metadata["Name"]
            if name:
                found.setdefault(name.lower().replace("_", "-"), dist.version)
        return found
    try:
        import pkg_resources
    except ImportError:
        return found
    for dist in pkg_resources.working_set:
        found.setdefault(dist.project_name.lower().replace("_", "-"), dist.version)
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


def main():
    expected = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    report = {
        "python": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "executable": sys.executable,
        "keras_home_env": os.environ.get("KERAS_HOME"),
        "keras_backend_env": os.environ.get("KERAS_BACKEND"),
    }
    started = time.time()
    try:
        import keras
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
    try:
        report["devices"] = devices_for(backend, report)
    except Exception as exc:
        report["devices"] = []
        report["devices_error"] = f"{type(exc).__name__}: {exc}"
    floatx = expected.get("floatx") or report["floatx"]
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
