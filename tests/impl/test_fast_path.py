"""The per-call fast path of Csp.encrypt/decrypt agrees with the full rules (``_crypt``) call for call: same
bytes, same refusal code and operation, same state afterwards. The other side is a Csp whose ``_crypt`` is
overridden (so it never takes the fast path) driven by the same program on its own installation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff.impl.csp import Csp
from keyhandoff.impl.installation import Installation
from keyhandoff.impl.live_key import LiveKey
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from tests.impl.conftest import plaintext_blob, use_data_path


class FullPathCsp(Csp):
    """The reference rules only: overriding ``_crypt`` turns the fast path off."""

    def _crypt(self, key: int, data: bytes, final: bool, *, decrypt: bool) -> bytes:
        return super()._crypt(key, data, final, decrypt=decrypt)


# (alg, key bytes, import flags, hardware): block ciphers, RC2 (own loops), RC4, an HMAC-only key, hardware.
KEYS = (
    (w.CALG_AES_128, bytes(range(16)), 0, False),
    (w.CALG_3DES, bytes(range(24)), 0, False),
    (w.CALG_RC2, bytes(range(5)), 0, False),
    (w.CALG_RC4, bytes(range(16)), 0, False),
    (w.CALG_RC4, bytes(range(3)), w.CRYPT_IPSEC_HMAC_KEY, False),
    (w.CALG_AES_128, bytes(range(16)), 0, True),
)

Op = tuple[str, int, object, object]
MODES = [w.CRYPT_MODE_ECB, w.CRYPT_MODE_CBC, w.CRYPT_MODE_CFB, w.CRYPT_MODE_OFB, 99]


@st.composite
def ops(draw: st.DrawFn) -> Op:
    """Mostly encrypt/decrypt (any handle: beyond the keys come a destroyed key, the provider, True and a float;
    bytes of every length class or a bytearray; Final False, True or 0), sometimes a mode change or a destroy."""
    name = draw(st.sampled_from(["encrypt"] * 5 + ["decrypt"] * 4 + ["mode", "destroy"]))
    if name == "mode":
        return (name, draw(st.integers(0, len(KEYS) - 1)), draw(st.sampled_from(MODES)), None)
    if name == "destroy":
        return (name, draw(st.integers(0, len(KEYS) - 1)), None, None)
    data = draw(st.one_of(st.sampled_from([0, 1, 7, 8, 15, 16, 17, 32, 64]).map(bytes), st.just(bytearray(16))))
    return (name, draw(st.integers(0, len(KEYS) + 3)), data, draw(st.sampled_from([False, False, False, True, 0])))


@pytest.fixture(scope="module", params=["c", "python"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Csp, Csp]]:
    """The fast CSP and the full-rules one, both on the C data path or both on the Python one (the fast path
    in C, or in Python, against the full rules)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_data_path(str(request.param), monkeypatch)
        made = []
        for cls in (Csp, FullPathCsp):
            installation = Installation(tmp_path_factory.mktemp("home"))
            made.append((cls(installation), installation))
        yield made[0][0], made[1][0]
        for csp, installation in made:
            csp.close()
            installation.close()


def outcome(call: Callable[[], object]) -> object:
    try:
        return ("ok", call())
    except CryptError as error:
        return ("err", error.code, error.operation)


def handles(csp: Csp) -> list[Any]:
    prov = csp.acquire("secure")
    keys: list[Any] = [
        csp.import_key(prov, plaintext_blob(alg, key), flags=flags, hardware=hardware)
        for alg, key, flags, hardware in KEYS
    ]
    dead = csp.import_key(prov, plaintext_blob(w.CALG_AES_128, bytes(16)))
    csp.destroy_key(dead)
    return [*keys, dead, prov, True, float(keys[0])]


def run(csp: Csp, keys: list[Any], op: Op) -> object:
    name, index, arg, final = op
    key = keys[index]
    if name == "mode":
        return outcome(lambda: csp.set_key_param(key, w.KP_MODE, arg))
    if name == "destroy":
        return outcome(lambda: csp.destroy_key(key))
    method = csp.encrypt if name == "encrypt" else csp.decrypt
    return outcome(lambda: method(key, arg, final))


def states(csp: Csp, keys: list[Any]) -> list[object]:
    return [outcome(lambda key=key: csp.inspect(key)) for key in keys[: len(KEYS)]]


def test_the_reference_csp_takes_the_fast_path_and_overrides_do_not(
    pair: tuple[Csp, Csp], request: pytest.FixtureRequest
) -> None:
    """A subclass overriding ``_crypt`` or ``_live`` (the mutants do) always gets the full rules."""
    fast, full = pair
    assert fast._fast
    assert not full._fast
    # On the C data path encrypt is the C fast path's (falling back to Csp.encrypt); on the Python one, Csp's own.
    c_path = type(getattr(fast.encrypt, "__self__", None)).__name__ == "FastCrypt"
    assert c_path == (request.node.callspec.params["pair"] == "c")
    assert type(getattr(full.encrypt, "__self__", None)) is FullPathCsp


@settings(max_examples=200, deadline=None)
@given(st.lists(ops(), min_size=1, max_size=40))
def test_fast_path_agrees_with_the_full_rules(pair: tuple[Csp, Csp], program: list[Op]) -> None:
    """Every call's outcome and every key's state afterwards are the same with and without the fast path."""
    fast, full = pair
    fast_keys, full_keys = handles(fast), handles(full)
    for op in program:
        got, want = run(fast, fast_keys, op), run(full, full_keys, op)
        assert got == want, op
    assert states(fast, fast_keys) == states(full, full_keys)


def test_fast_path_after_a_deleted_token_object(pair: tuple[Csp, Csp]) -> None:
    """A hardware key takes the fast path for non-empty whole blocks (the token answers for a gone object): a
    deleted token object is NTE_NOT_FOUND under the call's name, as the rules say, and empty data (which never
    reaches the token) too."""
    fast, _ = pair
    prov = fast.acquire("secure")
    key = fast.import_key(prov, plaintext_blob(w.CALG_AES_128, bytes(16)), hardware=True)
    assert len(fast.encrypt(key, bytes(16), False)) == 16
    entry = fast._handles.get(key)
    assert isinstance(entry, LiveKey)
    fast.token.delete(entry.token_object)
    for call, data in ((fast.encrypt, bytes(16)), (fast.decrypt, bytes(32)), (fast.encrypt, b""), (fast.decrypt, b"")):
        with pytest.raises(CryptError) as caught:
            call(key, data, False)
        assert (caught.value.code, caught.value.operation) == (w.NTE_NOT_FOUND, call.__name__)
