"""impl/_codec.c against marshal: the boundary's C ends read and write the frames' common values themselves, so
what they read must be what marshal.loads reads from the same bytes (or left to marshal), and what they write
must be what marshal.loads reads back as the same value."""

from __future__ import annotations

import marshal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyhandoff.impl.boundary import native_frames

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**62 - 1, 2**63 - 1, 2**63, -(2**63), 0]),
    st.binary(max_size=40),
    st.text(max_size=8),
    st.floats(allow_nan=False),
    st.just({}),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3).map(tuple) | st.lists(inner, max_size=2))


@pytest.fixture(scope="module", autouse=True)
def _needs_the_extension() -> None:
    if native_frames() is None:  # a skip, which fails the run under CI=true (tests/conftest.py)
        pytest.skip("keyhandoff.impl._frames was not built (a C compiler and Python's headers)")


def same(a: object, b: object) -> bool:
    """Equal, and of the same types all the way down (True is not 1 here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple | list):
        assert isinstance(b, tuple | list)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def codec_read(data: bytes, depth: int) -> tuple[bool, object]:
    frames = native_frames()
    assert frames is not None
    return frames._codec_read(data, depth)


def codec_write(value: object, depth: int) -> bytes | None:
    frames = native_frames()
    assert frames is not None
    return frames._codec_write(value, depth)


def in_subset(value: object, depth: int) -> bool:
    """What the codec takes (impl/_codec.h)."""
    if value is None or type(value) is bool or type(value) is bytes:
        return True
    if type(value) is int:
        return -(2**63) < value < 2**63
    if type(value) is str:
        return value.isascii() and len(value) < 256
    if type(value) is tuple:
        return depth > 0 and len(value) < 256 and all(in_subset(v, depth - 1) for v in value)
    return type(value) is dict and not value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES, st.integers(0, 3), st.integers(0, 4))
def test_the_codec_reads_what_marshal_reads(value: object, depth: int, version: int) -> None:
    data = marshal.dumps(value, version)
    read, got = codec_read(data, depth)
    if read:
        assert same(got, marshal.loads(data))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES, st.integers(0, 3), st.data())
def test_on_damaged_bytes_the_codec_agrees_with_marshal_or_declines(
    value: object, depth: int, data: st.DataObject
) -> None:
    raw = bytearray(marshal.dumps(value))
    damage = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    at = data.draw(st.integers(0, len(raw) - 1))
    if damage == "flip":
        raw[at] ^= 1 << data.draw(st.integers(0, 7))
    elif damage == "cut":
        del raw[at:]
    else:
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=3))
    read, got = codec_read(bytes(raw), depth)
    if read:  # marshal must read the same (only then: on what the codec declines it may allocate gigabytes)
        assert same(got, marshal.loads(bytes(raw)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES, st.integers(0, 3))
def test_marshal_reads_what_the_codec_writes(value: object, depth: int) -> None:
    written = codec_write(value, depth)
    assert (written is not None) == in_subset(value, depth)
    if written is not None:
        assert same(marshal.loads(written), value)
        assert codec_read(written, depth) == (True, value)
        assert same(codec_read(written, depth)[1], value)


def test_the_frames_common_values_are_read_without_marshal() -> None:
    """What a handoff's request and reply carry, as marshal and Python's ends write them."""
    handle = (1 << 60) | 0x0123456789ABCDE
    blob = b"\x09\x02" + bytes(141)
    for value in [
        ("import_key", (handle, blob), {}),
        ("encrypt", (handle, bytes(16), False), {}),
        ("ok", handle),
        ("ok", b"x" * 16),
        ("ok", None),
    ]:
        assert codec_read(marshal.dumps(value), 2) == (True, value)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"r\x00\x00\x00\x00", "a reference"),
        (b"l\x06\x00\x00\x00" + b"\x01\x00" * 6, "more than 63 bits"),
        (b"l\x05\x00\x00\x00" + b"\x01\x00" * 4 + b"\x08\x00", "64 bits"),
        (b"l\x02\x00\x00\x00\x01\x00\x00\x00", "an unnormalized long"),
        (b"l\x01\x00\x00\x00\x00\x80", "a digit out of range"),
        (b"l\x00\x00\x00\x00", "a long of no digits"),
        (b"s\x05\x00\x00\x00abc", "too few bytes"),
        (b"s\xff\xff\xff\xff", "a negative length"),
        (b"{N0", "a dict with an item"),
        (b"g\x00\x00\x00\x00\x00\x00\xf0?", "a float"),
        (b")\x01)\x01N", "a tuple nested too deep"),
        (b"", "nothing"),
    ],
)
def test_the_codec_declines(data: bytes, why: str) -> None:
    assert codec_read(data, 1) == (False, None), why
