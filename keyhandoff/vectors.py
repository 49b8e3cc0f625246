"""Known-answer vectors (``data/kat.json``: NIST SP 800-38A, RFC 6229, Wine's rsaenh tests) run on any Target.

A vector is driven through the CryptoAPI surface: the key arrives as a PLAINTEXTKEYBLOB, salt (KP_SALT_EX),
effective key length, mode and IV are set with CryptSetKeyParam, and the plaintext goes through in chunks.
Between chunks a :data:`Action` may move the stream to another handle: an OPAQUEKEYBLOB handoff to the app side
(export, destroy, import) or a CryptDuplicateKey. Whatever the chunking and the moves, the bytes must be the vector's.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any, Literal

import attrs

from keyhandoff.model import wincrypt as w
from keyhandoff.target import Target

__all__ = ["Action", "Vector", "block_length", "load_vectors", "run_stream", "stream_plaintext"]

Action = Literal["handoff", "duplicate"] | None

_MODES = {"ECB": w.CRYPT_MODE_ECB, "CBC": w.CRYPT_MODE_CBC, "CFB": w.CRYPT_MODE_CFB}
_BLOCK = {w.CALG_RC4: 0, w.CALG_AES_128: 16, w.CALG_AES_192: 16, w.CALG_AES_256: 16}


def block_length(alg: int) -> int:
    """Bytes per block as the vectors need it (8 for the DES family and RC2)."""
    return _BLOCK.get(alg, 8)


@attrs.frozen
class Vector:
    id: str
    alg: int
    key: bytes = attrs.field(repr=False)
    plaintext: bytes
    ciphertext: bytes
    final: bool
    mode: int | None = None
    iv: bytes | None = None
    salt: bytes | None = None
    effective_keylen: int | None = None
    stream: tuple[tuple[int, bytes], ...] = ()  # RC4 keystream at offsets (RFC 6229)

    @property
    def block(self) -> int:
        return block_length(self.alg)

    def api_part(self, data: bytes) -> bytes:
        """What CryptoAPI can take of ``data``: a non-final call must be a block multiple, so a ragged
        non-final vector (SP 800-38A's 18-byte CFB-8) goes through as its whole-block prefix."""
        if self.final or not self.block:
            return data
        return data[: len(data) - len(data) % self.block]


def load_vectors(path: str | None = None) -> list[Vector]:
    """The shipped vectors (or a file of the same format). A file that is not one is ValueError, naming the
    file and, for a bad vector, its position; a file that cannot be read is OSError."""
    if path is None:
        text = resources.files("keyhandoff").joinpath("data/kat.json").read_text()
    else:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    where = path or "the shipped vectors"
    try:
        vectors = json.loads(text)["vectors"]
        if not isinstance(vectors, list):
            raise TypeError("'vectors' is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{where}: not a vector file in the kat.json format ({exc!s})") from None
    out = []
    for index, raw in enumerate(vectors):
        try:
            out.append(_vector(raw))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{where}: vector {index + 1} is malformed ({type(exc).__name__}: {exc!s})") from None
    return out


def _vector(raw: dict[str, Any]) -> Vector:
    stream = tuple(sorted((int(k), bytes.fromhex(v)) for k, v in raw.get("stream", {}).items()))
    if stream:
        end = stream[-1][0] + len(stream[-1][1])
        plaintext, ciphertext = bytes(end), b""
    else:
        plaintext, ciphertext = bytes.fromhex(raw["plaintext"]), bytes.fromhex(raw["ciphertext"])
    alg = getattr(w, raw["alg"]) if str(raw["alg"]).startswith("CALG_") else None
    if not isinstance(alg, int):
        raise ValueError(f"unknown algorithm {raw['alg']!r}")
    return Vector(
        id=str(raw["id"]),
        alg=alg,
        key=bytes.fromhex(raw["key"]),
        plaintext=plaintext,
        ciphertext=ciphertext,
        final=bool(raw.get("final", False)),
        mode=_MODES[raw["mode"]] if raw.get("mode") else None,
        iv=bytes.fromhex(raw["iv"]) if raw.get("iv") else None,
        salt=bytes.fromhex(raw["salt"]) if raw.get("salt") is not None else None,
        effective_keylen=raw.get("effective_keylen"),
        stream=stream,
    )


def prepare_key(target: Target, prov: int, vector: Vector) -> int:
    """Import the vector's key as a PLAINTEXTKEYBLOB and set its salt, effective length, mode and IV."""
    blob = struct.pack("<BBHII", w.PLAINTEXTKEYBLOB, w.CUR_BLOB_VERSION, 0, vector.alg, len(vector.key))
    key = target.import_key(prov, blob + vector.key, flags=w.CRYPT_EXPORTABLE)
    if vector.salt is not None:  # KP_SALT_EX: any length 0..24 (KP_SALT takes exactly 11 bytes)
        target.set_key_param(key, w.KP_SALT_EX, vector.salt)
    if vector.effective_keylen is not None:
        target.set_key_param(key, w.KP_EFFECTIVE_KEYLEN, vector.effective_keylen)
    if vector.mode is not None:
        target.set_key_param(key, w.KP_MODE, vector.mode)
    if vector.iv is not None:
        target.set_key_param(key, w.KP_IV, vector.iv)
    return key


def _move(target: Target, key: int, action: Action, app: int) -> int:
    if action == "handoff":
        blob = target.export_key(key, w.OPAQUEKEYBLOB)
        target.destroy_key(key)
        return target.import_key(app, blob)
    if action == "duplicate":
        twin = target.duplicate_key(key)
        target.destroy_key(key)
        return twin
    return key


def _chunks(data: bytes, cuts: Sequence[int]) -> Iterator[bytes]:
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        if start <= cut <= len(data):
            yield data[start:cut]
            start = cut


def run_stream(
    target: Target,
    vector: Vector,
    *,
    decrypt: bool = False,
    cuts: Sequence[int] = (),
    actions: Sequence[Action] = (),
) -> bytes:
    """Encrypt (or decrypt) the vector's input through ``target`` in chunks split at ``cuts``.

    ``actions[i]`` runs after chunk ``i``. Cuts must be block multiples for block ciphers (only the last,
    Final chunk may be ragged). The last chunk carries Final = ``vector.final``.
    """
    secure = target.acquire("secure")
    app = target.acquire("app")
    try:
        key = prepare_key(target, secure, vector)
        data = vector.api_part(vector.ciphertext if decrypt else vector.plaintext)
        pieces = list(_chunks(data, cuts))
        out = bytearray()
        for index, piece in enumerate(pieces):
            final = vector.final and index == len(pieces) - 1
            out += (target.decrypt if decrypt else target.encrypt)(key, piece, final)
            if index < len(actions):
                key = _move(target, key, actions[index], app)
        target.destroy_key(key)
        return bytes(out)
    finally:
        target.release(secure)
        target.release(app)


def stream_plaintext(vector: Vector) -> bytes:
    """For keystream vectors: the keystream bytes at each listed offset, concatenated."""
    return b"".join(chunk for _, chunk in vector.stream)


def matches(vector: Vector, output: bytes, *, decrypt: bool = False) -> bool:
    """Whether ``output`` of :func:`run_stream` is the vector's expected result."""
    if vector.stream:
        return all(output[offset : offset + len(chunk)] == chunk for offset, chunk in vector.stream)
    return output == vector.api_part(vector.plaintext if decrypt else vector.ciphertext)
