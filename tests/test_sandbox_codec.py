"""The plain-data codec: what crosses from the candidate must come back as exact built-ins."""

from __future__ import annotations

import collections
import enum
import io
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "sandbox" / "container"))
import codec  # noqa: E402


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        10**40,
        1.5,
        -0.0,
        float("inf"),
        2 + 3j,
        "",
        "héllo\n\"'",
        b"\x00\xff",
        [1, [2, (3, "x")]],
        (1,),
        (),
        {"a": [1], 2: (3,), (1, 2): None},
        {1, 2, "x"},
        frozenset({1, (2, 3)}),
    ],
)
def test_round_trip_is_exact(value):
    back = codec.decode(codec.encode(value))
    assert back == value and type(back) is type(value)


def test_nan_round_trips():
    assert math.isnan(codec.decode(codec.encode(float("nan"))))


def test_subclasses_are_coerced_to_their_base_type():
    class Sneaky(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    Point = collections.namedtuple("Point", "x y")

    class Color(enum.IntEnum):
        RED = 1

    assert type(codec.decode(codec.encode(Sneaky(3)))) is int
    assert codec.decode(codec.encode(Sneaky(3))) != 4
    assert codec.decode(codec.encode(Point(1, 2))) == (1, 2)
    assert type(codec.decode(codec.encode(collections.OrderedDict(a=1)))) is dict
    assert codec.decode(codec.encode(Color.RED)) == 1


@pytest.mark.parametrize("value", [object(), lambda: 1, iter([1]), range(3), print])
def test_non_plain_values_are_refused(value):
    with pytest.raises(codec.CodecError):
        codec.encode(value)


@pytest.mark.parametrize(
    "payload",
    [
        b"__import__('os').system('true')",  # code is never run: literal_eval only
        b"{'ret': ['l', [" * 1000,  # truncated
        b"[1, 2]",  # not a dict
        b"{'ret': " + b"[" * 100_000 + b"]" * 100_000 + b"}",  # deep nesting
        b"\xff\xfe",
    ],
)
def test_hostile_messages_are_rejected(payload):
    with pytest.raises(codec.CodecError):
        codec.unpack_untrusted(payload)


@pytest.mark.parametrize(
    "data",
    [["?", "x"], ["i"], ["i", 5], ["f", "1" * 100], ["s", [["l", []]]], {"a": 1}, 3, ["d", [[1]]]],
)
def test_malformed_values_are_rejected(data):
    with pytest.raises((codec.CodecError, ValueError)):
        codec.decode(data)


def test_deep_values_are_rejected():
    deep: object = 1
    for _ in range(codec.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(codec.CodecError):
        codec.encode(deep)


def test_frames_respect_the_limit():
    stream = io.BytesIO()
    codec.write_frame(stream, b"x" * 100)
    stream.seek(0)
    with pytest.raises(codec.CodecError):
        codec.read_frame(stream, limit=10)
    stream.seek(0)
    assert codec.read_frame(stream, limit=100) == b"x" * 100
    assert codec.read_frame(stream, limit=100) is None
