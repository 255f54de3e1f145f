"""A hypothesis strategy for what a damaged file holds: a document kboot wrote, with one
value somewhere inside it (at any depth) replaced by a value of any JSON type, or removed.

Random JSON rarely looks like a record; starting from a real one reaches the nested
fields that a parser must check too (a record's `profile.path`, `smoke.devices`...).
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["", "\0", "..", "/", "3.x", "x.y.z", "\u0661.\u0662", "-1.-2", "/tmp/x"])
)
JSON = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside `value` (dict keys and list indexes), at any depth."""
    found: list[tuple[Any, ...]] = []
    children = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in children:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


@st.composite
def damaged(draw: st.DrawFn, document: Any, max_edits: int = 2) -> Any:
    """`document` with up to `max_edits` values at any depth replaced or removed (each
    place equally likely, so a nested field is as likely as a top-level one)."""
    value = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, max_edits))):
        places = paths(value)
        if not places:
            return draw(JSON)
        *parents, last = draw(st.sampled_from(places))
        holder = value
        for key in parents:
            holder = holder[key]
        if isinstance(holder, dict) and draw(st.booleans()):
            del holder[last]
        else:
            holder[last] = draw(JSON)
    return value
