"""Known-answer vectors through the model target: whole, chunked, across an opaque handoff, via a duplicate."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff.model import wincrypt as w
from keyhandoff.model.ciphers import block_cipher
from keyhandoff.vectors import Vector, load_vectors, matches, run_stream
from tests.strategies import cuts, new_target

VECTORS = load_vectors()
IDS = [v.id for v in VECTORS]
SHIPPED = Path(__file__).resolve().parents[2] / "keyhandoff" / "data" / "kat.json"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "kat.json"


def _for_direction(vector: Vector, decrypt: bool) -> Vector:
    """A keystream vector has no ciphertext: decrypting its zero plaintext must also give the keystream."""
    if decrypt and vector.stream:
        return attrs.evolve(vector, ciphertext=vector.plaintext)
    return vector


def _input(vector: Vector, decrypt: bool) -> bytes:
    return vector.api_part(vector.ciphertext if decrypt else vector.plaintext)


@st.composite
def plans(draw: st.DrawFn, vector: Vector, decrypt: bool, *, min_cuts: int = 0) -> list[int]:
    """Cuts at block multiples; only the last chunk may be ragged, and a Final decrypt never ends empty."""
    data = _input(vector, decrypt)
    allow_end = not (decrypt and vector.final)
    return draw(cuts(len(data), vector.block, allow_end=allow_end, min_cuts=min_cuts))


def test_vectors_are_loaded() -> None:
    """The shipped file holds vectors for every algorithm family the model runs."""
    algs = {v.alg for v in VECTORS}
    assert {w.CALG_AES_128, w.CALG_DES, w.CALG_3DES_112, w.CALG_RC2, w.CALG_RC4} <= algs
    assert len(VECTORS) >= 10


def test_shipped_kat_equals_shared_kat() -> None:
    """keyhandoff/data/kat.json is byte for byte the shared vector file."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is not present")
    assert SHIPPED.read_bytes() == SHARED.read_bytes()


@pytest.mark.parametrize("decrypt", [False, True], ids=["encrypt", "decrypt"])
@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_whole_vector(vector: Vector, decrypt: bool) -> None:
    """The whole vector in one call gives the expected bytes."""
    vector = _for_direction(vector, decrypt)
    out = run_stream(new_target(), vector, decrypt=decrypt)
    assert matches(vector, out, decrypt=decrypt)


def test_whole_vector_can_fail() -> None:
    """matches() rejects a wrong output, so the vector tests can fail."""
    vector = next(v for v in VECTORS if v.ciphertext)
    out = run_stream(new_target(), vector)
    assert not matches(vector, bytes([out[0] ^ 1]) + out[1:])


@pytest.mark.parametrize("decrypt", [False, True], ids=["encrypt", "decrypt"])
@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
@settings(max_examples=8)
@given(data=st.data())
def test_random_chunk_splits(vector: Vector, decrypt: bool, data: st.DataObject) -> None:
    """Any split at block multiples (Final only on the last chunk) gives the vector's bytes."""
    vector = _for_direction(vector, decrypt)
    chosen = data.draw(plans(vector, decrypt), label="cuts")
    out = run_stream(new_target(), vector, decrypt=decrypt, cuts=chosen)
    assert matches(vector, out, decrypt=decrypt)


@pytest.mark.parametrize("action", ["handoff", "duplicate"])
@pytest.mark.parametrize("decrypt", [False, True], ids=["encrypt", "decrypt"])
@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
@settings(max_examples=6)
@given(data=st.data())
def test_move_mid_stream(vector: Vector, decrypt: bool, action: str, data: st.DataObject) -> None:
    """An OPAQUEKEYBLOB handoff (or a duplicate) at a random chunk boundary does not change the bytes."""
    vector = _for_direction(vector, decrypt)
    chosen = data.draw(plans(vector, decrypt, min_cuts=1), label="cuts")
    boundaries = len(chosen)  # pieces = cuts + 1; a move after piece i < pieces - 1 is mid-stream
    at = data.draw(st.integers(0, boundaries - 1), label="move after chunk")
    actions = [None] * at + [action]
    out = run_stream(new_target(), vector, decrypt=decrypt, cuts=chosen, actions=actions)
    assert matches(vector, out, decrypt=decrypt)


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
@settings(max_examples=6)
@given(data=st.data())
def test_mixed_moves_at_every_boundary(vector: Vector, data: st.DataObject) -> None:
    """Handoffs and duplicates at several boundaries, in both directions, still give the vector's bytes."""
    decrypt = data.draw(st.booleans(), label="decrypt")
    vector = _for_direction(vector, decrypt)
    chosen = data.draw(plans(vector, decrypt, min_cuts=1), label="cuts")
    actions = data.draw(
        st.lists(st.sampled_from([None, "handoff", "duplicate"]), min_size=len(chosen) + 1, max_size=len(chosen) + 1),
        label="actions",
    )
    out = run_stream(new_target(), vector, decrypt=decrypt, cuts=chosen, actions=actions)
    assert matches(vector, out, decrypt=decrypt)


def test_sp800_38a_cfb8_18_bytes_through_the_mode_engine() -> None:
    """The 18-byte SP 800-38A F.3.7 CFB-8 vector runs whole through block_cipher; the register is the last 16."""
    vector = next(v for v in VECTORS if v.id == "sp800-38a-F.3.7-cfb8-aes128")
    assert vector.iv is not None
    assert len(vector.plaintext) == 18
    out, register = block_cipher(
        w.CALG_AES_128, vector.key, 128, w.CRYPT_MODE_CFB, vector.iv, vector.plaintext, decrypt=False
    )
    assert out == vector.ciphertext == bytes.fromhex("3b79424c9c0dd436bace9e0ed4586a4f32b9")
    assert register == vector.ciphertext[-16:]
    back, register_back = block_cipher(
        w.CALG_AES_128, vector.key, 128, w.CRYPT_MODE_CFB, vector.iv, vector.ciphertext, decrypt=True
    )
    assert back == vector.plaintext
    assert register_back == register
