"""Random programs of CryptoAPI calls with arbitrary arguments: only CryptError ever escapes, and every live key
stays inspectable and consistent with its parameters."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.model.state import Location
from keyhandoff.targets.builtin_target import BuiltinTarget
from tests.impl.conftest import plaintext_blob

ALGS = [w.CALG_AES_128, w.CALG_AES_256, w.CALG_DES, w.CALG_3DES_112, w.CALG_3DES, w.CALG_RC2, w.CALG_RC4, w.CALG_AES]
FLAGS = [0, w.CRYPT_EXPORTABLE, w.CRYPT_NO_SALT, w.CRYPT_CREATE_SALT, 40 << 16, (56 << 16) | 1, 0x2, 0x100, -1]
PARAMS = [*range(0, 21), 0xFFFFFFFF]
DWORDS = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 40, 128, 1024, 1025, 0xFFFFFFFF]), st.integers(-3, 2**33))
VALUES = st.one_of(st.binary(max_size=30), DWORDS, st.none(), st.booleans())


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_random_programs_raise_only_crypt_errors(shared_target: BuiltinTarget, data: st.DataObject) -> None:
    """Sixty random calls with arbitrary arguments: CryptError or success, and live keys stay consistent."""
    csp = shared_target
    provs = [csp.acquire("secure"), csp.acquire("app")]
    keys: list[int] = []
    blobs: list[bytes] = []
    for _ in range(60):
        handle = data.draw(st.sampled_from([*keys, *provs, 0, 7]))
        op = data.draw(st.integers(0, 12))
        try:
            if op == 0:
                keys.append(
                    csp.gen_key(
                        data.draw(st.sampled_from(provs)),
                        data.draw(st.sampled_from(ALGS)),
                        data.draw(st.sampled_from(FLAGS)),
                        hardware=data.draw(st.sampled_from([False, False, False, True])),
                    )
                )
            elif op == 1:
                alg = data.draw(st.sampled_from(ALGS))
                blob = plaintext_blob(alg, data.draw(st.binary(min_size=0, max_size=40)))
                blob = data.draw(st.sampled_from([blob, *blobs]))
                keys.append(
                    csp.import_key(
                        data.draw(st.sampled_from(provs)),
                        blob,
                        flags=data.draw(st.sampled_from(FLAGS)),
                        hardware=data.draw(st.sampled_from([False, False, False, True])),
                    )
                )
            elif op == 2:
                blobs.append(
                    csp.export_key(
                        handle,
                        data.draw(st.sampled_from([w.OPAQUEKEYBLOB, w.PLAINTEXTKEYBLOB, w.SIMPLEBLOB])),
                        flags=data.draw(st.sampled_from([0, 0, w.CRYPT_DESTROYKEY, 0x1])),
                    )
                )
            elif op == 3:
                csp.destroy_key(handle)
            elif op == 4:
                keys.append(csp.duplicate_key(handle))
            elif op == 5:
                csp.set_key_param(handle, data.draw(st.sampled_from(PARAMS)), data.draw(VALUES))
            elif op == 6:
                csp.get_key_param(handle, data.draw(st.sampled_from(PARAMS)))
            elif op in (7, 8):
                call = csp.encrypt if op == 7 else csp.decrypt
                call(handle, data.draw(st.binary(max_size=40)), data.draw(st.booleans()))
            elif op == 9:
                csp.hmac(
                    handle, data.draw(st.sampled_from([w.CALG_SHA1, w.CALG_MD5, w.CALG_SHA_256, w.CALG_MAC])), b"m"
                )
            elif op == 10:
                csp.release(handle)
            elif op == 11:
                provs.append(csp.acquire(data.draw(st.sampled_from(["secure", "app", "neither"]))))
            else:
                csp.inspect(handle)
        except CryptError:
            pass
    for key in keys:
        state = csp.inspect(key)
        if not state.lifecycle.alive:
            assert (state.key, state.salt) == (b"", b"")
            continue
        assert csp.get_key_param(key, w.KP_IV) == state.iv
        assert csp.get_key_param(key, w.KP_MODE) == state.mode
        assert csp.get_key_param(key, w.KP_PERMISSIONS) == state.permissions
        assert (state.location is Location.HARDWARE) == (state.key == b"")
        assert len(state.register) == len(state.iv)
    for prov in provs:
        try:
            csp.release(prov)
        except CryptError as error:
            assert error.code == w.NTE_BAD_UID  # noqa: PT017 - released inside the program
