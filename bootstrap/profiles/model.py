"""Profiles: declarative TOML files that say which Keras environment to build.

A profile is loaded into a frozen `Profile` and validated completely before
anything touches the disk. Every error names the file, the key, the bad value
and what would be accepted.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bootstrap.system.errors import ProfileError, UsageError
from bootstrap.system.redaction import redact

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

KERAS3_BACKENDS = ("tensorflow", "jax", "torch", "numpy", "openvino")
#: Keras 2 also accepts any other backend as a dotted module path (an external backend).
KERAS2_BACKENDS = ("tensorflow", "theano", "cntk")
GENERATIONS = (2, 3)
SMOKE_MODES = ("compute", "import")
#: `accelerator`: which build of the backend kboot picks (tensorflow, jax and torch only).
ACCELERATORS = ("auto", "cpu", "cuda", "cuda-12", "cuda-13")
ACCELERATED_BACKENDS = ("tensorflow", "jax", "torch")
#: Pythons that legacy backends have working wheels for (checked against PyPI and on Debian 12).
LEGACY_PYTHON: Mapping[str, tuple[str, str]] = {
    "cntk": (">=3.5,<3.7", "cntk 2.7 ships wheels for CPython 3.5 and 3.6 only"),
    "theano": (">=3.6,<3.8", "Theano 1.0.5 with keras 2.3.1 needs the old numpy of Python 3.6/3.7"),
}
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FLOATX_VALUES = ("float16", "float32", "float64")
#: Variables a profile's `env` may not set: they change which code Python or the dynamic
#: loader picks up, for every program started from the environment.
CODE_LOADING_VARIABLES = frozenset(
    {
        "PATH",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "PYTHONEXECUTABLE",
        "PYTHONPLATLIBDIR",
        "PYTHONBREAKPOINT",
        "PYTHONINSPECT",
        "PYTHONSAFEPATH",
        "PYTHONNOUSERSITE",
    }
)
CODE_LOADING_PREFIXES = ("LD_", "DYLD_")
IMAGE_DATA_FORMATS = ("channels_last", "channels_first")

#: Distributions that provide each backend; a profile must list one of them.
BACKEND_PACKAGES: Mapping[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
    "theano": ("theano",),
    "cntk": ("cntk", "cntk-gpu"),
    "jax": ("jax", "jaxlib"),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "openvino": ("openvino",),
}

DEFAULTS: Mapping[str, Any] = {
    "description": "",
    "floatx": "float32",
    "image_data_format": "channels_last",
    "epsilon": 1e-07,
    "python": ">=3.10",
    "keras": ">=3,<4",
    "packages": [],
    "gpu": False,
    "index_url": None,
    "extra_index_urls": [],
    "find_links": [],
    "keras_package": "keras",
    "env": {},
    "smoke": "compute",
    "accelerator": None,
}
KNOWN_KEYS = ("backend", "generation", *DEFAULTS)
#: How a profile builds on another (folded in before validation: bootstrap/project.py).
EXTENDS_KEYS = ("extends", "remove_packages")


def _is_index_url(value: str) -> bool:
    """A package index as pip and uv take it: http(s) with a host, a file: URL, or a local
    folder laid out as one."""
    parsed = urlsplit(value)
    if parsed.scheme in ("http", "https"):
        return bool(parsed.netloc) and " " not in value
    if parsed.scheme == "file":
        return bool(parsed.path)
    return not parsed.scheme and Path(value).expanduser().is_dir()


def local_or_url(link: str, base: Path) -> str:
    """A find-links entry: a URL as it is, a local path made absolute against `base`."""
    if "://" in link:
        return link
    return str((base / Path(link).expanduser()).absolute())


def is_module_path(backend: str) -> bool:
    """True for an external Keras 2 backend: any module name Keras 2 can import
    (`importlib.import_module`, dotted or not) that is not a built-in backend."""
    return bool(_MODULE.match(backend)) and backend not in (*KERAS3_BACKENDS, *KERAS2_BACKENDS)


def near_known_backend(name: str) -> str | None:
    """A built-in backend that a plain module name looks like a typo of ("theeno")."""
    if "." in name:
        return None
    known = tuple(dict.fromkeys((*KERAS3_BACKENDS, *KERAS2_BACKENDS)))
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.75)
    return close[0] if close else None


def infer_generation(keras_package: str, keras: str) -> int | None:
    """2 or 3 from what the keras specifier allows; None when it allows both (or neither).

    Derived from the specifier itself: the versions it admits form intervals whose ends
    are the versions it names, so probing those versions, the ones just beside them and
    each generation's bounds decides it exactly (`==3.0.5` is Keras 3).
    """
    if canonicalize_name(keras_package) == "tf-keras":
        return 2
    spec = SpecifierSet(keras)
    allows = {
        candidate.major
        for candidate in _probe_versions(spec)
        if candidate.major in GENERATIONS and spec.contains(candidate, prereleases=True)
    }
    if len(allows) == 1:
        return allows.pop()
    return None


def _probe_versions(spec: SpecifierSet) -> set[Version]:
    texts = {f"{g}{tail}" for g in GENERATIONS for tail in ("", ".0.0", ".9999", ".9999.9999")}
    for clause in spec:
        try:
            named = Version(clause.version.removesuffix(".*"))
        except InvalidVersion:  # `===anything`: an arbitrary string, nothing to probe
            continue
        release = list(named.release)
        texts |= {str(named), named.base_version, f"{named.base_version}.1"}
        for index, part in enumerate(release):
            texts.add(".".join(map(str, [*release[:index], part + 1])))
            if part > 0:
                texts.add(".".join(map(str, [*release[:index], part - 1, 9999])))
    found = set()
    for text in texts:
        try:
            found.add(Version(text))
        except InvalidVersion:
            continue
    return found


@dataclass(frozen=True)
class Sources:
    """Where the installer looks for packages, beyond its default index."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    offline: bool = False  # only find_links; no index, no network

    def is_default(self) -> bool:
        return self == Sources()

    @classmethod
    def from_options(
        cls,
        index_url: str | None,
        extra_index_urls: Sequence[str] | None,
        find_links: Sequence[str] | None,
        *,
        cwd: Path,
        offline: bool = False,
    ) -> Sources | None:
        """The sources given on a command line (None: none given, the profile's own apply);
        a relative --find-links folder is relative to `cwd`."""
        if not (index_url or extra_index_urls or find_links or offline):
            return None
        if offline and (index_url or extra_index_urls):
            raise UsageError("--offline uses no index: give --find-links DIR only")
        for flag, url in [("--index-url", index_url), *(
            ("--extra-index-url", extra) for extra in extra_index_urls or ()
        )]:  # fmt: skip
            if url is not None and not _is_index_url(url):
                raise UsageError(
                    f"{flag} {redact(url)!r} is not a URL",
                    hint="give an index such as https://HOST/simple or file:///path/to/simple",
                )
        links = tuple(local_or_url(link, cwd) for link in find_links or ())
        for given, link in zip(find_links or (), links, strict=True):
            if "://" not in link and not Path(link).exists():
                raise UsageError(
                    f"--find-links {given}: no such folder ({link})",
                    hint="give a folder of wheels (as `kboot download` makes) or a URL",
                )
        return cls(index_url, tuple(extra_index_urls or ()), links, offline=offline)

    def redacted(self) -> dict[str, Any]:
        """The sources as kboot may write or print them: no credentials."""
        return {
            "index_url": redact(self.index_url) if self.index_url else None,
            "extra_index_urls": [redact(url) for url in self.extra_index_urls],
            "find_links": [redact(link) for link in self.find_links],
        }


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    backend: str
    description: str = ""
    floatx: str = "float32"
    image_data_format: str = "channels_last"
    epsilon: float = 1e-07
    python: str = ">=3.10"
    keras: str = ">=3,<4"
    packages: tuple[str, ...] = ()
    gpu: bool = False
    sources: Sources = field(default_factory=Sources)
    generation: int = 3
    keras_package: str = "keras"
    env: Mapping[str, str] = field(default_factory=dict)
    smoke: str = "compute"
    accelerator: str | None = None  # kboot picks the backend's build (cpu or cuda)
    #: a project profile: its project's name (its environments' name prefix) and table
    project: str | None = None
    table: str | None = None
    #: `create --editable`: the project folder installed into the environment, and a digest
    #: of its build files (a new dependency in pyproject.toml is a change to install)
    editable: str | None = None
    editable_digest: str | None = None
    #: the profiles it extends, nearest first, each with its file: where its values come
    #: from (`kboot show`), not what is built (so neither in `content()` nor in digests)
    extends: tuple[str, ...] = ()

    @property
    def default_env_name(self) -> str:
        """`<project>-<profile>` for a project's profile, so two projects' `dev` never
        meet; the profile's name otherwise."""
        return project_env_name(self.project, self.name) if self.project else self.name

    @property
    def keras_module(self) -> str:
        """The module the smoke test imports: `keras`, or `tf_keras` for tf-keras."""
        return canonicalize_name(self.keras_package).replace("-", "_")

    @property
    def external_backend(self) -> bool:
        return is_module_path(self.backend)

    @property
    def python_specifier(self) -> SpecifierSet:
        return SpecifierSet(self.python)

    def requirements(self) -> tuple[str, ...]:
        """What the installer gets: keras with the profile's specifier, then the packages."""
        return (f"{self.keras_package}{self.keras}", *self.packages)

    def keras_config(self) -> dict[str, Any]:
        """The keras.json values this profile owns."""
        return {
            "backend": self.backend,
            "floatx": self.floatx,
            "image_data_format": self.image_data_format,
            "epsilon": self.epsilon,
        }

    def content(self) -> dict[str, Any]:
        """Everything that decides what gets built (the name and file aside), with the
        credentials of index URLs masked: they say how to fetch, not what is built, and
        this is what records, `--json` and `show` carry."""
        data = asdict(self)
        del data["name"], data["path"], data["project"], data["table"], data["extends"]
        if data["editable"] is None:  # kept out unless used: older records' digests stay
            del data["editable"], data["editable_digest"]
        # offline is how this run installs, not what the profile is
        data["sources"] = self.sources.redacted()
        data["packages"] = [redact(package) for package in self.packages]  # `x @ https://...`
        data["env"] = dict(self.env)
        return data

    def digest(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        where: dict[str, Any] = {"table": self.table} if self.table else {}
        if self.extends:
            where["extends"] = list(self.extends)
        return {"name": self.name, "path": str(self.path), **where, **self.content()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "the recorded profile") -> Profile:
        """The inverse of `to_dict`, for a profile recorded in an environment: every field
        of the type `to_dict` writes, or a ProfileError naming `where` and the key."""

        def fail(key: str, wanted: str) -> ProfileError:
            return ProfileError(f"{where}: '{key}' is not {wanted}")

        if not isinstance(data, Mapping):
            raise ProfileError(f"{where}: not a table but {type(data).__name__}")
        for key in ("name", "path", "backend"):
            if key not in data:
                raise ProfileError(f"{where}: no '{key}'")
        values: dict[str, Any] = {}
        for key, kinds in _RECORDED_TYPES.items():
            if key not in data:
                continue
            value = data[key]
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                raise fail(key, " or ".join(kind.__name__ for kind in kinds))
            values[key] = value
        values["path"] = Path(values["path"])
        try:
            values["epsilon"] = float(values.get("epsilon", 1e-07))
        except OverflowError:  # an integer beyond any float
            raise fail("epsilon", "a number a float can hold") from None
        values["packages"] = _strings(data, "packages", fail)
        env = values.get("env", {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise fail("env", "a table of texts")
        raw_sources = values.pop("sources", None) or {}
        offline = raw_sources.get("offline", False)
        index_url = raw_sources.get("index_url")
        if not isinstance(offline, bool) or not (index_url is None or isinstance(index_url, str)):
            raise fail("sources", "a table of index_url, extra_index_urls and find_links")
        values["sources"] = Sources(
            index_url,
            _strings(raw_sources, "extra_index_urls", fail),
            _strings(raw_sources, "find_links", fail),
            offline,
        )
        return cls(**values)

    def with_sources(self, sources: Sources) -> Profile:
        return replace(self, sources=sources)


#: The type of each field `Profile.to_dict` writes, as JSON gives it back (`from_dict`).
_RECORDED_TYPES: Mapping[str, tuple[type, ...]] = {
    "name": (str,),
    "path": (str,),
    "backend": (str,),
    "description": (str,),
    "floatx": (str,),
    "image_data_format": (str,),
    "epsilon": (int, float),
    "python": (str,),
    "keras": (str,),
    "packages": (list, tuple),
    "gpu": (bool,),
    "sources": (dict, type(None)),
    "generation": (int,),
    "keras_package": (str,),
    "env": (dict,),
    "smoke": (str,),
    "accelerator": (str, type(None)),
    "project": (str, type(None)),
    "table": (str, type(None)),
    "editable": (str, type(None)),
    "editable_digest": (str, type(None)),
}


def _strings(
    data: Mapping[str, Any], key: str, fail: Callable[[str, str], ProfileError]
) -> tuple[str, ...]:
    """`data[key]` as a tuple of texts (none when missing), or `fail`."""
    value = data.get(key, ())
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise fail(key, "a list of texts")
    return tuple(value)


def nul_in_toml(text: str) -> tuple[int, str] | None:
    """Where text that should be TOML holds a NUL byte (line, and what to say), which
    tomllib reports only as some unexpected character; None: it holds none."""
    at = text.find("\0")
    if at < 0:
        return None
    line = text.count("\n", 0, at) + 1
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    return line, (
        f"a NUL byte at line {line}, column {column}: TOML is text and holds none (a binary "
        "file, or one saved half-written?)"
    )


def read_profile_data(path: Path) -> dict[str, Any]:
    """One profile file's table, or kboot's own error naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"profile file {path} does not exist") from None
    except ValueError as exc:  # a NUL in the path
        raise ProfileError(f"profile path {str(path)!r} is not a valid path: {exc}") from None
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
        return tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        nul = nul_in_toml(text)
        raise ProfileError(
            f"{path}: invalid TOML: {nul[1] if nul else exc}",
            hint="remove the NUL byte (an editor shows it as ^@)"
            if nul
            else "fix the syntax; see `kboot show numpy` for a model",
        ) from None
    except RecursionError:
        raise ProfileError(f"{path}: nested too deeply to be a profile") from None


def parse_profile(
    data: Mapping[str, Any], *, path: Path, name: str, where: str | None = None
) -> Profile:
    """Validate `data` (a profile file's table, or a project's `[tool.kboot.profiles.X]`:
    `where` then names the file and the table in every error)."""
    where = where or str(path)
    check = _Checker(where)
    unknown = [key for key in data if key not in KNOWN_KEYS]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, (*KNOWN_KEYS, *EXTENDS_KEYS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else None
        raise ProfileError(
            f"{where}: unknown key '{key}'; known keys: {', '.join((*KNOWN_KEYS, *EXTENDS_KEYS))}",
            hint=hint,
        )
    if "backend" not in data:
        raise ProfileError(
            f"{where}: missing required key 'backend'; allowed: {', '.join(KERAS3_BACKENDS)} "
            f"(Keras 3), or {', '.join(KERAS2_BACKENDS)} or a dotted module path (Keras 2)"
        )
    values = {**DEFAULTS, **data}

    floatx = check.choice("floatx", values["floatx"], FLOATX_VALUES)
    image_data_format = check.choice(
        "image_data_format", values["image_data_format"], IMAGE_DATA_FORMATS
    )
    epsilon = check.epsilon(values["epsilon"])
    python = check.specifier("python", values["python"])
    keras = check.specifier("keras", values["keras"])
    keras_package = check.string("keras_package", values["keras_package"])
    if canonicalize_name(keras_package) not in ("keras", "tf-keras"):
        raise check.fail("keras_package", keras_package, "keras or tf-keras")
    generation = _generation(check, data, keras_package, keras)
    backend = _backend(check, values["backend"], generation, keras)
    packages = check.requirements("packages", values["packages"])
    gpu = check.boolean("gpu", values["gpu"])
    index_url = values["index_url"]
    if index_url is not None:
        index_url = check.string("index_url", index_url)
    sources = Sources(
        index_url=index_url,
        extra_index_urls=check.strings("extra_index_urls", values["extra_index_urls"]),
        # a local folder in a profile is relative to the profile's own file
        find_links=tuple(
            local_or_url(link, path.parent)
            for link in check.strings("find_links", values["find_links"])
        ),
    )
    description = check.string("description", values["description"])
    env = check.env(values["env"])
    smoke = check.choice("smoke", values["smoke"], SMOKE_MODES)
    accelerator = values["accelerator"]
    if accelerator is not None:
        accelerator = check.choice("accelerator", accelerator, ACCELERATORS)
        if backend not in ACCELERATED_BACKENDS:
            raise check.fail(
                "accelerator",
                accelerator,
                "no accelerator key: kboot picks builds for "
                + ", ".join(ACCELERATED_BACKENDS)
                + " only",
            )
        if "gpu" in data:
            raise check.fail(
                "gpu",
                data["gpu"],
                "no gpu key with accelerator",
                "the accelerator decides it: a CUDA build needs a GPU, a CPU build does not",
            )

    names = {canonicalize_name(Requirement(p).name) for p in packages}
    if names & {"keras", "tf-keras"}:
        raise ProfileError(
            f"{where}: key 'packages' lists {keras_package}; give its version with the 'keras' "
            "key (and 'keras_package') instead",
            hint='for example: keras = ">=3.8,<4"',
        )
    if not is_module_path(backend) and accelerator is None:  # else kboot supplies it
        providers = BACKEND_PACKAGES[backend]
        if not names.intersection(providers):
            raise ProfileError(
                f"{where}: backend '{backend}' needs one of {', '.join(providers)} in 'packages'",
                hint=f'add it, for example: packages = ["{providers[0]}"]',
            )
    if backend in LEGACY_PYTHON:
        supported, why = LEGACY_PYTHON[backend]
        if not _overlaps(SpecifierSet(python), SpecifierSet(supported)):
            raise check.fail(
                "python", python, f"a range that includes Python {supported}", f"{why}"
            )
    return Profile(
        name=name,
        path=path,
        backend=backend,
        description=description,
        floatx=floatx,
        image_data_format=image_data_format,
        epsilon=epsilon,
        python=python,
        keras=keras,
        packages=packages,
        gpu=gpu,
        sources=sources,
        generation=generation,
        keras_package=keras_package,
        env=env,
        smoke=smoke,
        accelerator=accelerator,
    )


def _generation(check: _Checker, data: Mapping[str, Any], keras_package: str, keras: str) -> int:
    inferred = infer_generation(keras_package, keras)
    if "generation" not in data:
        if inferred is None:
            raise check.fail(
                "keras",
                keras,
                'a specifier for one Keras generation, e.g. ">=3.8,<4" or "==2.3.1"',
                "or say which one with generation = 2 or generation = 3",
            )
        return inferred
    generation = data["generation"]
    if isinstance(generation, bool) or generation not in GENERATIONS:
        raise check.fail("generation", generation, "2 (multi-backend Keras 2) or 3 (Keras 3)")
    if inferred is not None and inferred != generation:
        raise check.fail(
            "keras", keras, f"a Keras {generation} specifier, since generation = {generation}"
        )
    return int(generation)


def _backend(check: _Checker, value: object, generation: int, keras: str) -> str:
    if generation == 3:
        if value in KERAS3_BACKENDS:
            return str(value)
        if isinstance(value, str) and (
            value in KERAS2_BACKENDS or ("." in value and is_module_path(value))
        ):
            raise check.fail(
                "backend",
                value,
                f"a Keras 3 backend ({', '.join(KERAS3_BACKENDS)}) with keras {keras!r}",
                f"'{value}' is a Keras 2 backend: pin keras to 2.x (e.g. keras = \"==2.3.1\")",
            )
        return check.choice("backend", value, KERAS3_BACKENDS)
    if value in KERAS2_BACKENDS:
        return str(value)
    if isinstance(value, str) and is_module_path(value):
        near = near_known_backend(value)
        if near is None:
            return value  # an external backend module, checked after install
        raise check.fail(
            "backend",
            value,
            f"a Keras 2 backend ({', '.join(KERAS2_BACKENDS)}) or an external backend module",
            f"did you mean '{near}'? (a module of your own must not be named like a "
            "built-in backend)",
        )
    hint = None
    if value in KERAS3_BACKENDS:
        hint = f"'{value}' is a Keras 3 backend: use keras = \">=3.8,<4\""
    raise check.fail(
        "backend",
        value,
        f"a Keras 2 backend ({', '.join(KERAS2_BACKENDS)}) or a module name such as "
        "my_backend or my_package.my_backend",
        hint,
    )


def _overlaps(a: SpecifierSet, b: SpecifierSet) -> bool:
    """Whether two Python specifiers admit a common release (checked on 3.0 to 3.19)."""
    candidates = [f"3.{minor}.{micro}" for minor in range(20) for micro in (0, 5, 99)]
    return any(v in a and v in b for v in candidates)


@dataclass(frozen=True)
class _Checker:
    where: str  # the file (and table) being checked, for every message

    def fail(self, key: str, value: object, expected: str, hint: str | None = None) -> ProfileError:
        return ProfileError(
            f"{self.where}: key '{key}' has invalid value {value!r}; expected {expected}", hint=hint
        )

    def choice(self, key: str, value: object, allowed: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else None
            raise self.fail(key, value, "one of " + ", ".join(allowed), hint)
        return value

    def epsilon(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail("epsilon", value, "a positive number such as 1e-07")
        try:
            number = float(value)
        except OverflowError:  # an integer with hundreds of digits
            number = math.inf
        if not math.isfinite(number) or number <= 0:
            raise self.fail("epsilon", value, "a positive finite number such as 1e-07")
        return number

    def specifier(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise self.fail(key, value, 'a version specifier string such as ">=3.10"')
        try:
            SpecifierSet(value)
            return value.strip()
        except InvalidSpecifier:
            raise self.fail(key, value, 'a version specifier such as ">=3.10,<3.14"') from None

    def requirements(self, key: str, value: object) -> tuple[str, ...]:
        items = self.strings(key, value)
        for item in items:
            try:
                Requirement(item)
            except InvalidRequirement as exc:
                raise self.fail(
                    key, item, 'requirement strings such as "jax[cpu]>=0.4"', str(exc)
                ) from None
        return items

    def boolean(self, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, value, "true or false")
        return value

    def string(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise self.fail(key, value, "a string")
        return value

    def env(self, value: object) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.fail("env", value, 'a table such as env = { TF_USE_LEGACY_KERAS = "1" }')
        for key, item in value.items():
            if not _ENV_NAME.match(key) or not isinstance(item, str):
                raise self.fail(f"env.{key}", item, "a variable name with a string value")
            if key in ("KERAS_HOME", "KERAS_BACKEND") or key.startswith("_KBOOT"):
                raise self.fail(
                    f"env.{key}", item, "no KERAS_HOME or KERAS_BACKEND here", "kboot sets those"
                )
            if key in CODE_LOADING_VARIABLES or key.startswith(CODE_LOADING_PREFIXES):
                raise self.fail(
                    f"env.{key}",
                    item,
                    "a variable that does not change which code runs",
                    f"{key} decides what Python or the loader loads, for every program started "
                    "from the environment, so a profile may not set it; set it in your shell "
                    "if you need it",
                )
        return dict(value)

    def strings(self, key: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, value, "a list of strings")
        return tuple(value)


def project_env_name(project: str, profile: str) -> str:
    """The environment of a project's profile, so that two projects' `dev` never meet."""
    return f"{project}-{profile}"


def looks_like_path(ref: str) -> bool:
    return ref.endswith(".toml") or "/" in ref or "\\" in ref
