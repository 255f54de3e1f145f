"""A few training steps of a small conv net, run by an environment's own Python.

Prints one JSON line: backend, the device the backend computed on, the build, and the
median step time. `scripts/gpu_proof.py` runs it twice per environment: as is (the
GPU), and with the GPU hidden from the backend (the CPU).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import keras
import numpy as np


def device_used() -> str:
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        return str(jax.devices()[0].platform)
    if backend == "torch":
        from keras.src.backend.torch.core import get_device

        return str(get_device())
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    return "cpu"


def build() -> str:
    backend = keras.config.backend()
    if backend == "torch":
        import torch

        return f"torch {torch.__version__} (CUDA {torch.version.cuda})"
    if backend == "jax":
        import jax

        return f"jax {jax.__version__} ({jax.default_backend()})"
    if backend == "tensorflow":
        import tensorflow as tf

        return f"tensorflow {tf.__version__} (CUDA build: {tf.test.is_built_with_cuda()})"
    return backend


def main(steps: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(1024,))
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    batch = 128
    first = float(model.train_on_batch(x[:batch], y[:batch]))  # compiles: not timed
    times = []
    for step in range(steps):
        start = (step * batch) % len(x)
        began = time.perf_counter()
        loss = float(model.train_on_batch(x[start : start + batch], y[start : start + batch]))
        times.append(time.perf_counter() - began)
    print(
        json.dumps(
            {
                "backend": keras.config.backend(),
                "device": device_used(),
                "build": build(),
                "step_ms": round(statistics.median(times) * 1000, 2),
                "steps": steps,
                "first_loss": round(first, 4),
                "last_loss": round(loss, 4),
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
