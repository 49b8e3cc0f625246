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
        None,
        "a non-final CryptDecrypt of a length that is not a whole number of blocks is accepted (documented: "
        "NTE_BAD_DATA); the key's register then differs",
        model_rule="non-final length not a multiple of the block length",
        retire=True,
    ),
    Deviation(
        "wine-decrypt-ragged-final",
        "decrypt",
        w.NTE_BAD_DATA,
        None,
        "a Final CryptDecrypt of a length that is not a whole number of blocks is accepted (documented: NTE_BAD_DATA)",
        model_rule="length not a multiple of the block length",
        retire=True,
    ),
    Deviation(
        "wine-ipsec-hmac-key",
        "*",
        ANY_OUTCOME,
        ANY_OUTCOME,
        "a key imported with CRYPT_IPSEC_HMAC_KEY becomes a CALG_HMAC key: KP_ALGID 0x8009, no IV, mode, block "
        "or salt; encrypt NTE_BAD_TYPE; PLAINTEXTKEYBLOB export allowed without CRYPT_EXPORT (HMAC agrees)",
        condition="hmac-only-key",
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
