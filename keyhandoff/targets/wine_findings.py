"""Where a CryptoAPI CSP behind advapi32 differs from the model: the CryptoAPI layer itself (native too), and
Wine's rsaenh where it deviates from native or documented behaviour. docs/findings.md, as data.

Each :class:`~keyhandoff.target.Deviation` is one finding; its id is the finding's heading in docs/findings.md.
"""

from __future__ import annotations

from keyhandoff.model import wincrypt as w
from keyhandoff.target import ANY_OUTCOME, ANY_REFUSAL, Deviation

__all__ = ["ADVAPI32_DEVIATIONS", "WINE_DEVIATIONS"]

# advapi32 in front of any CSP (native Windows too): the model speaks at the CSP level (docs/model.md).
ADVAPI32_DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "advapi32-dead-handle",
        "*",
        w.NTE_BAD_KEY,
        w.ERROR_INVALID_PARAMETER,
        "a destroyed key's handle is refused by advapi32 (ERROR_INVALID_PARAMETER) before the CSP (NTE_BAD_KEY)",
        condition="dead-handle",
    ),
    Deviation(
        "advapi32-dead-context",
        "*",
        w.NTE_BAD_UID,
        w.ERROR_INVALID_PARAMETER,
        "a released context's handle is refused by advapi32 (ERROR_INVALID_PARAMETER) before the CSP (NTE_BAD_UID)",
        condition="dead-handle",
    ),
    Deviation(
        "advapi32-empty-blob",
        "import_key",
        w.NTE_BAD_DATA,
        w.ERROR_INVALID_PARAMETER,
        "an empty blob is refused by advapi32 (ERROR_INVALID_PARAMETER) before the CSP (NTE_BAD_DATA)",
        condition="empty-input",
    ),
    Deviation(
        "advapi32-pub-key-handle",
        "import_key",
        ANY_REFUSAL,
        w.ERROR_INVALID_PARAMETER,
        "an hPubKey that is no key handle is refused by advapi32 (ERROR_INVALID_PARAMETER) before the CSP looks "
        "at the blob",
        condition="pub-key-handle",
    ),
    Deviation(
        "provider-simpleblob",
        "export_key",
        ANY_REFUSAL,
        w.NTE_BAD_PUBLIC_KEY,
        "the provider exports SIMPLEBLOBs (outside the model: they need an RSA key-exchange key, so hExpKey=0 is "
        "NTE_BAD_PUBLIC_KEY, checked before the flags)",
        blob_type=w.SIMPLEBLOB,
    ),
)

WINE_DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "wine-handle-reuse",
        "*",
        None,
        None,
        "a destroyed key's handle is issued again to a new key, so a stale handle reaches the new key",
        condition="handle-reused",
    ),
    Deviation(
        "wine-destroykey-ignored",
        "export_key",
        None,
        None,
        "CryptExportKey ignores CRYPT_DESTROYKEY: the exported key stays alive",
        condition="destroykey-ignored",
    ),
    Deviation(
        "wine-plaintext-trailing-bytes",
        "import_key",
        w.NTE_BAD_DATA,
        None,
        "a PLAINTEXTKEYBLOB with bytes after the key is imported (the model refuses it: our decision)",
        model_rule="PLAINTEXTKEYBLOB body longer than its length field",
        retire=True,
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
    ),
    Deviation(
        "wine-ipsec-hmac-key",
        "get_key_param,set_key_param,encrypt,decrypt,export_key,round_trip",
        ANY_OUTCOME,
        ANY_OUTCOME,
        "a key imported with CRYPT_IPSEC_HMAC_KEY becomes a CALG_HMAC key: KP_ALGID 0x8009, no IV, mode, block "
        "or salt; encrypt NTE_BAD_TYPE; PLAINTEXTKEYBLOB export allowed without CRYPT_EXPORT (HMAC agrees)",
        condition="hmac-only-key",
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
    ),
    Deviation(
        "wine-kp-salt-block-cipher",
        "get_key_param",
        None,
        w.NTE_BAD_KEY,
        "KP_SALT of a block-cipher key is refused with NTE_BAD_KEY (native: an empty salt)",
        param=w.KP_SALT,
    ),
    Deviation(
        "wine-plaintext-export-unchecked",
        "export_key",
        w.NTE_BAD_KEY_STATE,
        None,
        "PLAINTEXTKEYBLOB export of a key without CRYPT_EXPORT succeeds (documented: NTE_BAD_KEY_STATE)",
        model_rule="key lacks CRYPT_EXPORT",
    ),
    Deviation(
        "wine-export-unknown-flags",
        "export_key",
        w.NTE_BAD_FLAGS,
        ANY_OUTCOME,
        "CryptExportKey ignores flag bits it does not know (documented: NTE_BAD_FLAGS)",
        model_rule="unknown CryptExportKey flag",
    ),
    Deviation(
        "wine-hmac-calg-mac",
        "hmac",
        w.NTE_BAD_ALGID,
        ANY_OUTCOME,
        "HMAC with CALG_MAC as its hash is accepted and gives an empty value (no hash algorithm: NTE_BAD_ALGID)",
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
    ),
    Deviation(
        "wine-mode-bits-default",
        "get_key_param",
        None,
        None,
        "a new key reports KP_MODE_BITS 0 (documented default: 8)",
        param=w.KP_MODE_BITS,
    ),
    Deviation(
        "wine-hmac-long-key",
        "hmac",
        None,
        None,
        "HMAC with a key longer than 64 bytes: SHA-1 and SHA-256 values are not RFC 2104's (MD5 is), and destroying "
        "a duplicate of such a key frees the original's key buffer (use after free: its HMAC changes)",
        condition="long-hmac-key",
    ),
    Deviation(
        "wine-release-keeps-keys",
        "*",
        w.NTE_BAD_KEY,
        ANY_OUTCOME,
        "the keys of a released context stay usable (the model's decision: they die with it)",
        condition="context-released",
        retire=True,
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
    ),
    Deviation(
        "wine-no-salt-ignored",
        "*",
        ANY_OUTCOME,
        ANY_OUTCOME,
        "CryptImportKey ignores CRYPT_NO_SALT: a 40-bit RC2/RC4 key gets 11 zero bytes of salt (documented: none)",
        condition="no-salt-import",
        retire=True,
    ),
    Deviation(
        "provider-other-blob-types",
        "import_key",
        w.NTE_BAD_TYPE,
        ANY_REFUSAL,
        "the provider parses blob types outside the model (SIMPLEBLOB, PUBLICKEYBLOB, PRIVATEKEYBLOB) and refuses "
        "these for their content (the model refuses the type: NTE_BAD_TYPE)",
        model_rule="blob type not supported for session keys",
    ),
    Deviation(
        "wine-bad-ver",
        "import_key",
        w.NTE_BAD_VER,
        w.NTE_BAD_DATA,
        "a blob whose bVersion is not 2 is refused with NTE_BAD_DATA (documented: NTE_BAD_VER)",
    ),
    Deviation(
        "wine-genkey-unknown-flags",
        "gen_key",
        w.NTE_BAD_FLAGS,
        None,
        "CryptGenKey ignores flag bits it does not know (documented: NTE_BAD_FLAGS)",
        model_rule="unknown CryptGenKey flag",
        retire=True,
    ),
    Deviation(
        "wine-decrypt-empty-final-crash",
        "decrypt",
        w.NTE_BAD_LEN,
        None,
        "a Final CryptDecrypt of zero bytes crashes the process (page fault reading before the buffer); "
        "documented: NTE_BAD_LEN. Not sent in runs",
        model_rule="final decrypt of zero bytes",
        condition="crashes",
    ),
)
