"""A complete adapter: a vendor CSP with its own API and errors, exposed to keyhandoff as a Target.

``VendorCsp`` stands for your CSP (in real life: ctypes over advapi32, a vendor SDK, an RPC client). So that
this example runs anywhere, it delegates to keyhandoff's reference CSP; the adapter below is what you write.

Run it:  python -m pytest docs/examples/vendor_adapter.py   or
         keyhandoff check --target python:vendor_adapter:make_target   (from this folder, or with it on PYTHONPATH)
"""

from __future__ import annotations

import shutil
import tempfile

from keyhandoff import Capabilities, CryptError, run_conformance
from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.model import wincrypt as w


class VendorError(Exception):
    """The vendor SDK's error: carries the HRESULT / GetLastError() value."""

    def __init__(self, hresult: int) -> None:
        super().__init__(hex(hresult))
        self.hresult = hresult


class VendorCsp:
    """Your CSP, with its own names. (Here: the reference CSP underneath, errors re-raised as VendorError.)"""

    def __init__(self) -> None:
        self.home = tempfile.mkdtemp(prefix="vendor-csp-")
        self._csp = BuiltinCsp(self.home)

    def __getattr__(self, name: str) -> object:
        method = getattr(
            self._csp,
            {
                "open_context": "acquire",
                "close_context": "release",
                "make_key": "gen_key",
                "load_blob": "import_key",
                "save_blob": "export_key",
                "free_key": "destroy_key",
                "clone_key": "duplicate_key",
                "set_param": "set_key_param",
                "get_param": "get_key_param",
                "mac": "hmac",
            }.get(name, name),
        )

        def call(*args: object, **kwargs: object) -> object:
            try:
                return method(*args, **kwargs)
            except CryptError as err:
                raise VendorError(err.code) from None

        return call

    def shutdown(self) -> None:
        self._csp.close()
        shutil.rmtree(self.home, ignore_errors=True)


class VendorTarget:
    """The adapter: the Target protocol's methods, each one call into the vendor API, errors mapped."""

    def __init__(self) -> None:
        self.csp = VendorCsp()

    def _call(self, name: str, *args: object, **kwargs: object) -> object:
        try:
            return getattr(self.csp, name)(*args, **kwargs)
        except VendorError as err:
            raise CryptError(err.hresult, name) from None  # one error type, the CryptoAPI code

    def acquire(self, side: str = "secure") -> int:
        return int(self._call("open_context", side))  # type: ignore[call-overload]

    def release(self, prov: int) -> None:
        self._call("close_context", prov)

    def gen_key(self, prov: int, alg: int, flags: int = 0, *, hardware: bool = False) -> int:
        return int(self._call("make_key", prov, alg, flags, hardware=hardware))  # type: ignore[call-overload]

    def import_key(self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False) -> int:
        handle = self._call("load_blob", prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)
        return int(handle)  # type: ignore[call-overload]

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        return bytes(self._call("save_blob", key, blob_type, exp_key=exp_key, flags=flags))  # type: ignore[call-overload]

    def destroy_key(self, key: int) -> None:
        self._call("free_key", key)

    def duplicate_key(self, key: int) -> int:
        return int(self._call("clone_key", key))  # type: ignore[call-overload]

    def set_key_param(self, key: int, param: int, value: bytes | int) -> None:
        self._call("set_param", key, param, value)

    def get_key_param(self, key: int, param: int) -> bytes | int:
        return self._call("get_param", key, param)  # type: ignore[return-value]

    def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
        return bytes(self._call("encrypt", key, data, final))  # type: ignore[call-overload]

    def decrypt(self, key: int, data: bytes, final: bool) -> bytes:
        return bytes(self._call("decrypt", key, data, final))  # type: ignore[call-overload]

    def hmac(self, key: int, hash_alg: int, data: bytes) -> bytes:
        return bytes(self._call("mac", key, hash_alg, data))  # type: ignore[call-overload]

    def capabilities(self) -> Capabilities:
        """Say only what the CSP does: here no hardware keys (so no hardware rule is ever drawn) and no inspect
        (so states are compared through parameters, ciphertext and duplicates, as for any black box)."""
        return Capabilities(
            name="vendor",
            blob_types={w.PLAINTEXTKEYBLOB, w.OPAQUEKEYBLOB},
            algorithms={
                w.CALG_AES_128,
                w.CALG_AES_192,
                w.CALG_AES_256,
                w.CALG_DES,
                w.CALG_3DES_112,
                w.CALG_3DES,
                w.CALG_RC2,
                w.CALG_RC4,
            },
            modes={w.CRYPT_MODE_CBC, w.CRYPT_MODE_ECB, w.CRYPT_MODE_CFB},
            hmac_algorithms={w.CALG_MD5, w.CALG_SHA1, w.CALG_SHA_256},
            duplicate=True,
        )

    def close(self) -> None:
        self.csp.shutdown()


def make_target() -> VendorTarget:
    """The factory keyhandoff calls once per test case: each call is a fresh installation."""
    return VendorTarget()


def test_vendor_csp_conforms() -> None:
    """The vendor CSP, through its adapter, agrees with the model."""
    run_conformance(make_target, profile="quick", seed=1)
