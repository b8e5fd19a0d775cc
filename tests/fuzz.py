"""Hypothesis strategies for hostile JSON: nested lists and objects, huge and non-finite numbers.

A client can put any JSON value in any field. ``json.dumps`` cannot write an integer of
more than 4300 digits (nor can ``json.loads`` read one), so :func:`dumps` writes them from a
placeholder: the text a hostile client would send.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st


@dataclass(frozen=True)
class Huge:
    """An integer literal of ``digits`` digits, written out by :func:`dumps`."""

    digits: int


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(), st.integers(), st.integers(min_value=10**30), st.integers(max_value=-(10**30)),
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -0.0, 24000.0, 16000.5]),
        st.text(max_size=12), st.sampled_from(["", "en", "xx", "pcm16", "audio/pcm", "pcm_s16le", "\x00", "é" * 3]),
        st.builds(Huge, st.sampled_from([4301, 5000, 20000])),
    )


def values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value: scalars, and lists and objects of them, nested."""
    return st.recursive(
        scalars(),
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=max_leaves,
    )


def shaped(tree: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with some of ``tree``'s keys; each value is the right shape or anything at all.

    ``tree`` maps a key to a sub-tree (a dict) or to None (a leaf).
    """
    optional = {key: values() if sub is None else st.one_of(shaped(sub), values()) for key, sub in tree.items()}
    return st.fixed_dictionaries({}, optional=optional)


def dumps(obj: Any) -> str:
    """JSON text of ``obj``, with :class:`Huge` written as its digits (NaN and Infinity allowed)."""
    huge: dict[str, int] = {}

    def default(value: Any) -> Any:
        if isinstance(value, Huge):
            marker = f"\x00huge{len(huge)}\x00"
            huge[marker] = value.digits
            return marker
        raise TypeError(type(value).__name__)

    text = json.dumps(obj, default=default)
    for marker, digits in huge.items():
        text = text.replace(json.dumps(marker), "9" * digits)
    return text
