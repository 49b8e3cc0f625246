"""CryptoAPI vocabulary: every constant the model speaks, under its wincrypt.h / winerror.h name.

This module is *vocabulary*, not logic: the reference CSP (``keyhandoff.impl``) may import it. Values are the
ones in ``shared/reference/cryptoapi-semantics.md`` (wincrypt.h).
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "ALG_NAMES",
    "ErrorCode",
    "describe_code",
]

# --- Blob types (BLOBHEADER.bType) -------------------------------------------------------------------------
SIMPLEBLOB: Final = 0x1
PUBLICKEYBLOB: Final = 0x6
PRIVATEKEYBLOB: Final = 0x7
PLAINTEXTKEYBLOB: Final = 0x8
OPAQUEKEYBLOB: Final = 0x9
PUBLICKEYBLOBEX: Final = 0xA
SYMMETRICWRAPKEYBLOB: Final = 0xB
KEYSTATEBLOB: Final = 0xC
CUR_BLOB_VERSION: Final = 2
BLOBHEADER_SIZE: Final = 8

# --- ALG_IDs ---------------------------------------------------------------------------------------------
CALG_DES: Final = 0x6601
CALG_RC2: Final = 0x6602
CALG_3DES: Final = 0x6603
CALG_3DES_112: Final = 0x6609
CALG_AES_128: Final = 0x660E
CALG_AES_192: Final = 0x660F
CALG_AES_256: Final = 0x6610
CALG_AES: Final = 0x6611
CALG_RC4: Final = 0x6801
CALG_MAC: Final = 0x8005
CALG_HMAC: Final = 0x8009
CALG_MD5: Final = 0x8003
CALG_SHA1: Final = 0x8004
CALG_SHA_256: Final = 0x800C
CALG_SCHANNEL_MAC_KEY: Final = 0x4C03
CALG_SCHANNEL_ENC_KEY: Final = 0x4C07
CALG_RSA_KEYX: Final = 0xA400

ALG_NAMES: Final[dict[int, str]] = {
    CALG_DES: "CALG_DES",
    CALG_RC2: "CALG_RC2",
    CALG_3DES: "CALG_3DES",
    CALG_3DES_112: "CALG_3DES_112",
    CALG_AES_128: "CALG_AES_128",
    CALG_AES_192: "CALG_AES_192",
    CALG_AES_256: "CALG_AES_256",
    CALG_AES: "CALG_AES",
    CALG_RC4: "CALG_RC4",
    CALG_MAC: "CALG_MAC",
    CALG_HMAC: "CALG_HMAC",
    CALG_MD5: "CALG_MD5",
    CALG_SHA1: "CALG_SHA1",
    CALG_SHA_256: "CALG_SHA_256",
    CALG_SCHANNEL_MAC_KEY: "CALG_SCHANNEL_MAC_KEY",
    CALG_SCHANNEL_ENC_KEY: "CALG_SCHANNEL_ENC_KEY",
    CALG_RSA_KEYX: "CALG_RSA_KEYX",
}

# --- Key parameters (CryptSetKeyParam / CryptGetKeyParam) ------------------------------------------------
KP_IV: Final = 1
KP_SALT: Final = 2
KP_PADDING: Final = 3
KP_MODE: Final = 4
KP_MODE_BITS: Final = 5
KP_PERMISSIONS: Final = 6
KP_ALGID: Final = 7
KP_BLOCKLEN: Final = 8
KP_KEYLEN: Final = 9
KP_SALT_EX: Final = 10
KP_EFFECTIVE_KEYLEN: Final = 19

KP_NAMES: Final[dict[int, str]] = {
    KP_IV: "KP_IV",
    KP_SALT: "KP_SALT",
    KP_PADDING: "KP_PADDING",
    KP_MODE: "KP_MODE",
    KP_MODE_BITS: "KP_MODE_BITS",
    KP_PERMISSIONS: "KP_PERMISSIONS",
    KP_ALGID: "KP_ALGID",
    KP_BLOCKLEN: "KP_BLOCKLEN",
    KP_KEYLEN: "KP_KEYLEN",
    KP_SALT_EX: "KP_SALT_EX",
    KP_EFFECTIVE_KEYLEN: "KP_EFFECTIVE_KEYLEN",
}

# --- Cipher modes and padding ----------------------------------------------------------------------------
CRYPT_MODE_CBC: Final = 1
CRYPT_MODE_ECB: Final = 2
CRYPT_MODE_OFB: Final = 3
CRYPT_MODE_CFB: Final = 4
CRYPT_MODE_CTS: Final = 5
PKCS5_PADDING: Final = 1
RANDOM_PADDING: Final = 2
ZERO_PADDING: Final = 3

MODE_NAMES: Final[dict[int, str]] = {
    CRYPT_MODE_CBC: "CBC",
    CRYPT_MODE_ECB: "ECB",
    CRYPT_MODE_OFB: "OFB",
    CRYPT_MODE_CFB: "CFB",
    CRYPT_MODE_CTS: "CTS",
}

# --- Key permissions (KP_PERMISSIONS) --------------------------------------------------------------------
CRYPT_ENCRYPT: Final = 0x1
CRYPT_DECRYPT: Final = 0x2
CRYPT_EXPORT: Final = 0x4
CRYPT_READ: Final = 0x8
CRYPT_WRITE: Final = 0x10
CRYPT_MAC: Final = 0x20
CRYPT_EXPORT_KEY: Final = 0x40
CRYPT_IMPORT_KEY: Final = 0x80
CRYPT_ARCHIVE: Final = 0x100

# --- CryptGenKey / CryptImportKey / CryptExportKey flags -------------------------------------------------
CRYPT_EXPORTABLE: Final = 0x1
CRYPT_USER_PROTECTED: Final = 0x2
CRYPT_CREATE_SALT: Final = 0x4
CRYPT_UPDATE_KEY: Final = 0x8
CRYPT_NO_SALT: Final = 0x10
CRYPT_PREGEN: Final = 0x40
CRYPT_ARCHIVABLE: Final = 0x4000
CRYPT_IPSEC_HMAC_KEY: Final = 0x100
CRYPT_DESTROYKEY: Final = 0x4
CRYPT_SSL2_FALLBACK: Final = 0x2
CRYPT_OAEP: Final = 0x40

# --- Hash parameters --------------------------------------------------------------------------------------
HP_ALGID: Final = 0x1
HP_HASHVAL: Final = 0x2
HP_HASHSIZE: Final = 0x4
HP_HMAC_INFO: Final = 0x5

# --- Error codes: NTE_* HRESULTs as GetLastError() reports them, and the Win32 codes ----------------------
NTE_BAD_UID: Final = 0x80090001
NTE_BAD_HASH: Final = 0x80090002
NTE_BAD_KEY: Final = 0x80090003
NTE_BAD_LEN: Final = 0x80090004
NTE_BAD_DATA: Final = 0x80090005
NTE_BAD_SIGNATURE: Final = 0x80090006
NTE_BAD_VER: Final = 0x80090007
NTE_BAD_ALGID: Final = 0x80090008
NTE_BAD_FLAGS: Final = 0x80090009
NTE_BAD_TYPE: Final = 0x8009000A
NTE_BAD_KEY_STATE: Final = 0x8009000B
NTE_BAD_HASH_STATE: Final = 0x8009000C
NTE_NO_KEY: Final = 0x8009000D
NTE_NO_MEMORY: Final = 0x8009000E
NTE_PERM: Final = 0x80090010
NTE_NOT_FOUND: Final = 0x80090011
NTE_BAD_PUBLIC_KEY: Final = 0x80090015
NTE_FAIL: Final = 0x80090020
ERROR_INVALID_HANDLE: Final = 6
ERROR_BAD_FORMAT: Final = 11  # no model refusal: what a line-protocol peer answers a request outside the protocol
ERROR_INVALID_PARAMETER: Final = 87
ERROR_MORE_DATA: Final = 234


class ErrorCode(enum.IntEnum):
    """Every refusal code of the model (and the few codes a report may meet besides), printable as
    ``NTE_BAD_KEY (0x80090003)``."""

    NTE_BAD_UID = NTE_BAD_UID
    NTE_BAD_HASH = NTE_BAD_HASH
    NTE_BAD_KEY = NTE_BAD_KEY
    NTE_BAD_LEN = NTE_BAD_LEN
    NTE_BAD_DATA = NTE_BAD_DATA
    NTE_BAD_SIGNATURE = NTE_BAD_SIGNATURE
    NTE_BAD_VER = NTE_BAD_VER
    NTE_BAD_ALGID = NTE_BAD_ALGID
    NTE_BAD_FLAGS = NTE_BAD_FLAGS
    NTE_BAD_TYPE = NTE_BAD_TYPE
    NTE_BAD_KEY_STATE = NTE_BAD_KEY_STATE
    NTE_BAD_HASH_STATE = NTE_BAD_HASH_STATE
    NTE_NO_KEY = NTE_NO_KEY
    NTE_NO_MEMORY = NTE_NO_MEMORY
    NTE_PERM = NTE_PERM
    NTE_NOT_FOUND = NTE_NOT_FOUND
    NTE_BAD_PUBLIC_KEY = NTE_BAD_PUBLIC_KEY
    NTE_FAIL = NTE_FAIL
    ERROR_INVALID_HANDLE = ERROR_INVALID_HANDLE
    ERROR_BAD_FORMAT = ERROR_BAD_FORMAT
    ERROR_INVALID_PARAMETER = ERROR_INVALID_PARAMETER
    ERROR_MORE_DATA = ERROR_MORE_DATA

    def __str__(self) -> str:
        return f"{self.name} (0x{int(self):08X})"


def describe_code(code: int) -> str:
    """``NTE_BAD_KEY (0x80090003)`` for a known code, ``0x12345678`` for any other."""
    try:
        return str(ErrorCode(code))
    except ValueError:
        return f"0x{code & 0xFFFFFFFF:08X}"
