"""Where a CryptoAPI CSP behind advapi32 differs from the model: the CryptoAPI layer itself (native too), and
Wine's rsaenh where it deviates from native or documented behaviour. docs/findings.md, as data.

Each :class:`~keyhandoff.target.Deviation` is one finding; its id is the finding's heading in docs/findings.md.
"""

from __future__ import annotations

from keyhandoff.model import wincrypt as w
from keyhandoff.target import ANY_OUTCOME, ANY_REFUSAL, Deviation

__all__ = ["ADVAPI32_DEVIATIONS", "WINE_DEVIATIONS"]

# Reproducers (Deviation.reproducer) are trace steps; these build them. Keys are the lockstep's test keys.
Step = dict[str, object]


def _app() -> Step:
    return {"op": "acquire", "side": "app"}


def _imp(alg: int, size: int, flags: int = 0, seed: int = 0) -> Step:
    return {"op": "import_plaintext", "prov": 0, "alg": alg, "seed": seed, "size": size, "flags": flags}


def _des(flags: int = 0) -> tuple[Step, Step]:
    """A context and a DES key in it (k0)."""
    return _app(), _imp(w.CALG_DES, 8, flags)


def _raw(blob: bytes, flags: int = 0, pub_key: int = 0) -> Step:
    return {"op": "import_bytes", "prov": 0, "blob_hex": blob.hex(), "flags": flags, "pub_key": pub_key}


def _key(op: str, key: int = 0, **args: object) -> Step:
    """A call on key ``key`` (bytes arguments as hex)."""
    return {"op": op, "key": key, **{k: v.hex() if isinstance(v, bytes) else v for k, v in args.items()}}


def _plaintext(alg: int, key: bytes, version: int = 2) -> bytes:
    return bytes([w.PLAINTEXTKEYBLOB, version, 0, 0]) + alg.to_bytes(4, "little") + len(key).to_bytes(4, "little") + key


# advapi32 in front of any CSP (native Windows too): the model speaks at the CSP level (docs/model.md).
ADVAPI32_DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "advapi32-dead-handle",
        "*",
        w.NTE_BAD_KEY,
        w.ERROR_INVALID_PARAMETER,
        "a destroyed key's handle is refused by advapi32 (ERROR_INVALID_PARAMETER) before the CSP (NTE_BAD_KEY)",
        condition="dead-handle",
        reproducer=(*_des(), _key("destroy_key"), _key("encrypt", data_hex=bytes(8), final=False)),
    ),
    Deviation(
        "advapi32-dead-context",
        "*",
        w.NTE_BAD_UID,
        w.ERROR_INVALID_PARAMETER,
        "a released context's handle is refused by advapi32 (ERROR_INVALID_PARAMETER) before the CSP (NTE_BAD_UID)",
        condition="dead-handle",
        reproducer=(_app(), {"op": "release", "prov": 0}, {"op": "gen_key", "prov": 0, "alg": w.CALG_DES, "flags": 0}),
    ),
    Deviation(
        "advapi32-empty-blob",
        "import_key",
        w.NTE_BAD_DATA,
        w.ERROR_INVALID_PARAMETER,
        "an empty blob is refused by advapi32 (ERROR_INVALID_PARAMETER) before the CSP (NTE_BAD_DATA)",
        condition="empty-input",
        reproducer=(_app(), _raw(b"")),
    ),
    Deviation(
        "advapi32-pub-key-handle",
        "import_key",
        ANY_REFUSAL,
        w.ERROR_INVALID_PARAMETER,
        "an hPubKey that is no key handle is refused by advapi32 (ERROR_INVALID_PARAMETER) before the CSP looks "
        "at the blob",
        condition="pub-key-handle",
        reproducer=(_app(), _raw(b"\x08\x02", pub_key=0x1234)),
    ),
    Deviation(
        "provider-simpleblob",
        "export_key",
        ANY_REFUSAL,
        w.NTE_BAD_PUBLIC_KEY,
        "the provider exports SIMPLEBLOBs (outside the model: they need an RSA key-exchange key, so hExpKey=0 is "
        "NTE_BAD_PUBLIC_KEY, checked before the flags)",
        blob_type=w.SIMPLEBLOB,
        reproducer=(*_des(w.CRYPT_EXPORTABLE), _key("export_key", blob_type=w.SIMPLEBLOB, flags=0)),
    ),
)

WINE_DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "wine-handle-reuse",
        "*",
        None,
        None,
        "a destroyed key's handle is issued again to a new key, so a stale handle reaches the new key; a released "
        "context's handle is issued again too, and the released context's keys then work again",
        condition="handle-reused",
        reproducer=(*_des(), _key("destroy_key"), _imp(w.CALG_DES, 8, seed=1)),
    ),
    Deviation(
        "wine-destroykey-ignored",
        "export_key",
        None,
        None,
        "CryptExportKey ignores CRYPT_DESTROYKEY: the exported key stays alive",
        condition="destroykey-ignored",
        reproducer=(
            *_des(w.CRYPT_EXPORTABLE),
            _key("export_key", blob_type=w.PLAINTEXTKEYBLOB, flags=w.CRYPT_DESTROYKEY),
            _key("encrypt", data_hex=bytes(8), final=False),
        ),
    ),
    Deviation(
        "wine-plaintext-trailing-bytes",
        "import_key",
        w.NTE_BAD_DATA,
        ANY_OUTCOME,
        "a PLAINTEXTKEYBLOB with bytes after the key is judged without them: imported, or refused by a later check "
        "(a DES key's length: NTE_BAD_FLAGS); the model refuses it (our decision)",
        model_rule="PLAINTEXTKEYBLOB body longer than its length field",
        retire=True,
        reproducer=(_app(), _raw(_plaintext(w.CALG_DES, bytes(range(8))) + b"\0")),
    ),
    Deviation(
        "wine-genkey-random-salt",
        "get_key_param",
        None,
        None,
        "CryptGenKey gives a 40-bit RC2/RC4 key 11 random salt bytes, with or without CRYPT_CREATE_SALT "
        "(documented: a zero salt without the flag; native Enhanced provider: no salt with it)",
        param=w.KP_SALT,
        condition="generated-key",
        reproducer=(
            _app(),
            {"op": "gen_key", "prov": 0, "alg": w.CALG_RC2, "flags": 40 << 16},
            _key("get_key_param", param=w.KP_SALT),
        ),
    ),
    Deviation(
        "wine-plaintext-key-length",
        "import_key",
        w.NTE_BAD_DATA,
        None,
        "a PLAINTEXTKEYBLOB whose key length the algorithm does not have is imported when the length is 0 (an "
        "all-zero key of the default length, for every algorithm) or 7 bytes for DES (documented: NTE_BAD_DATA)",
        model_rule="key length not valid for the algorithm",
        retire=True,
        reproducer=(_app(), _raw(_plaintext(w.CALG_DES, b""))),
    ),
    Deviation(
        "wine-plaintext-des-length-code",
        "import_key",
        w.NTE_BAD_DATA,
        w.NTE_BAD_FLAGS,
        "a DES or 3DES PLAINTEXTKEYBLOB of another wrong key length is refused with NTE_BAD_FLAGS, the code "
        "CryptGenKey uses (documented for import: NTE_BAD_DATA)",
        model_rule="key length not valid for the algorithm",
        reproducer=(_app(), _raw(_plaintext(w.CALG_DES, bytes(range(4))))),
    ),
    Deviation(
        "wine-decrypt-ragged",
        "decrypt",
        w.NTE_BAD_DATA,
        ANY_OUTCOME,
        "CryptDecrypt does not check that the length is a whole number of blocks (documented: NTE_BAD_DATA before "
        "anything happens): it decrypts, and a Final call may then fail on the padding; the register moved",
        model_rule="length not a multiple of the block length",
        retire=True,
        reproducer=(*_des(), _key("decrypt", data_hex=bytes(13), final=False)),
    ),
    Deviation(
        "wine-ipsec-hmac-key",
        "get_key_param,set_key_param,encrypt,decrypt,export_key,round_trip",
        ANY_OUTCOME,
        ANY_OUTCOME,
        "a key imported with CRYPT_IPSEC_HMAC_KEY becomes a CALG_HMAC key, whatever its length: KP_ALGID 0x8009, "
        "no IV, mode, block or salt; encrypt NTE_BAD_TYPE; PLAINTEXTKEYBLOB export allowed without CRYPT_EXPORT "
        "(HMAC agrees). The model keeps a key of a cipher's length a cipher key: the flag lifts the length limit",
        condition="ipsec-import",
        reproducer=(_app(), _imp(w.CALG_RC2, 16, w.CRYPT_IPSEC_HMAC_KEY), _key("get_key_param", param=w.KP_ALGID)),
    ),
    Deviation(
        "wine-ipsec-hmac-any-alg",
        "import_key",
        w.NTE_BAD_ALGID,
        None,
        "a PLAINTEXTKEYBLOB imported with CRYPT_IPSEC_HMAC_KEY becomes a CALG_HMAC key whatever its aiKeyAlg: an "
        "ALG_ID no CSP has (0, 0x1234, 0xFFFFFFFF) or a hash's is accepted (documented: the flag lets an RC2 key "
        "be longer than 16 bytes; an algorithm the CSP does not have is NTE_BAD_ALGID)",
        model_rule="algorithm not supported for session keys",
        condition="ipsec-flag",
        retire=True,
        reproducer=(_app(), _raw(_plaintext(0x1234, bytes(range(16))), flags=w.CRYPT_IPSEC_HMAC_KEY)),
    ),
    Deviation(
        "wine-kp-salt",
        "*",
        ANY_OUTCOME,
        ANY_OUTCOME,
        "a salt set by KP_SALT is dropped at the key's next re-key (KP_IV, KP_EFFECTIVE_KEYLEN, a Final call): "
        "the ciphertext then differs",
        condition="kp-salt-set",
        retire=True,
        reproducer=(
            _app(),
            _imp(w.CALG_RC2, 5),
            _key("set_key_param", param=w.KP_SALT, value_hex=bytes(range(11))),
            _key("encrypt", data_hex=bytes(8), final=True),
            _key("encrypt", data_hex=bytes(8), final=True),
        ),
    ),
    Deviation(
        "wine-kp-salt-block-cipher",
        "get_key_param",
        None,
        w.NTE_BAD_KEY,
        "KP_SALT of a block-cipher key is refused with NTE_BAD_KEY (native: an empty salt)",
        param=w.KP_SALT,
        reproducer=(*_des(), _key("get_key_param", param=w.KP_SALT)),
    ),
    Deviation(
        "wine-plaintext-export-unchecked",
        "export_key",
        w.NTE_BAD_KEY_STATE,
        None,
        "PLAINTEXTKEYBLOB export of a key without CRYPT_EXPORT succeeds (documented: NTE_BAD_KEY_STATE)",
        model_rule="key lacks CRYPT_EXPORT",
        reproducer=(*_des(), _key("export_key", blob_type=w.PLAINTEXTKEYBLOB, flags=0)),
    ),
    Deviation(
        "wine-export-unknown-flags",
        "export_key",
        w.NTE_BAD_FLAGS,
        ANY_OUTCOME,
        "CryptExportKey ignores flag bits it does not know (documented: NTE_BAD_FLAGS)",
        model_rule="unknown CryptExportKey flag",
        reproducer=(*_des(w.CRYPT_EXPORTABLE), _key("export_key", blob_type=w.PLAINTEXTKEYBLOB, flags=0x100)),
    ),
    Deviation(
        "wine-hmac-calg-mac",
        "hmac",
        w.NTE_BAD_ALGID,
        ANY_OUTCOME,
        "HMAC with CALG_MAC as its hash is accepted and gives an empty value (no hash algorithm: NTE_BAD_ALGID)",
        reproducer=(*_des(), _key("hmac", hash_alg=w.CALG_MAC, data_hex=b"")),
    ),
    Deviation(
        "wine-salt-ex-block-cipher",
        "set_key_param",
        w.NTE_BAD_KEY,
        ANY_OUTCOME,
        "KP_SALT_EX on a block-cipher key is accepted (Wine refuses KP_SALT there, which the model follows)",
        param=w.KP_SALT_EX,
        model_rule="only RC2 and RC4 keys take a salt",
        retire=True,
        reproducer=(*_des(), _key("set_key_param", param=w.KP_SALT_EX, value_hex=bytes(range(11)))),
    ),
    Deviation(
        "wine-mode-bits-default",
        "get_key_param",
        None,
        None,
        "a new key reports KP_MODE_BITS 0 (documented default: 8)",
        param=w.KP_MODE_BITS,
        reproducer=(*_des(), _key("get_key_param", param=w.KP_MODE_BITS)),
    ),
    Deviation(
        "wine-hmac-long-key",
        "hmac",
        None,
        None,
        "the first HMAC with a key longer than 64 bytes replaces the key by its hash under that HMAC's algorithm; "
        "a later HMAC with another hash algorithm keys on that digest (RFC 2104: the original key, hashed by the "
        "HMAC's own algorithm each time)",
        condition="long-hmac-key-rehashed",
        reproducer=(
            _app(),
            _imp(w.CALG_RC2, 65, w.CRYPT_IPSEC_HMAC_KEY),
            _key("hmac", hash_alg=w.CALG_SHA1, data_hex=b"abc"),
            _key("hmac", hash_alg=w.CALG_MD5, data_hex=b"abc"),
        ),
    ),
    Deviation(
        "wine-hmac-long-key-shared",
        "destroy_key",
        None,
        None,
        "a key longer than 64 bytes and its duplicate share one key buffer: destroying either frees it while "
        "the other still uses it (its HMAC changes), and destroying the second frees it again, killing whichever "
        "key was allocated there since (use after free, double free). Not sent in runs",
        condition="long-hmac-shared",
        not_sent=True,
        retire=True,
        reproducer=(
            _app(),
            _imp(w.CALG_RC2, 65, w.CRYPT_IPSEC_HMAC_KEY),
            _key("duplicate_key"),
            _key("destroy_key", 1),
            _imp(w.CALG_RC2, 16, w.CRYPT_IPSEC_HMAC_KEY, seed=1),
            _key("destroy_key"),
            _key("hmac", 2, hash_alg=w.CALG_MD5, data_hex=b""),
        ),
    ),
    Deviation(
        "wine-empty-data-unusable-mode",
        "encrypt,decrypt",
        w.NTE_BAD_ALGID,
        None,
        "zero bytes in a mode the key cannot use (OFB, CTS, unknown) are accepted; the mode is refused only when "
        "there is a block to process",
        model_rule="mode accepted by KP_MODE but not usable (OFB/CTS/unknown)",
        condition="empty-input",
        reproducer=(
            *_des(),
            _key("set_key_param", param=w.KP_MODE, value=w.CRYPT_MODE_OFB),
            _key("encrypt", data_hex=b"", final=False),
        ),
    ),
    Deviation(
        "wine-no-salt-ignored",
        "*",
        ANY_OUTCOME,
        ANY_OUTCOME,
        "CryptImportKey ignores CRYPT_NO_SALT: a 40-bit RC2/RC4 key gets 11 zero bytes of salt (documented: none)",
        condition="no-salt-import",
        retire=True,
        reproducer=(_app(), _imp(w.CALG_RC2, 5, w.CRYPT_NO_SALT), _key("encrypt", data_hex=bytes(8), final=False)),
    ),
    Deviation(
        "provider-other-blob-types",
        "import_key",
        w.NTE_BAD_TYPE,
        ANY_REFUSAL,
        "the provider parses blob types outside the model (SIMPLEBLOB, PUBLICKEYBLOB, PRIVATEKEYBLOB) and refuses "
        "these for their content (the model refuses the type: NTE_BAD_TYPE)",
        model_rule="blob type not supported for session keys",
        reproducer=(_app(), _raw(bytes([w.SIMPLEBLOB, 2, 0, 0]) + w.CALG_DES.to_bytes(4, "little") + bytes(16))),
    ),
    Deviation(
        "wine-bad-ver",
        "import_key",
        w.NTE_BAD_VER,
        w.NTE_BAD_DATA,
        "a blob whose bVersion is not 2 is refused with NTE_BAD_DATA (documented: NTE_BAD_VER)",
        reproducer=(_app(), _raw(_plaintext(w.CALG_DES, bytes(range(8)), version=1))),
    ),
    Deviation(
        "wine-genkey-unknown-flags",
        "gen_key",
        w.NTE_BAD_FLAGS,
        None,
        "CryptGenKey ignores flag bits it does not know (documented: NTE_BAD_FLAGS)",
        model_rule="unknown CryptGenKey flag",
        retire=True,
        reproducer=(_app(), {"op": "gen_key", "prov": 0, "alg": w.CALG_DES, "flags": 0x20}),
    ),
    Deviation(
        "wine-import-unknown-flags",
        "import_key",
        w.NTE_BAD_FLAGS,
        ANY_OUTCOME,
        "CryptImportKey ignores flag bits it does not know and judges the blob without them: imported, or refused "
        "by a later check (documented: NTE_BAD_FLAGS)",
        model_rule="unknown CryptImportKey flag",
        retire=True,
        reproducer=(_app(), _raw(_plaintext(w.CALG_DES, bytes(range(8))), flags=0x8000)),
    ),
    Deviation(
        "wine-plaintext-hash-alg",
        "import_key",
        w.NTE_BAD_ALGID,
        ANY_OUTCOME,
        "a PLAINTEXTKEYBLOB naming an ALG_ID of the hash class is not refused as such: CALG_HMAC is imported as an "
        "HMAC key of any length; a hash's (CALG_SHA1) is imported when the key length is 0, else refused with "
        "NTE_BAD_DATA (the model: NTE_BAD_ALGID, no session key's algorithm)",
        model_rule="algorithm not supported for session keys",
        condition="hash-alg-blob",
        retire=True,
        reproducer=(_app(), _raw(_plaintext(w.CALG_HMAC, bytes(range(16))))),
    ),
    Deviation(
        "wine-plaintext-size-first",
        "import_key",
        w.NTE_BAD_ALGID,
        w.NTE_BAD_DATA,
        "a PLAINTEXTKEYBLOB that ends before its length field or its key is refused as such (NTE_BAD_DATA) before "
        "its algorithm is looked at; the model checks the algorithm first (NTE_BAD_ALGID)",
        model_rule="algorithm not supported for session keys",
        condition="short-plaintext",
        reproducer=(_app(), _raw(_plaintext(0x1234, b"")[:8] + (1).to_bytes(4, "little"))),
    ),
    Deviation(
        "wine-decrypt-empty-final-crash",
        "decrypt",
        w.NTE_BAD_LEN,
        None,
        "a Final CryptDecrypt of zero bytes crashes the process (page fault reading before the buffer); "
        "documented: NTE_BAD_LEN. Not sent in runs",
        model_rule="final decrypt of zero bytes",
        not_sent=True,
        reproducer=(*_des(), _key("decrypt", data_hex=b"", final=True)),
    ),
)
