"""What every command module shares: the typer app and its groups, the options declared
once, completion, and the JSON printer."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
import typer.core

from bootstrap.system.errors import (
    KbootError,
)

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 the operation failed (install, smoke test, I/O); "
    "2 bad usage or a bad profile; 130 interrupted (Ctrl-C), everything rolled back."
)

# typer's help shows the Python type after each argument (`PROFILE <str>`), braces
# around required ones in the usage line (`{PROFILE}`) and click's ranges (`[x>=1]`):
# noise to a reader. The help text is cleaned of them once it is formatted.
_TYPE_AFTER_NAME = re.compile(r" <(?:str|int|float|path|bool|list\[(?:str|path|int)\])>")
_BRACED_METAVAR = re.compile(r"\{([A-Z][A-Z0-9_|=.\[\]]*)\}")
_RANGE = re.compile(r"\s*\[(?:x[<>]=?-?[\d.]+|-?[\d.]+<=?x(?:<=?-?[\d.]+)?)\]")


def clean_help(text: str) -> str:
    lines = []
    for line in text.splitlines():
        # the type gives way to spaces: the help column stays where click put it
        typeless = _TYPE_AFTER_NAME.sub(lambda found: " " * len(found.group()), line)
        cleaned = _RANGE.sub("", _BRACED_METAVAR.sub(r"\1", typeless))
        if cleaned.strip() or not line.strip():  # drop a line that held only a range
            lines.append(cleaned.rstrip())
    return "\n".join(lines)


class Command(typer.core.TyperCommand):
    def get_help(self, ctx: Any) -> str:  # click's Context (typer >= 0.28 vendors click)
        return clean_help(super().get_help(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """An argument that takes several values is `[PROFILE]...` (optional) or `ENV...`
        (required: typer writes `{ENV}`, which clean_help unbraces), whichever typer renders
        it (0.28 drops the dots)."""
        several = set()
        for param in self.get_params(ctx):
            if getattr(param, "nargs", 1) == -1 and param.metavar:
                several.add(f"{{{param.metavar}}}" if param.required else f"[{param.metavar}]")
        return [f"{piece}..." if piece in several else piece
                for piece in super().collect_usage_pieces(ctx)]  # fmt: skip


class Group(typer.core.TyperGroup):
    def get_help(self, ctx: Any) -> str:  # click's Context (typer >= 0.28 vendors click)
        return clean_help(super().get_help(ctx))


app = typer.Typer(
    name="kboot",
    cls=Group,
    help="Create verified Keras environments from declarative profiles.\n\n"
    "Example: kboot create numpy   (virtualenv + backend + keras.json + smoke test)\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(
    cls=Group,
    help="Show or safely edit a keras.json (validate, merge, atomic write, backup).",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")


def complete_profiles(incomplete: str) -> list[str]:
    """Shell completion: the profile names this folder sees."""
    from bootstrap.profiles.catalog import catalog

    try:
        return [name for name in catalog().names() if name.startswith(incomplete)]
    except KbootError:
        return []


def complete_envs(incomplete: str) -> list[str]:
    """Shell completion: the environments in kboot's home."""
    from bootstrap.system.paths import envs_dir

    try:
        found = sorted(p.name for p in envs_dir().iterdir() if (p / "kboot-env.json").is_file())
    except OSError:
        return []
    return [name for name in found if name.startswith(incomplete)]


def complete_choices(*choices: str) -> Callable[[str], list[str]]:
    """Shell completion of an option that takes one of `choices` (--installer uv|pip)."""

    def complete(incomplete: str) -> list[str]:
        return [choice for choice in choices if choice.startswith(incomplete)]

    return complete


def complete_assignments(ctx: Any, incomplete: str) -> list[str]:  # click's Context
    """Shell completion of `kboot config set KEY=VALUE`: the keys, then each key's values.
    bash splits a word at `=` (its COMP_WORDBREAKS): `floatx=fl` arrives as the words
    `floatx`, `=` and the incomplete `fl`, and the reply replaces `fl` only."""
    from bootstrap.profiles.keras_json import SETTABLE_KEYS, VALUES_OF

    args = list(ctx.params.get("assignments") or ())  # the words before, parsed leniently

    def values(key: str, typed: str, before: str) -> list[str]:
        return [f"{before}{v}" for v in VALUES_OF.get(key, ()) if v.startswith(typed)]

    if len(args) >= 2 and args[-1] == "=":  # bash: KEY, =, then the value begun
        return values(args[-2], incomplete, "")
    if not incomplete and args and args[-1] in SETTABLE_KEYS:  # bash, just after KEY=
        return values(args[-1], "", "")  # (click drops a lone `=`; readline inserts after it)
    if "=" in incomplete:  # zsh, fish: the whole word
        key, _, typed = incomplete.partition("=")
        return values(key, typed, f"{key}=")
    return [f"{key}=" for key in SETTABLE_KEYS if key.startswith(incomplete)]


ExtraIndexUrlOpt = Annotated[
    list[str] | None, typer.Option(metavar="URL", help="Extra package index (repeatable).")
]
FindLinksOpt = Annotated[
    list[str] | None,
    typer.Option(metavar="PATH|URL", help="Local wheel folder or URL (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
AllowCpuOpt = Annotated[
    bool, typer.Option(help="Let a GPU profile pass when the backend sees no GPU.")
]
AcceleratorOpt = Annotated[
    str | None,
    typer.Option(
        metavar="auto|cpu|cuda|cuda-12|cuda-13",
        autocompletion=complete_choices("auto", "cpu", "cuda", "cuda-12", "cuda-13"),
        help="Which build of TensorFlow, JAX or PyTorch: auto reads the NVIDIA driver "
        "(default for the tf, jax and torch profiles); cuda picks the newest CUDA the driver "
        "runs. Default: the profile's accelerator.",
    ),
]
WaitOpt = Annotated[
    float,
    typer.Option(
        metavar="SECONDS",
        min=0,
        help="Wait this long for another kboot working on the same environment "
        "(cron and Ansible overlapping) instead of failing at once.",
    ),
]
JobsOpt = Annotated[
    int | None, typer.Option(min=1, metavar="N", help="How many environments to build at once.")
]


def emit_json(data: Any) -> None:
    from bootstrap.system.redaction import redact

    # kboot's results carry no credentials; this catches any that an error message quotes
    sys.stdout.write(redact(json.dumps(data, indent=2, default=str)) + "\n")
