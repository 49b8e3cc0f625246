/* keyhandoff.impl._evp.FastImport: the CSP's CryptImportKey of its own OPAQUEKEYBLOB of a software AES or
 * DES-family key, in C.
 *
 * Why it exists: a handoff is one import in the app process, and the Python import (open the seal, decode and
 * check the payload, build the key record) costs about 19 us warm and twice that in a process just woken
 * (docs/benchmarks.md, section 3): more than the pipe round trip the goal is measured against. Here the import
 * of the blobs a handoff carries is one C call: the checks, XAES-256-GCM's open (impl/xaes.py, derived again
 * here from the installation's sealing key), the payload's checks, the LiveKey record with its C engine.
 *
 * It decides nothing. It accepts only what the Python import accepts (a live context; exactly bytes; hPubKey 0;
 * flags 0 or CRYPT_EXPORTABLE; no hardware flag; a blob this installation sealed whose payload is a software key
 * of an algorithm in its table, with no salt, no HMAC-only flag, no stream state, IV and register of one
 * block, a key length the algorithm imports, an effective length equal to the key's), and builds the record
 * the Python import builds from it; it then hands the key to the CSP's own registration (the Python
 * Csp._register). Anything else (another blob type, a forgery, a hardware key, an argument of another type)
 * goes, untouched, to the Python Csp.import_key, which refuses with its codes in its order or imports it.
 * tests/impl/test_fast_import.py compares the two on random and mutated blobs.
 *
 * Secrets: the decrypted payload is cleansed before returning; the key's one canonical copy is the record's
 * material bytearray (which destroy zeroes) and the engine's own buffer (cleansed on wipe). The sealing key
 * itself is not kept: only its AES-256 schedule (for the subkey derivation) and CMAC's K1. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "_evp.h"

#define OPAQUEKEYBLOB 9
#define CUR_BLOB_VERSION 2
#define CRYPT_EXPORTABLE 1
#define HEADER_BYTES 8
#define NONCE_BYTES 24
#define HALF 12
#define TAG_BYTES 16
#define FIXED_BYTES 40
/* The largest payload this path takes: the fixed part, IV and register of 16 bytes, an empty salt, a 32-byte
 * key: 40 + 17 + 17 + 1 + 4 + 32 = 111. Larger blobs go to the Python import. */
#define MAX_PLAIN 128
#define MAX_CIPHERS 8

static EVP_CIPHER *aes256_ecb, *aes256_gcm;
/* The names the registration looks up each time, interned once (a lookup by C string makes a string first). */
static PyObject *s_ready, *s_issued;

/* LiveKey's fields, every one of them set here (the constructor checks the class has exactly these). */
enum {
    K_PROVIDER, K_ALG, K_LOCATION, K_MATERIAL, K_SALT, K_KEY_BITS, K_EFFECTIVE, K_MODE, K_MODE_BITS, K_PADDING,
    K_IV, K_PERMISSIONS, K_LIFECYCLE, K_ENGINE, K_HMAC_ONLY, K_TOKEN_OBJECT, K_SALT_REPORTED, K_LOCK, K_TOMBSTONE,
    K_FAST_BLOCK, FIELDS
};
static const char *const FIELD_NAMES[FIELDS] = {
    "provider", "alg", "location", "material", "salt", "key_bits", "effective_keylen", "mode", "mode_bits",
    "padding", "iv", "permissions", "lifecycle", "engine", "hmac_only", "token_object", "salt_reported", "lock",
    "tombstone", "fast_block",
};

typedef struct {
    unsigned long alg;
    int block;
    unsigned long long lengths; /* bit n: a key of n bytes imports (n < 64) */
    char name[16];              /* the engine's cipher: "AES", "DES-EDE3" */
    PyObject *expand;           /* key -> the engine's key (DES family), or NULL: the key itself */
} Cipher;

typedef struct {
    PyObject_HEAD
    PyObject *handles;          /* the CSP's HandleTable (its issued count) */
    PyObject *table;            /* its dict of live entries */
    PyObject *dead;             /* its recent dead entries (an OrderedDict) */
    PyObject *sequence;         /* its HandleSequence (ready: the next handles, last first) */
    PyObject *table_lock, *csp_lock; /* HandleTable._lock, Csp._lock */
    unsigned long long space;   /* the table's space bits, above the permuted 60 */
    Py_ssize_t keys_off;        /* the provider record's `keys` slot (the handles it owns) */
    PyTypeObject *provider_type;
    PyTypeObject *key_type;     /* LiveKey */
    PyObject *new_lock;         /* threading.Lock */
    PyObject *software, *imported; /* Location.SOFTWARE, Lifecycle.IMPORTED */
    PyObject *register_key;     /* the CSP's own registration, when this one steps aside: key -> handle */
    PyObject *fallback;         /* the Python Csp.import_key, bound */
    Py_ssize_t alive_off;
    Py_ssize_t field_off[FIELDS];
    Cipher ciphers[MAX_CIPHERS];
    int n_ciphers;
    EVP_CIPHER_CTX *kdf;        /* AES-256-ECB under the sealing key: the subkey derivation's block function */
    unsigned char k1[16];       /* CMAC's first subkey of the sealing key */
    EVP_CIPHER_CTX *gcm;        /* AES-256-GCM under the subkey of gcm_half (one cached, as a handoff needs) */
    unsigned char gcm_half[HALF];
    int gcm_ready;
} FastImport;

static int
fast_import_traverse(FastImport *self, visitproc visit, void *arg)
{
    Py_VISIT(self->handles);
    Py_VISIT(self->table);
    Py_VISIT(self->dead);
    Py_VISIT(self->sequence);
    Py_VISIT(self->table_lock);
    Py_VISIT(self->csp_lock);
    Py_VISIT(self->provider_type);
    Py_VISIT(self->key_type);
    Py_VISIT(self->new_lock);
    Py_VISIT(self->software);
    Py_VISIT(self->imported);
    Py_VISIT(self->register_key);
    Py_VISIT(self->fallback);
    for (int i = 0; i < self->n_ciphers; i++)
        Py_VISIT(self->ciphers[i].expand);
    return 0;
}

static int
fast_import_clear(FastImport *self)
{
    Py_CLEAR(self->handles);
    Py_CLEAR(self->table);
    Py_CLEAR(self->dead);
    Py_CLEAR(self->sequence);
    Py_CLEAR(self->table_lock);
    Py_CLEAR(self->csp_lock);
    Py_CLEAR(self->provider_type);
    Py_CLEAR(self->key_type);
    Py_CLEAR(self->new_lock);
    Py_CLEAR(self->software);
    Py_CLEAR(self->imported);
    Py_CLEAR(self->register_key);
    Py_CLEAR(self->fallback);
    for (int i = 0; i < self->n_ciphers; i++)
        Py_CLEAR(self->ciphers[i].expand);
    return 0;
}

static void
fast_import_dealloc(FastImport *self)
{
    PyObject_GC_UnTrack(self);
    fast_import_clear(self);
    EVP_CIPHER_CTX_free(self->kdf); /* both cleanse their key schedules */
    EVP_CIPHER_CTX_free(self->gcm);
    OPENSSL_cleanse(self->k1, sizeof self->k1);
    PyObject_GC_Del(self);
}

/* AES-256 of whole blocks under the sealing key. 0, or -1 (libcrypto failed; its error queue cleared). */
static int
kdf_blocks(FastImport *self, const unsigned char *in, unsigned char *out, int len)
{
    int produced = 0;
    if (EVP_EncryptUpdate(self->kdf, out, &produced, in, len) != 1 || produced != len) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

/* One Cipher entry from (name, block, lengths, expand). 0, or -1 with an error. */
static int
cipher_from(Cipher *cipher, PyObject *alg, PyObject *spec)
{
    const char *name;
    int block;
    PyObject *lengths, *expand;
    if (!PyArg_ParseTuple(spec, "siOO:FastImport cipher", &name, &block, &lengths, &expand))
        return -1;
    cipher->alg = PyLong_AsUnsignedLong(alg);
    if (cipher->alg == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (strlen(name) >= sizeof cipher->name || (block != 8 && block != 16)
        || (expand != Py_None && !PyCallable_Check(expand))) {
        PyErr_SetString(PyExc_ValueError, "FastImport: a cipher is (name, block 8 or 16, key lengths, expand)");
        return -1;
    }
    strcpy(cipher->name, name);
    cipher->block = block;
    cipher->lengths = 0;
    PyObject *iter = PyObject_GetIter(lengths);
    if (iter == NULL)
        return -1;
    PyObject *item;
    while ((item = PyIter_Next(iter)) != NULL) {
        long n = PyLong_AsLong(item);
        Py_DECREF(item);
        if (n == -1 && PyErr_Occurred())
            break;
        if (n < 1 || n > 32) { /* what the engines take; longer keys are another path's */
            PyErr_SetString(PyExc_ValueError, "FastImport: a key length is 1..32 bytes");
            break;
        }
        cipher->lengths |= 1ULL << n;
    }
    Py_DECREF(iter);
    if (PyErr_Occurred())
        return -1;
    cipher->expand = expand == Py_None ? NULL : Py_NewRef(expand);
    return 0;
}

/* The constructor's checks of the record class: exactly FIELD_NAMES (and __weakref__) as object slots. */
static int
key_fields(PyTypeObject *key_type, Py_ssize_t *offsets)
{
    PyObject *slots = PyObject_GetAttrString((PyObject *)key_type, "__slots__");
    if (slots == NULL)
        return -1;
    PyObject *names = PySequence_Tuple(slots);
    Py_DECREF(slots);
    if (names == NULL)
        return -1;
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_Check(name) || PyUnicode_CompareWithASCIIString(name, "__weakref__") != 0)
            count++;
    }
    Py_DECREF(names);
    if (count != FIELDS) {
        PyErr_Format(PyExc_TypeError, "FastImport: %s has %zd fields, this path sets %d", key_type->tp_name, count,
                     FIELDS);
        return -1;
    }
    for (int f = 0; f < FIELDS; f++) {
        if ((offsets[f] = slot_offset(key_type, FIELD_NAMES[f])) < 0)
            return -1;
    }
    return 0;
}

/* Whether obj.name is a plain attribute: read and written by the generic functions, with no descriptor on the
 * type but a slot's (so no Python code runs for it, as lock_free's rule asks). 0, or -1 with TypeError. */
static int
plain_attribute(PyObject *obj, PyObject *name)
{
    PyTypeObject *type = Py_TYPE(obj);
    int plain = type->tp_getattro == PyObject_GenericGetAttr && type->tp_setattro == PyObject_GenericSetAttr;
    if (plain) {
        PyObject *on_type = PyObject_GetAttr((PyObject *)type, name);
        if (on_type == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            PyErr_Clear();
        }
        else {
            plain = Py_IS_TYPE(on_type, &PyMemberDescr_Type);
            Py_DECREF(on_type);
        }
    }
    if (!plain) {
        PyErr_Format(PyExc_TypeError, "FastImport: %s.%U is not a plain attribute", type->tp_name, name);
        return -1;
    }
    return 0;
}

static PyObject *
fast_import_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"handles", "csp_lock", "provider_type", "key_type", "new_lock", "seal_key", "ciphers",
                             "software", "imported", "register", "fallback", NULL};
    PyObject *handles, *parts, *table, *dead, *sequence, *table_lock, *space_obj;
    PyObject *csp_lock, *provider_type, *key_type, *new_lock, *ciphers, *software, *imported, *reg, *fallback;
    Py_buffer seal_key;
    (void)type;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!O!Oy*O!OOOO:FastImport", kwlist, &handles, &csp_lock,
                                     &PyType_Type, &provider_type, &PyType_Type, &key_type, &new_lock, &seal_key,
                                     &PyDict_Type, &ciphers, &software, &imported, &reg, &fallback))
        return NULL;
    FastImport *self = NULL;
    /* HandleTable.native_issue: what issuing a handle as HandleTable.issue does takes. */
    parts = PyObject_CallMethod(handles, "native_issue", NULL);
    if (parts == NULL)
        goto fail;
    int parsed = PyArg_ParseTuple(parts, "OO!O!OO!:native_issue", &table_lock, &PyDict_Type, &table, &PyDict_Type,
                                  &dead, &sequence, &PyLong_Type, &space_obj);
    Py_DECREF(parts); /* the table holds each part */
    if (!parsed)
        goto fail;
    unsigned long long space = PyLong_AsUnsignedLongLong(space_obj);
    if (space == (unsigned long long)-1 && PyErr_Occurred())
        goto fail;
    if ((PyObject *)Py_TYPE(table_lock) != lock_type || (PyObject *)Py_TYPE(csp_lock) != lock_type) {
        PyErr_SetString(PyExc_TypeError, "FastImport: the table's lock and the CSP's are threading.Lock");
        goto fail;
    }
    if (plain_attribute(handles, s_issued) < 0 || plain_attribute(sequence, s_ready) < 0)
        goto fail;
    if (seal_key.len != 32 || !PyCallable_Check(new_lock) || !PyCallable_Check(reg) || !PyCallable_Check(fallback)
        || PyDict_GET_SIZE(ciphers) > MAX_CIPHERS) {
        PyErr_SetString(PyExc_ValueError,
                        "FastImport: a 32-byte sealing key, callable new_lock, register and fallback, at most 8 ciphers");
        goto fail;
    }
    self = PyObject_GC_New(FastImport, &FastImportType);
    if (self == NULL)
        goto fail;
    self->handles = Py_NewRef(handles);
    self->table = Py_NewRef(table);
    self->dead = Py_NewRef(dead);
    self->sequence = Py_NewRef(sequence);
    self->table_lock = Py_NewRef(table_lock);
    self->csp_lock = Py_NewRef(csp_lock);
    self->space = space;
    self->provider_type = (PyTypeObject *)Py_NewRef(provider_type);
    self->key_type = (PyTypeObject *)Py_NewRef(key_type);
    self->new_lock = Py_NewRef(new_lock);
    self->software = Py_NewRef(software);
    self->imported = Py_NewRef(imported);
    self->register_key = Py_NewRef(reg);
    self->fallback = Py_NewRef(fallback);
    self->n_ciphers = 0;
    self->kdf = EVP_CIPHER_CTX_new();
    self->gcm = EVP_CIPHER_CTX_new();
    self->gcm_ready = 0;
    memset(self->k1, 0, sizeof self->k1);
    PyObject_GC_Track(self);
    if (self->kdf == NULL || self->gcm == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    if (key_fields(self->key_type, self->field_off) < 0
        || (self->alive_off = slot_offset(self->provider_type, "alive")) < 0
        || (self->keys_off = slot_offset(self->provider_type, "keys")) < 0)
        goto fail;
    Py_ssize_t pos = 0;
    PyObject *alg, *spec;
    while (PyDict_Next(ciphers, &pos, &alg, &spec)) {
        if (cipher_from(&self->ciphers[self->n_ciphers], alg, spec) < 0)
            goto fail;
        self->n_ciphers++;
    }
    /* K1 = dbl(AES_K(0^128)) (CMAC, NIST SP 800-38B), as keyhandoff.impl.xaes computes it. */
    unsigned char zero[16] = {0}, l[16];
    if (EVP_EncryptInit_ex(self->kdf, aes256_ecb, NULL, seal_key.buf, NULL) != 1
        || EVP_CIPHER_CTX_set_padding(self->kdf, 0) != 1 || kdf_blocks(self, zero, l, 16) < 0) {
        ERR_clear_error();
        PyErr_SetString(PyExc_RuntimeError, "libcrypto refused the sealing key");
        goto fail;
    }
    for (int i = 0; i < 16; i++)
        self->k1[i] = (unsigned char)((l[i] << 1) | (i < 15 ? l[i + 1] >> 7 : 0));
    if (l[0] & 0x80)
        self->k1[15] ^= 0x87;
    OPENSSL_cleanse(l, sizeof l);
    PyBuffer_Release(&seal_key);
    return (PyObject *)self;
fail:
    PyBuffer_Release(&seal_key);
    Py_XDECREF(self);
    return NULL;
}

static inline unsigned long
u32le(const unsigned char *p)
{
    return (unsigned long)p[0] | (unsigned long)p[1] << 8 | (unsigned long)p[2] << 16 | (unsigned long)p[3] << 24;
}

/* XAES-256-GCM open of blob (header as associated data) into plain. The payload's length, or -1 when it is not
 * this installation's seal (or libcrypto failed): the Python import then answers it. */
static Py_ssize_t
open_seal(FastImport *self, const unsigned char *blob, Py_ssize_t len, unsigned char *plain)
{
    const unsigned char *nonce = blob + HEADER_BYTES;
    const unsigned char *sealed = nonce + NONCE_BYTES;
    int sealed_len = (int)(len - HEADER_BYTES - NONCE_BYTES - TAG_BYTES);
    if (!self->gcm_ready || memcmp(self->gcm_half, nonce, HALF) != 0) {
        /* The subkey: AES_K(M1 xor K1) || AES_K(M2 xor K1), M_i = 00 i 'X' 00 || the nonce's first half. */
        unsigned char m[32], subkey[32];
        for (int i = 0; i < 2; i++) {
            unsigned char *block = m + 16 * i;
            block[0] = 0x00;
            block[1] = (unsigned char)(i + 1);
            block[2] = 0x58;
            block[3] = 0x00;
            memcpy(block + 4, nonce, HALF);
            for (int j = 0; j < 16; j++)
                block[j] ^= self->k1[j];
        }
        self->gcm_ready = 0;
        int keyed = kdf_blocks(self, m, subkey, 32) == 0
                    && EVP_DecryptInit_ex(self->gcm, aes256_gcm, NULL, subkey, NULL) == 1;
        OPENSSL_cleanse(subkey, sizeof subkey);
        if (!keyed) {
            ERR_clear_error();
            return -1;
        }
        memcpy(self->gcm_half, nonce, HALF);
        self->gcm_ready = 1;
    }
    int n = 0, tail = 0;
    if (EVP_DecryptInit_ex(self->gcm, NULL, NULL, NULL, nonce + HALF) != 1
        || EVP_DecryptUpdate(self->gcm, NULL, &n, blob, HEADER_BYTES) != 1
        || EVP_DecryptUpdate(self->gcm, plain, &n, sealed, sealed_len) != 1
        || EVP_CIPHER_CTX_ctrl(self->gcm, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, (void *)(sealed + sealed_len)) != 1
        || EVP_DecryptFinal_ex(self->gcm, plain + n, &tail) != 1) {
        ERR_clear_error();
        OPENSSL_cleanse(plain, MAX_PLAIN);
        return -1;
    }
    return n + tail;
}

/* The payload's fields, once checked. */
typedef struct {
    unsigned long key_bits, effective, mode, mode_bits, padding, permissions;
    const unsigned char *iv, *reg, *key;
    Py_ssize_t key_len;
} Payload;

/* Whether `p` (n bytes) is a version 1 or 2 payload of a software key of `cipher` this path takes (see the top
 * of this file); Python's decode_payload and _consistent accept each such payload. */
static int
payload_fits(const Cipher *cipher, unsigned long header_alg, const unsigned char *p, Py_ssize_t n, Payload *out)
{
    if (n < FIXED_BYTES || (p[0] != 1 && p[0] != 2) || p[1] != 0 || p[2] < 1 || p[2] > 3 || p[3] != 0)
        return 0; /* the version, a software key, the lifecycle code, no flags */
    if (u32le(p + 4) != header_alg)
        return 0;
    out->key_bits = u32le(p + 8);
    out->effective = u32le(p + 12);
    out->mode = u32le(p + 16);
    out->mode_bits = u32le(p + 20);
    out->padding = u32le(p + 24);
    out->permissions = u32le(p + 28);
    for (int i = 32; i < 40; i++) {
        if (p[i] != 0)
            return 0; /* a stream position: not a block cipher's */
    }
    Py_ssize_t at = FIXED_BYTES, block = cipher->block;
    if (at + 1 + block + 1 + block + 1 + 4 > n || p[at] != block)
        return 0;
    out->iv = p + at + 1;
    at += 1 + block;
    if (p[at] != block)
        return 0;
    out->reg = p + at + 1;
    at += 1 + block;
    if (p[at] != 0)
        return 0; /* a salt: block ciphers take none */
    at += 1;
    unsigned long key_len = u32le(p + at);
    at += 4;
    if (key_len < 1 || key_len > 32 || at + (Py_ssize_t)key_len != n || !(cipher->lengths >> key_len & 1))
        return 0;
    if (out->key_bits != key_len * 8 || out->effective != out->key_bits)
        return 0;
    out->key = p + at;
    out->key_len = (Py_ssize_t)key_len;
    return 1;
}

/* The record the Python import builds from this payload. New reference, or NULL with an error. */
static PyObject *
build_key(FastImport *self, const Cipher *cipher, PyObject *prov, const Payload *pl)
{
    PyObject *values[FIELDS] = {NULL};
    PyObject *key = NULL, *expanded = NULL;
    const unsigned char *engine_key = pl->key;
    Py_ssize_t engine_key_len = pl->key_len;
    if (cipher->expand != NULL) {
        PyObject *plain_key = PyBytes_FromStringAndSize((const char *)pl->key, pl->key_len);
        if (plain_key == NULL)
            goto done;
        expanded = PyObject_CallOneArg(cipher->expand, plain_key);
        Py_DECREF(plain_key);
        if (expanded == NULL)
            goto done;
        if (!PyBytes_Check(expanded)) {
            PyErr_SetString(PyExc_TypeError, "FastImport: a key expansion must give bytes");
            goto done;
        }
        engine_key = (const unsigned char *)PyBytes_AS_STRING(expanded);
        engine_key_len = PyBytes_GET_SIZE(expanded);
    }
    int family = block_cipher_family(cipher->name, engine_key_len);
    if (family < 0) {
        PyErr_SetString(PyExc_ValueError, "FastImport: the key expansion gave a length the engine does not take");
        goto done;
    }
    values[K_PROVIDER] = Py_NewRef(prov);
    values[K_ALG] = PyLong_FromUnsignedLong(cipher->alg);
    values[K_LOCATION] = Py_NewRef(self->software);
    values[K_MATERIAL] = PyByteArray_FromStringAndSize((const char *)pl->key, pl->key_len);
    values[K_SALT] = PyBytes_FromStringAndSize(NULL, 0);
    values[K_KEY_BITS] = PyLong_FromUnsignedLong(pl->key_bits);
    values[K_EFFECTIVE] = PyLong_FromUnsignedLong(pl->effective);
    values[K_MODE] = PyLong_FromUnsignedLong(pl->mode);
    values[K_MODE_BITS] = PyLong_FromUnsignedLong(pl->mode_bits);
    values[K_PADDING] = PyLong_FromUnsignedLong(pl->padding);
    values[K_IV] = PyBytes_FromStringAndSize((const char *)pl->iv, cipher->block);
    values[K_PERMISSIONS] = PyLong_FromUnsignedLong(pl->permissions);
    values[K_LIFECYCLE] = Py_NewRef(self->imported);
    values[K_ENGINE] = (PyObject *)block_cipher_new(family, engine_key, pl->reg);
    values[K_HMAC_ONLY] = Py_NewRef(Py_False);
    values[K_TOKEN_OBJECT] = PyLong_FromLong(0);
    values[K_SALT_REPORTED] = Py_NewRef(Py_True);
    values[K_LOCK] = PyObject_CallNoArgs(self->new_lock);
    values[K_TOMBSTONE] = Py_NewRef(Py_None);
    values[K_FAST_BLOCK] = PyLong_FromLong(cipher->block);
    for (int f = 0; f < FIELDS; f++) {
        if (values[f] == NULL)
            goto done;
    }
    key = self->key_type->tp_alloc(self->key_type, 0);
    if (key == NULL)
        goto done;
    for (int f = 0; f < FIELDS; f++) {
        SLOT(key, self->field_off[f]) = values[f]; /* the reference moves into the record */
        values[f] = NULL;
    }
done:
    for (int f = 0; f < FIELDS; f++)
        Py_XDECREF(values[f]);
    Py_XDECREF(expanded);
    return key;
}

/* Csp._register and HandleTable.issue, for the usual case (see HandleTable.native_issue): the CSP's lock and the
 * table's both free (lock_free), the context still alive, the sequence's next handle usable.
 * 1 with *out the handle (or NULL with an error), 0 when any of that does not hold (nothing done: the CSP's
 * own registration runs, and waits, refills, skips or kills the key as it must). */
static int
register_here(FastImport *self, PyObject *key, PyObject *prov, PyObject **out)
{
    *out = NULL;
    int unheld = lock_free(self->csp_lock);
    if (unheld > 0)
        unheld = lock_free(self->table_lock);
    if (unheld <= 0)
        return unheld < 0;
    /* From here to the end: no GIL release, no Python code, no collection (see lock_free). The attributes are
     * plain (checked at construction), the keys exact ints, the values dropped ints. */
    PyObject *provider = PyDict_GetItemWithError(self->table, prov);
    PyObject *ready = PyObject_GetAttr(self->sequence, s_ready);
    Py_ssize_t n = ready != NULL && PyList_CheckExact(ready) ? PyList_GET_SIZE(ready) : 0;
    PyObject *handle = NULL;
    int done = 0;
    if (PyErr_Occurred()) {
        done = 1;
        goto end;
    }
    if (provider == NULL || Py_TYPE(provider) != self->provider_type || SLOT(provider, self->alive_off) != Py_True
        || n == 0)
        goto end;
    unsigned long long low = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(ready, n - 1));
    if (low == (unsigned long long)-1 && PyErr_Occurred()) {
        done = 1;
        goto end;
    }
    handle = PyLong_FromUnsignedLongLong(self->space | low);
    if (handle == NULL) {
        done = 1;
        goto end;
    }
    int live = PyDict_Contains(self->table, handle), dead = live ? 0 : PyDict_Contains(self->dead, handle);
    if (live < 0 || dead < 0) {
        done = 1;
        goto end;
    }
    if (live || dead || (self->space | low) == 0)
        goto end;
    PyObject *keys = SLOT(provider, self->keys_off);
    PyObject *issued = PyObject_GetAttr(self->handles, s_issued);
    long long count = issued == NULL ? -1 : PyLong_AsLongLong(issued);
    PyObject *counted = count < 0 || PyErr_Occurred() ? NULL : PyLong_FromLongLong(count + 1);
    Py_XDECREF(issued);
    done = 1;
    if (counted == NULL || keys == NULL || !PySet_CheckExact(keys)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "FastImport: a context's keys are a set");
        Py_XDECREF(counted);
        goto end;
    }
    /* The table's writes, in issue's order, then the context's (Csp._register). */
    int stored = PySequence_DelItem(ready, n - 1) == 0 && PyDict_SetItem(self->table, handle, key) == 0
                 && PyObject_SetAttr(self->handles, s_issued, counted) == 0 && PySet_Add(keys, handle) == 0;
    Py_DECREF(counted);
    if (stored)
        *out = Py_NewRef(handle);
end:
    Py_XDECREF(handle);
    Py_XDECREF(ready);
    return done;
}

/* 1 when the fast path ran (*out: the handle, or NULL with an error), 0 when it did not apply (nothing done). */
static int
fast_import_try(FastImport *self, PyObject *prov, PyObject *blob, PyObject **out)
{
    *out = NULL;
    if (self->table == NULL)
        return 0;
    PyObject *provider = PyDict_GetItemWithError(self->table, prov); /* lock-free, as HandleTable.get */
    if (provider == NULL)
        return PyErr_Occurred() ? 1 : 0;
    if (Py_TYPE(provider) != self->provider_type || SLOT(provider, self->alive_off) != Py_True)
        return 0;
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(blob);
    Py_ssize_t len = PyBytes_GET_SIZE(blob);
    if (len <= HEADER_BYTES + NONCE_BYTES + TAG_BYTES || len > HEADER_BYTES + NONCE_BYTES + MAX_PLAIN + TAG_BYTES)
        return 0;
    if (b[0] != OPAQUEKEYBLOB || b[1] != CUR_BLOB_VERSION || b[2] != 0 || b[3] != 0)
        return 0;
    unsigned long alg = u32le(b + 4);
    const Cipher *cipher = NULL;
    for (int i = 0; i < self->n_ciphers; i++) {
        if (self->ciphers[i].alg == alg)
            cipher = &self->ciphers[i];
    }
    if (cipher == NULL)
        return 0;
    unsigned char plain[MAX_PLAIN];
    Py_ssize_t n = open_seal(self, b, len, plain);
    if (n < 0)
        return 0;
    Payload payload;
    int fits = payload_fits(cipher, alg, plain, n, &payload);
    PyObject *key = fits ? build_key(self, cipher, prov, &payload) : NULL;
    OPENSSL_cleanse(plain, sizeof plain);
    if (!fits)
        return 0;
    if (key != NULL) {
        if (!register_here(self, key, prov, out) && !PyErr_Occurred())
            *out = PyObject_CallOneArg(self->register_key, key); /* the CSP's: a context gone kills the key */
        Py_DECREF(key);
    }
    return 1;
}

/* import_key(prov, blob, *, pub_key=0, flags=0, hardware=False). */
static PyObject *
fast_import_call(FastImport *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    int plain_call = nargs == 2 && PyLong_CheckExact(args[0]) && PyBytes_CheckExact(args[1]);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; plain_call && i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i), *value = args[nargs + i];
        if (PyUnicode_CompareWithASCIIString(name, "pub_key") == 0)
            plain_call = PyLong_CheckExact(value) && PyLong_AsLong(value) == 0;
        else if (PyUnicode_CompareWithASCIIString(name, "flags") == 0) {
            long flags = PyLong_CheckExact(value) ? PyLong_AsLong(value) : -1;
            plain_call = flags == 0 || flags == CRYPT_EXPORTABLE; /* an opaque import's only flag; adds nothing */
        }
        else if (PyUnicode_CompareWithASCIIString(name, "hardware") == 0)
            plain_call = value == Py_False;
        else
            plain_call = 0;
        if (PyErr_Occurred()) /* a value too large for a long: not 0 anyway */
            PyErr_Clear();
    }
    if (plain_call) {
        PyObject *result;
        if (fast_import_try(self, args[0], args[1], &result))
            return result;
    }
    if (self->fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the fast path was cleared");
        return NULL;
    }
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

static PyObject *
fast_import_repr(FastImport *self)
{
    (void)self;
    return PyUnicode_FromString("<FastImport>");
}

static PyMethodDef fast_import_methods[] = {
    {"import_key", (PyCFunction)(void (*)(void))fast_import_call, METH_FASTCALL | METH_KEYWORDS,
     "import_key(prov, blob, *, pub_key=0, flags=0, hardware=False): CryptImportKey; the fast path for this\n"
     "installation's OPAQUEKEYBLOB of a software block-cipher key, else the fallback."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject FastImportType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keyhandoff.impl._evp.FastImport",
    .tp_basicsize = sizeof(FastImport),
    .tp_dealloc = (destructor)fast_import_dealloc,
    .tp_repr = (reprfunc)fast_import_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "FastImport(handles, csp_lock, provider_type, key_type, new_lock, seal_key, ciphers, software,\n"
              "imported, register, fallback): the CSP's import of its own opaque blobs of software block-cipher keys.",
    .tp_traverse = (traverseproc)fast_import_traverse,
    .tp_clear = (inquiry)fast_import_clear,
    .tp_methods = fast_import_methods,
    .tp_new = fast_import_tp_new,
};

int
fast_import_ready(void)
{
    if (aes256_ecb == NULL && (aes256_ecb = EVP_CIPHER_fetch(NULL, "AES-256-ECB", NULL)) == NULL) {
        PyErr_SetString(PyExc_ImportError, "libcrypto has no AES-256-ECB");
        return -1;
    }
    if (aes256_gcm == NULL && (aes256_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL)) == NULL) {
        PyErr_SetString(PyExc_ImportError, "libcrypto has no AES-256-GCM");
        return -1;
    }
    if ((s_ready == NULL && (s_ready = PyUnicode_InternFromString("ready")) == NULL)
        || (s_issued == NULL && (s_issued = PyUnicode_InternFromString("issued")) == NULL))
        return -1;
    return PyType_Ready(&FastImportType);
}
