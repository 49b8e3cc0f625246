"""Shared Hypothesis strategies and independent oracles for the model tests.

The oracles compute expected bytes with ``cryptography`` directly (never with ``keyhandoff.model.ciphers``);
the blob builders write BLOBHEADERs by hand from the wincrypt.h layout.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4, RC2, TripleDES
from cryptography.hazmat.decrepit.ciphers.modes import CFB8
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import strategies as st

from keyhandoff import CryptError, model
from keyhandoff.model import wincrypt as w
from keyhandoff.model.world import Ok, Step, World
from keyhandoff.targets import load
from keyhandoff.targets.model_target import ModelTarget

# --- facts typed in from the reference (not read from the model) ------------------------------------------

BLOCK = {
    w.CALG_AES_128: 16,
    w.CALG_AES_192: 16,
    w.CALG_AES_256: 16,
    w.CALG_DES: 8,
    w.CALG_3DES_112: 8,
    w.CALG_3DES: 8,
    w.CALG_RC2: 8,
    w.CALG_RC4: 0,
}
KEY_BYTES = {
    w.CALG_AES_128: 16,
    w.CALG_AES_192: 24,
    w.CALG_AES_256: 32,
    w.CALG_DES: 8,
    w.CALG_3DES_112: 16,
    w.CALG_3DES: 24,
    w.CALG_RC2: 16,
    w.CALG_RC4: 16,
}
NATIVE_BLOCK_ALGS = (w.CALG_AES_128, w.CALG_AES_192, w.CALG_AES_256, w.CALG_DES, w.CALG_3DES_112, w.CALG_3DES)
ALL_ALGS = (*NATIVE_BLOCK_ALGS, w.CALG_RC2, w.CALG_RC4)
USABLE_MODES = (w.CRYPT_MODE_ECB, w.CRYPT_MODE_CBC, w.CRYPT_MODE_CFB)
DEFAULT_PERMISSIONS = 0x3B
PERM_EXPORT = 0x4


def new_target(seed: int | None = None) -> ModelTarget:
    """A fresh model installation through the public loader."""
    target = load("model", seed=seed) if seed is not None else load("model")
    assert isinstance(target, ModelTarget)
    return target


# --- blobs -------------------------------------------------------------------------------------------------


def header(blob_type: int, alg: int, *, version: int = 2, reserved: int = 0) -> bytes:
    """BLOBHEADER: bType u8, bVersion u8, reserved u16, aiKeyAlg u32, little-endian."""
    return struct.pack("<BBHI", blob_type, version, reserved, alg)


def plaintext_blob(alg: int, key: bytes, *, length: int | None = None, trailing: bytes = b"") -> bytes:
    """PLAINTEXTKEYBLOB = BLOBHEADER + u32 key length + key bytes (+ optional junk for refusal tests)."""
    size = len(key) if length is None else length
    return header(w.PLAINTEXTKEYBLOB, alg) + struct.pack("<I", size) + key + trailing


def import_plain(target: ModelTarget, prov: int, alg: int, key: bytes, flags: int = w.CRYPT_EXPORTABLE) -> int:
    return target.import_key(prov, plaintext_blob(alg, key), flags=flags)


# --- independent oracles (cryptography only) --------------------------------------------------------------


def _primitive(alg: int, key: bytes) -> Any:
    if alg in (w.CALG_AES_128, w.CALG_AES_192, w.CALG_AES_256):
        return algorithms.AES(key)
    if alg == w.CALG_DES:
        return TripleDES(key + key + key)
    if alg == w.CALG_3DES_112:
        return TripleDES(key + key[:8])
    if alg == w.CALG_3DES:
        return TripleDES(key)
    if alg == w.CALG_RC2:
        return RC2(key)  # cryptography: 16-byte key, effective length 128 bits only
    raise ValueError(alg)


def ref_crypt(
    alg: int, key: bytes, mode: int, register: bytes, data: bytes, *, decrypt: bool = False
) -> tuple[bytes, bytes]:
    """Expected output and next feedback register for ``data`` (whole blocks) from ``register``.

    CBC: the register becomes the last ciphertext block; CFB-8: the last block-length ciphertext bytes;
    ECB: the register is not touched.
    """
    if not data:
        return b"", register
    primitive = _primitive(alg, key)
    mode_obj: Any
    if mode == w.CRYPT_MODE_ECB:
        mode_obj = modes.ECB()
    elif mode == w.CRYPT_MODE_CBC:
        mode_obj = modes.CBC(register)
    elif mode == w.CRYPT_MODE_CFB:
        mode_obj = CFB8(register)
    else:
        raise ValueError(mode)
    cipher = Cipher(primitive, mode_obj)
    out = (cipher.decryptor() if decrypt else cipher.encryptor()).update(data)
    ciphertext = data if decrypt else out
    if mode == w.CRYPT_MODE_ECB:
        return out, register
    size = len(register)
    return out, (register + ciphertext)[-size:]


def pkcs5(data: bytes, size: int) -> bytes:
    pad = size - len(data) % size
    return data + bytes([pad]) * pad


def rc4_keystream(cipher_key: bytes, length: int) -> bytes:
    """RC4 keystream via cryptography's ARC4 (key sizes 40, 56, 64, 80, 128, 160, 192, 256 bits)."""
    return Cipher(ARC4(cipher_key), None).encryptor().update(bytes(length))


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


# --- strategies ----------------------------------------------------------------------------------------------

native_block_algs = st.sampled_from(NATIVE_BLOCK_ALGS)
usable_modes = st.sampled_from(USABLE_MODES)
chaining_modes = st.sampled_from((w.CRYPT_MODE_CBC, w.CRYPT_MODE_CFB))


def key_for(alg: int) -> st.SearchStrategy[bytes]:
    n = KEY_BYTES[alg]
    return st.binary(min_size=n, max_size=n)


@st.composite
def cuts(draw: st.DrawFn, length: int, step: int, *, allow_end: bool = True, min_cuts: int = 0) -> list[int]:
    """Chunk boundaries at multiples of ``step`` within [0, length] (``length`` excluded unless allow_end)."""
    top = length if allow_end else length - 1
    positions = list(range(0, top + 1, max(step, 1)))
    if not positions:
        return []
    chosen = draw(st.lists(st.sampled_from(positions), min_size=min_cuts, max_size=4, unique=True))
    return sorted(chosen)


# --- a random walk over the pure model operations ------------------------------------------------------------

GEN_FLAGS = st.sampled_from(
    [0, w.CRYPT_EXPORTABLE, w.CRYPT_NO_SALT, w.CRYPT_CREATE_SALT, 40 << 16, (40 << 16) | w.CRYPT_EXPORTABLE, 0x8]
)
WALK_ALGS = st.sampled_from((*ALL_ALGS, w.CALG_AES))
PARAMS = st.sampled_from(
    [
        (w.KP_IV, None),
        (w.KP_MODE, w.CRYPT_MODE_ECB),
        (w.KP_MODE, w.CRYPT_MODE_CFB),
        (w.KP_MODE, w.CRYPT_MODE_OFB),
        (w.KP_MODE_BITS, 64),
        (w.KP_PERMISSIONS, 0x3B),
        (w.KP_PERMISSIONS, 0x3F),
        (w.KP_SALT, bytes(range(1, 12))),
        (w.KP_SALT, b"\x01\x02\x03"),
        (w.KP_SALT_EX, b"\x01\x02\x03"),
        (w.KP_SALT_EX, b"x" * 25),
        (w.KP_EFFECTIVE_KEYLEN, 40),
        (w.KP_PADDING, 2),
        (w.KP_ALGID, 1),
    ]
)

operations = st.one_of(
    st.tuples(st.just("acquire"), st.sampled_from(list(model.Side))),
    st.tuples(st.just("release"), st.integers(0, 7)),
    st.tuples(
        st.just("gen"), st.integers(0, 7), WALK_ALGS, GEN_FLAGS, st.booleans(), st.binary(min_size=32, max_size=32)
    ),
    st.sampled_from(ALL_ALGS).flatmap(
        lambda alg: st.tuples(
            st.just("import_plain"),
            st.integers(0, 7),
            st.just(alg),
            st.one_of(key_for(alg), st.binary(min_size=4, max_size=33)),
            st.sampled_from([0, w.CRYPT_EXPORTABLE, w.CRYPT_IPSEC_HMAC_KEY, w.CRYPT_NO_SALT]),
            st.booleans(),
        )
    ),
    st.tuples(st.just("import_blob"), st.integers(0, 7), st.integers(0, 7), st.sampled_from([False, False, True])),
    st.tuples(
        st.just("export"),
        st.integers(0, 15),
        st.sampled_from([w.OPAQUEKEYBLOB, w.PLAINTEXTKEYBLOB, w.SIMPLEBLOB]),
        st.sampled_from([0, w.CRYPT_DESTROYKEY]),
    ),
    st.tuples(st.just("duplicate"), st.integers(0, 15)),
    st.tuples(st.just("destroy"), st.integers(0, 15)),
    st.tuples(
        st.sampled_from(["encrypt", "decrypt"]),
        st.integers(0, 15),
        st.sampled_from([0, 1, 8, 16, 17, 32]),
        st.booleans(),
    ),
    st.tuples(st.just("set"), st.integers(0, 15), PARAMS),
    st.tuples(st.just("get"), st.integers(0, 15), st.sampled_from([w.KP_IV, w.KP_SALT, w.KP_PERMISSIONS, 999])),
    st.tuples(st.just("hmac"), st.integers(0, 15), st.sampled_from([w.CALG_SHA1, w.CALG_MD5, 0x800D])),
    st.tuples(st.just("delete_token"), st.integers(0, 7)),
)


@attrs.define
class Walk:
    """Resolves the indices of a drawn operation to the handles, blobs and token objects seen so far."""

    providers: list[int] = attrs.Factory(list)
    keys: list[int] = attrs.Factory(list)
    blobs: list[bytes] = attrs.Factory(list)

    @staticmethod
    def pick(items: Sequence[Any], index: int, default: Any) -> Any:
        return items[index % len(items)] if items else default

    def apply(self, world: World, op: tuple[Any, ...]) -> Step[Any]:
        """Run ``op`` through the pure model functions and remember what it produced."""
        name = op[0]
        key = self.pick(self.keys, op[1], 4242) if len(op) > 1 and isinstance(op[1], int) else 0
        prov = self.pick(self.providers, op[1], 4343) if len(op) > 1 and isinstance(op[1], int) else 0
        step: Step[Any]
        calls: dict[str, Callable[[], Step[Any]]] = {
            "acquire": lambda: model.acquire(world, op[1]),
            "release": lambda: model.release(world, prov),
            "gen": lambda: model.gen_key(world, prov, op[2], op[3], hardware=op[4], entropy=op[5]),
            "import_plain": lambda: model.import_key(
                world, prov, plaintext_blob(op[2], op[3]), flags=op[4], hardware=op[5]
            ),
            "import_blob": lambda: model.import_key(
                world,
                prov,
                self.pick(self.blobs, op[2], b"") + (b"!" if op[3] else b""),
            ),
            "export": lambda: model.export_key(world, key, op[2], flags=op[3]),
            "duplicate": lambda: model.duplicate_key(world, key),
            "destroy": lambda: model.destroy_key(world, key),
            "encrypt": lambda: model.encrypt(world, key, bytes(op[2]), op[3]),
            "decrypt": lambda: model.decrypt(world, key, bytes(op[2]), op[3]),
            "set": lambda: model.set_key_param(world, key, op[2][0], self._param_value(world, key, op[2])),
            "get": lambda: model.get_key_param(world, key, op[2]),
            "hmac": lambda: model.hmac(world, key, op[2], b"data"),
            "delete_token": lambda: model.delete_token_object(world, self.pick(sorted(world.token), op[1], 4444)),
        }
        step = calls[name]()
        if isinstance(step.outcome, Ok):
            value = step.outcome.value
            if name == "acquire":
                self.providers.append(value)
            elif name in ("gen", "import_plain", "import_blob", "duplicate"):
                self.keys.append(value)
            elif name == "export" and op[2] == w.OPAQUEKEYBLOB:
                self.blobs.append(value)
        return step

    @staticmethod
    def _param_value(world: World, key: int, spec: tuple[int, Any]) -> Any:
        param, value = spec
        if param == w.KP_IV and value is None:
            entry = world.keys.get(key)
            size = BLOCK.get(entry.state.alg, 0) if entry is not None else 16
            return bytes(range(1, size + 1))
        return value


# --- refusal helper ---------------------------------------------------------------------------------------------


def assert_refused(target: ModelTarget, code: int, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``call`` raises CryptError(code) and leaves the whole installation exactly as it was."""
    before = target.world
    states = {h: e.state for h, e in before.keys.items()}
    with pytest.raises(CryptError) as err:
        call(*args, **kwargs)
    assert err.value.code == code, f"expected {w.describe_code(code)}, got {w.describe_code(err.value.code)}"
    assert target.world == before
    assert {h: target.inspect(h) for h in states} == states
