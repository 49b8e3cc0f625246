"""Declared deviations cover exactly their situation (conditions, not_sent), against planted targets built on
the model: the declared run passes and counts it; without the declaration the same program diverges."""

from __future__ import annotations

import hashlib
import hmac

import attrs
import pytest

from keyhandoff.lockstep import Divergence, Lockstep
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.target import Capabilities, Deviation
from keyhandoff.targets.model_target import ModelTarget

_HASHES = {w.CALG_MD5: "md5", w.CALG_SHA1: "sha1", w.CALG_SHA_256: "sha256"}


class Declaring(ModelTarget):
    declared: tuple[Deviation, ...] = ()

    def capabilities(self) -> Capabilities:
        return attrs.evolve(super().capabilities(), deviations=self.declared)


class EmptyIsInvalid(Declaring):
    """advapi32-like: an empty blob is refused before the CSP sees it."""

    def import_key(self, prov, blob, *, pub_key=0, flags=0, hardware=False):  # type: ignore[no-untyped-def]
        if not blob:
            raise CryptError(w.ERROR_INVALID_PARAMETER)
        return super().import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)


class RehashesLongKeys(Declaring):
    """Wine-like: the first HMAC of a long key replaces the key by its digest under that HMAC's hash."""

    def __init__(self) -> None:
        super().__init__()
        self._digest: dict[int, bytes] = {}

    def duplicate_key(self, key: int) -> int:
        twin = super().duplicate_key(key)
        if key in self._digest:
            self._digest[twin] = self._digest[key]
        return twin

    def hmac(self, key: int, hash_alg: int, data: bytes) -> bytes:
        material = self.inspect(key).key
        if len(material) > 64 and key not in self._digest:
            self._digest[key] = hashlib.new(_HASHES[hash_alg], material).digest()
            return super().hmac(key, hash_alg, data)
        if key in self._digest:
            return hmac.new(self._digest[key], data, _HASHES[hash_alg]).digest()
        return super().hmac(key, hash_alg, data)


class CrashesOnEmptyFinal(Declaring):
    def decrypt(self, key: int, data: bytes, final: bool) -> bytes:
        if final and not data:
            raise RuntimeError("page fault")  # what a crashed peer looks like to the lockstep
        return super().decrypt(key, data, final)


class AnyAlgIsHmac(Declaring):
    """Wine-like: a plaintext import of any aiKeyAlg becomes an HMAC key (held here as an RC2 key); ``always``
    also without CRYPT_IPSEC_HMAC_KEY."""

    always = False

    def import_key(self, prov, blob, *, pub_key=0, flags=0, hardware=False):  # type: ignore[no-untyped-def]
        if blob[:1] == bytes([w.PLAINTEXTKEYBLOB]) and (self.always or flags & w.CRYPT_IPSEC_HMAC_KEY):
            blob = blob[:4] + w.CALG_RC2.to_bytes(4, "little") + blob[8:]
            flags |= w.CRYPT_IPSEC_HMAC_KEY
        return super().import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)


_EMPTY = Deviation("empty", "import_key", w.NTE_BAD_DATA, w.ERROR_INVALID_PARAMETER, "empty", condition="empty-input")
_REHASH = Deviation("rehash", "hmac", None, None, "rehash", condition="long-hmac-key-rehashed")
_CRASH = Deviation("crash", "decrypt", w.NTE_BAD_LEN, None, "crash", not_sent=True)


def _lockstep(target: type[Declaring], declared: tuple[Deviation, ...]) -> Lockstep:
    return Lockstep(type(target.__name__, (target,), {"declared": declared})())


@pytest.mark.parametrize("declared", [(_EMPTY,), ()])
def test_empty_input_covers_a_blob_edited_to_nothing(declared: tuple[Deviation, ...]) -> None:
    ls = _lockstep(EmptyIsInvalid, declared)
    prov = ls.acquire("secure")
    key = ls.import_plaintext(prov, w.CALG_AES_128, 1, 16, w.CRYPT_EXPORTABLE)
    assert isinstance(key, int)
    blob = ls.export_key(key, w.OPAQUEKEYBLOB)
    assert isinstance(blob, int)
    if not declared:
        with pytest.raises(Divergence, match="ERROR_INVALID_PARAMETER"):
            ls.import_blob(prov, blob, edit=("truncate", 0))
        return
    ls.import_blob(prov, blob, edit=("truncate", 0))
    assert ls.deviations["empty"] == 1


@pytest.mark.parametrize("declared", [(_REHASH,), ()])
def test_rehash_covers_only_an_hmac_after_one_with_another_hash(declared: tuple[Deviation, ...]) -> None:
    ls = _lockstep(RehashesLongKeys, declared)
    prov = ls.acquire("app")
    key = ls.import_plaintext(prov, w.CALG_RC2, 3, 65, w.CRYPT_IPSEC_HMAC_KEY)
    assert isinstance(key, int)
    ls.hmac(key, w.CALG_SHA1, b"abc")  # first: the RFC value on both sides
    twin = ls.duplicate_key(key)  # made after the first HMAC: it inherits the digest
    assert isinstance(twin, int)
    assert ls.deviations["rehash"] == 0
    if not declared:
        with pytest.raises(Divergence, match="different bytes"):
            ls.hmac(twin, w.CALG_MD5, b"abc")
        return
    ls.hmac(twin, w.CALG_MD5, b"abc")
    assert ls.deviations["rehash"] == 1


@pytest.mark.parametrize("declared", [(_CRASH,), ()])
def test_not_sent_call_never_reaches_the_target(declared: tuple[Deviation, ...]) -> None:
    ls = _lockstep(CrashesOnEmptyFinal, declared)
    prov = ls.acquire("app")
    key = ls.import_plaintext(prov, w.CALG_DES, 0, 8)
    assert isinstance(key, int)
    if not declared:
        with pytest.raises(Divergence, match="the target crashed"):
            ls.decrypt(key, b"", True)
        return
    assert ls.decrypt(key, b"", True).code == w.NTE_BAD_LEN  # the model's answer stands
    assert ls.deviations["crash"] == 1
    assert ls.encrypt(key, bytes(8), False).ok  # the key goes on, on both sides


class NoOpaque(Declaring):
    """A CSP without OPAQUEKEYBLOB (like Wine's rsaenh): it refuses the type itself."""

    def import_key(self, prov, blob, *, pub_key=0, flags=0, hardware=False):  # type: ignore[no-untyped-def]
        if blob[:1] == bytes([w.OPAQUEKEYBLOB]):
            raise CryptError(w.NTE_BAD_TYPE)
        return super().import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)

    def capabilities(self) -> Capabilities:
        caps = super().capabilities()
        return attrs.evolve(caps, blob_types=caps.blob_types - {w.OPAQUEKEYBLOB})


def test_an_unsupported_blob_type_may_be_refused_as_such() -> None:
    """A forged OPAQUEKEYBLOB header: the model refuses its body (NTE_BAD_DATA), a target without the type
    refuses the type (NTE_BAD_TYPE); both are right. A target that supports the type gets no such pass."""
    forged = bytes([w.OPAQUEKEYBLOB, 2, 0, 0]) + w.CALG_DES.to_bytes(4, "little") + bytes(4)
    ls = Lockstep(NoOpaque())
    prov = ls.acquire("app")
    assert ls.import_bytes(prov, forged).code == w.NTE_BAD_DATA  # the model's answer; the target's tolerated

    class ClaimsOpaque(NoOpaque):
        def capabilities(self) -> Capabilities:
            return ModelTarget.capabilities(self)

    ls = Lockstep(ClaimsOpaque())
    prov = ls.acquire("app")
    with pytest.raises(Divergence, match="NTE_BAD_TYPE"):
        ls.import_bytes(prov, forged)


class ReissuesContexts(Declaring):
    """Wine-like: a released context's handle is issued to the next context, and its keys work again."""

    def __init__(self) -> None:
        super().__init__()
        self._freed: list[int] = []
        self._alias: dict[int, int] = {}  # reissued handle -> the model's new context

    def release(self, prov: int) -> None:
        super().release(self._alias.get(prov, prov))
        self._freed.append(prov)

    def acquire(self, side: str = "secure") -> int:
        made = super().acquire(side)
        if not self._freed:
            return made
        reused = self._freed.pop()
        self._alias[reused] = made
        return reused

    def destroy_key(self, key: int) -> None:
        if self.inspect(key).lifecycle.alive:
            super().destroy_key(key)  # the model's own rule would refuse a dead context's key; Wine does not


_REUSE = Deviation("reuse", "*", None, None, "handles reissued", condition="handle-reused")


def test_a_reissued_context_detaches_the_released_contexts_keys() -> None:
    ls = _lockstep(ReissuesContexts, (_REUSE,))
    ls.acquire("secure")
    prov = ls.acquire("secure")
    key = ls.import_plaintext(prov, w.CALG_DES, 0, 8)
    assert isinstance(key, int)
    ls.release(prov)
    again = ls.acquire("secure")
    assert ls.providers[again][1] == ls.providers[prov][1]
    assert ls.keys[key].detached == "reuse"
    assert ls.destroy_key(key).code == w.NTE_BAD_KEY  # the model's answer; not sent to the target


class CrashesOnGenKey(Declaring):
    def gen_key(self, prov: int, alg: int, flags: int = 0, *, hardware: bool = False) -> int:
        raise RuntimeError("page fault")


def test_a_not_sent_call_that_makes_a_key_leaves_it_to_the_model() -> None:
    """The model made a key the target never did: its reference is detached (a placeholder handle), and calls
    through it go to the model only, never to the target with the model's handle."""
    declared = (Deviation("genkey-crash", "gen_key", None, None, "crash", not_sent=True),)
    ls = _lockstep(CrashesOnGenKey, declared)
    prov = ls.acquire("app")
    key = ls.gen_key(prov, w.CALG_DES)
    assert isinstance(key, int)
    assert ls.keys[key].detached == "genkey-crash"
    assert ls.keys[key].target < 0
    assert ls.encrypt(key, bytes(8), False).ok  # the model's answer; not sent
    assert ls.deviations["genkey-crash"] == 2


_ANY_ALG = Deviation(
    "any-alg",
    "import_key",
    w.NTE_BAD_ALGID,
    None,
    "any alg",
    model_rule="algorithm not supported for session keys",
    condition="ipsec-flag",
    retire=True,
)
_UNKNOWN_ALG_KEY = bytes([w.PLAINTEXTKEYBLOB, 2, 0, 0]) + (0x1234).to_bytes(4, "little") + (16).to_bytes(4, "little")


@pytest.mark.parametrize(("declared", "always"), [((_ANY_ALG,), False), ((), False), ((_ANY_ALG,), True)])
def test_ipsec_flag_covers_only_an_import_that_passes_the_flag(declared: tuple[Deviation, ...], always: bool) -> None:
    """``ipsec-flag`` holds for the import call that passes CRYPT_IPSEC_HMAC_KEY (``ipsec-import`` is a mark of
    the key so imported, for the calls on it): declared, the key only the target made is destroyed."""
    target = type("Planted", (AnyAlgIsHmac,), {"declared": declared, "always": always})()
    ls = Lockstep(target)
    prov = ls.acquire("app")
    blob = _UNKNOWN_ALG_KEY + bytes(range(16))
    if not declared:
        with pytest.raises(Divergence, match="model NTE_BAD_ALGID"):
            ls.import_bytes(prov, blob, w.CRYPT_IPSEC_HMAC_KEY, False, 0)
        return
    assert not isinstance(ls.import_bytes(prov, blob, w.CRYPT_IPSEC_HMAC_KEY, False, 0), int)
    assert ls.deviations["any-alg"] == 1
    assert not [h for h in target.world.keys if target.inspect(h).lifecycle.alive]  # destroyed: retired
    if always:  # without the flag the condition does not hold: the same acceptance is a failure
        with pytest.raises(Divergence, match="model NTE_BAD_ALGID"):
            ls.import_bytes(prov, blob, 0, False, 0)


_HASH_ALG = Deviation(
    "hash-alg",
    "import_key",
    w.NTE_BAD_ALGID,
    None,
    "hash alg",
    model_rule="algorithm not supported for session keys",
    condition="hash-alg-blob",
    retire=True,
)


@pytest.mark.parametrize("declared", [(_HASH_ALG,), ()])
def test_hash_alg_blob_covers_only_a_blob_naming_a_hash_class_alg(declared: tuple[Deviation, ...]) -> None:
    """``hash-alg-blob`` holds for a blob whose aiKeyAlg is of the hash class (CALG_HMAC here), not for one naming
    an ALG_ID no CSP has, which the same target also accepts."""
    target = type("Planted", (AnyAlgIsHmac,), {"declared": declared, "always": True})()
    ls = Lockstep(target)
    prov = ls.acquire("app")
    hmac_blob = _UNKNOWN_ALG_KEY[:4] + w.CALG_HMAC.to_bytes(4, "little") + _UNKNOWN_ALG_KEY[8:] + bytes(16)
    if not declared:
        with pytest.raises(Divergence, match="model NTE_BAD_ALGID"):
            ls.import_bytes(prov, hmac_blob, 0, False, 0)
        return
    assert not isinstance(ls.import_bytes(prov, hmac_blob, 0, False, 0), int)
    assert ls.deviations["hash-alg"] == 1
    with pytest.raises(Divergence, match="model NTE_BAD_ALGID"):
        ls.import_bytes(prov, _UNKNOWN_ALG_KEY + bytes(16), 0, False, 0)


class SizeFirst(Declaring):
    """Wine-like: a PLAINTEXTKEYBLOB shorter than it announces is NTE_BAD_DATA before its algorithm is looked at;
    ``loose`` refuses every unknown algorithm so."""

    loose = False

    def import_key(self, prov, blob, *, pub_key=0, flags=0, hardware=False):  # type: ignore[no-untyped-def]
        announced = 12 + int.from_bytes(blob[8:12], "little") if len(blob) >= 12 else 13
        if blob[:1] == bytes([w.PLAINTEXTKEYBLOB]) and (len(blob) < announced or self.loose):
            raise CryptError(w.NTE_BAD_DATA)
        return super().import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)


_SIZE_FIRST = Deviation(
    "size-first",
    "import_key",
    w.NTE_BAD_ALGID,
    w.NTE_BAD_DATA,
    "size first",
    model_rule="algorithm not supported for session keys",
    condition="short-plaintext",
)


@pytest.mark.parametrize("blob", [_UNKNOWN_ALG_KEY[:8], _UNKNOWN_ALG_KEY[:10], _UNKNOWN_ALG_KEY + bytes(15)])
@pytest.mark.parametrize(("declared", "loose"), [((_SIZE_FIRST,), False), ((), False), ((_SIZE_FIRST,), True)])
def test_short_plaintext_covers_only_a_blob_that_ends_early(
    blob: bytes, declared: tuple[Deviation, ...], loose: bool
) -> None:
    """``short-plaintext`` holds for a PLAINTEXTKEYBLOB that ends before its length field or before the key it
    announces; a whole blob refused with the same code is a failure."""
    ls = Lockstep(type("Planted", (SizeFirst,), {"declared": declared, "loose": loose})())
    prov = ls.acquire("app")
    if not declared:
        with pytest.raises(Divergence, match=r"model NTE_BAD_ALGID .*, target NTE_BAD_DATA"):
            ls.import_bytes(prov, blob, 0, False, 0)
        return
    ls.import_bytes(prov, blob, 0, False, 0)
    assert ls.deviations["size-first"] == 1
    if loose:
        with pytest.raises(Divergence, match=r"model NTE_BAD_ALGID .*, target NTE_BAD_DATA"):
            ls.import_bytes(prov, _UNKNOWN_ALG_KEY + bytes(16), 0, False, 0)


class IpsecKeysHaveNoIv(Declaring):
    """Wine-like: a key imported with CRYPT_IPSEC_HMAC_KEY is an HMAC key: its KP_IV reads back empty."""

    def __init__(self) -> None:
        super().__init__()
        self.hmac_keys: set[int] = set()

    def import_key(self, prov, blob, *, pub_key=0, flags=0, hardware=False):  # type: ignore[no-untyped-def]
        key = super().import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)
        if flags & w.CRYPT_IPSEC_HMAC_KEY:
            self.hmac_keys.add(key)
        return key

    def get_key_param(self, key: int, param: int) -> bytes | int:
        return b"" if param == w.KP_IV and key in self.hmac_keys else super().get_key_param(key, param)


_IPSEC_KEY = Deviation("ipsec-key", "get_key_param", None, None, "ipsec key", condition="ipsec-import")


@pytest.mark.parametrize("how", ["import_plaintext", "import_bytes"])
def test_ipsec_import_marks_a_key_however_it_was_imported(how: str) -> None:
    """``ipsec-import`` marks a key imported with the flag from a test key or from harness-made bytes alike (the
    forged-blob imports used to leave it unmarked, so a declared deviation did not cover their keys)."""
    ls = Lockstep(type("Planted", (IpsecKeysHaveNoIv,), {"declared": (_IPSEC_KEY,)})())
    prov = ls.acquire("app")
    if how == "import_plaintext":
        key = ls.import_plaintext(prov, w.CALG_DES, 0, 8, w.CRYPT_IPSEC_HMAC_KEY)
    else:
        key = ls.import_bytes(prov, bytes([w.PLAINTEXTKEYBLOB, 2, 0, 0, 1, 0x66, 0, 0, 8, 0, 0, 0]) + bytes(8), 0x100)
    assert isinstance(key, int)
    ls.get_key_param(key, w.KP_IV)
    assert ls.deviations["ipsec-key"] == 1
