"""Random CryptoAPI programs for lockstep tests: a Hypothesis strategy and an interpreter over Lockstep.

An op names keys, providers and blobs by index into what exists so far (modulo), so every generated program
is runnable and shrinks well.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from keyhandoff.lockstep import Lockstep
from keyhandoff.machine import DEFAULT_KEY_BYTES, GETTABLE_PARAMS
from keyhandoff.model import wincrypt as w

ALGS = list(DEFAULT_KEY_BYTES)
KEY_BYTES = DEFAULT_KEY_BYTES
MODES = [w.CRYPT_MODE_CBC, w.CRYPT_MODE_ECB, w.CRYPT_MODE_CFB, w.CRYPT_MODE_OFB, w.CRYPT_MODE_CTS, 9]
PARAMS = [*GETTABLE_PARAMS, 77]
HASHES = [w.CALG_MD5, w.CALG_SHA1, w.CALG_SHA_256, w.CALG_MAC]

idx = st.integers(0, 50)
Op = tuple[Any, ...]

ops: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("acquire"), st.sampled_from(["secure", "app"])),
    st.tuples(
        st.just("import"),
        idx,
        st.sampled_from(ALGS),
        st.sampled_from([0, 0, -1, 5, 7]),
        st.sampled_from([0, w.CRYPT_EXPORTABLE, w.CRYPT_NO_SALT, 0x8000]),
        st.booleans(),
        st.binary(min_size=32, max_size=32),
    ),
    st.tuples(
        st.just("gen"),
        idx,
        st.sampled_from([*ALGS, w.CALG_AES, 0x1234]),
        st.sampled_from([0, w.CRYPT_EXPORTABLE, w.CRYPT_CREATE_SALT, 40 << 16, 56 << 16, 0x20]),
        st.booleans(),
    ),
    st.tuples(
        st.just("export"),
        idx,
        st.sampled_from([w.OPAQUEKEYBLOB, w.OPAQUEKEYBLOB, w.PLAINTEXTKEYBLOB, w.SIMPLEBLOB]),
        st.sampled_from([0, 0, w.CRYPT_DESTROYKEY, 0x100]),
    ),
    st.tuples(
        st.just("import_blob"),
        idx,
        idx,
        st.sampled_from(["none", "none", "truncate", "flip", "append"]),
        idx,
        st.sampled_from([0, w.CRYPT_EXPORTABLE]),
    ),
    st.tuples(st.just("handoff"), idx, idx),
    st.tuples(st.just("destroy"), idx),
    st.tuples(st.just("dup"), idx),
    st.tuples(
        st.just("set"),
        idx,
        st.sampled_from(PARAMS),
        st.one_of(st.sampled_from(MODES), st.integers(0, 2000), st.sampled_from([w.CRYPT_EXPORT, 0x3B, 0x3F, 0])),
        st.binary(max_size=26),
        st.booleans(),
    ),
    st.tuples(st.just("get"), idx, st.sampled_from(PARAMS)),
    st.tuples(
        st.just("crypt"),
        idx,
        st.integers(0, 5),
        st.sampled_from([0, 0, 1, 3]),
        st.booleans(),
        st.booleans(),
        st.binary(min_size=80, max_size=80),
    ),
    st.tuples(st.just("hmac"), idx, st.sampled_from(HASHES), st.binary(max_size=40)),
    st.tuples(st.just("release"), idx),
)

_crypt = st.tuples(
    st.just("crypt"),
    idx,
    st.integers(0, 5),
    st.sampled_from([0, 0, 1, 3]),
    st.booleans(),
    st.booleans(),
    st.binary(min_size=80, max_size=80),
)
programs = st.lists(st.one_of(ops, _crypt, _crypt), min_size=3, max_size=40)


def _edit(kind: str, n: int) -> tuple[str | int, ...] | None:
    if kind == "truncate":
        return ("truncate", n)
    if kind == "flip":
        return ("flip", n)
    if kind == "append":
        return ("append", "00")
    return None


def run(ls: Lockstep, program: list[Op], *, hardware: bool = True, check_each_step: bool = True) -> None:
    """Interpret ``program`` on ``ls``; a Divergence propagates. Starts with one provider per side."""
    ls.acquire("secure")
    ls.acquire("app")
    ls.import_plaintext(0, w.CALG_AES_128, 0, 16, w.CRYPT_EXPORTABLE)
    ls.import_plaintext(0, w.CALG_RC4, 1, 5)
    for op in program:
        kind = op[0]
        nkeys, nprov, nblob = len(ls.keys), len(ls.providers), len(ls.blobs)
        if kind == "acquire":
            ls.acquire(op[1])
        elif kind == "import":
            _, p, alg, delta, seed, flags, hw = op
            size = KEY_BYTES[alg] + (delta if delta in (-1,) else 0)
            if delta in (5, 7) and alg in (w.CALG_RC2, w.CALG_RC4):
                size = delta
            ls.import_plaintext(p % nprov, alg, seed, size, flags, hardware=hw and hardware)
        elif kind == "gen":
            _, p, alg, flags, hw = op
            ls.gen_key(p % nprov, alg, flags, hardware=hw and hardware)
        elif kind == "export" and nkeys:
            ls.export_key(op[1] % nkeys, op[2], op[3])
        elif kind == "import_blob" and nblob:
            _, p, b, edit, n, flags = op
            ls.import_blob(p % nprov, b % nblob, flags=flags, edit=_edit(edit, n))
        elif kind == "handoff" and nkeys:
            key = op[1] % nkeys
            blob = ls.export_key(key, w.OPAQUEKEYBLOB)
            ls.destroy_key(key)
            if isinstance(blob, int):
                ls.import_blob(op[2] % nprov, blob)
        elif kind == "destroy" and nkeys:
            ls.destroy_key(op[1] % nkeys)
        elif kind == "dup" and nkeys:
            ls.duplicate_key(op[1] % nkeys)
        elif kind == "set" and nkeys:
            _, k, param, number, raw, as_block = op
            value: bytes | int = number
            if param in (w.KP_IV, w.KP_SALT, w.KP_SALT_EX):
                value = raw
                if param == w.KP_IV and as_block:  # usually a whole block, sometimes a wrong length
                    value = raw[: len(ls.model.inspect(ls.keys[k % nkeys].model).iv)]
                elif param == w.KP_SALT and as_block:  # KP_SALT takes exactly 11 bytes; other lengths are refused
                    value = raw.ljust(11, b"\0")[:11]
            ls.set_key_param(k % nkeys, param, value)
        elif kind == "get" and nkeys:
            ls.get_key_param(op[1] % nkeys, op[2])
        elif kind == "crypt" and nkeys:
            _, k, blocks, extra, final, decrypt, data = op
            (ls.decrypt if decrypt else ls.encrypt)(k % nkeys, data[: blocks * 16 + extra], final)
        elif kind == "hmac" and nkeys:
            ls.hmac(op[1] % nkeys, op[2], op[3])
        elif kind == "release" and nprov > 2:
            ls.release(op[1] % nprov)
        if check_each_step:
            ls.check_states()
    ls.check_states()
