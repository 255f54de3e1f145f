"""The environment variables Keras and its backends read, read as each framework reads them.

A doctor or a smoke test that compares strings misreads them: JAX takes `JAX_ENABLE_X64=on`
as true and `0` as false (and refuses at import anything that is neither), while
TensorFlow honours `TF_USE_LEGACY_KERAS` only as `1`, `true` or `True`. Each rule here is
the framework's own, with its source named.
"""

from __future__ import annotations

from typing import Literal

#: jax/_src/config.py `bool_env`: lowercased, these two sets, anything else a ValueError
_JAX_TRUE = frozenset({"y", "yes", "t", "true", "on", "1"})
_JAX_FALSE = frozenset({"n", "no", "f", "false", "off", "0"})

#: tensorflow/python/util/lazy_loader.py and tf_keras: an exact match
_TF_LEGACY_TRUE = frozenset({"1", "true", "True"})

JaxFlag = Literal["on", "off", "unset", "invalid"]


def jax_flag(value: str | None) -> JaxFlag:
    """A JAX boolean variable (JAX_ENABLE_X64, ...): unset, on, off, or a value that makes
    `import jax` fail."""
    if value is None:
        return "unset"
    lowered = value.lower()
    if lowered in _JAX_TRUE:
        return "on"
    if lowered in _JAX_FALSE:
        return "off"
    return "invalid"


def tf_legacy_keras(value: str | None) -> bool:
    """Whether TF_USE_LEGACY_KERAS makes `tf.keras` tf_keras (Keras 2)."""
    return value in _TF_LEGACY_TRUE


def shown(name: str, value: str | None) -> str:
    """`NAME=value` as a shell would show it, or `NAME (not set)`."""
    return f"{name} (not set)" if value is None else f"{name}={value!r}"
