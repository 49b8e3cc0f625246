/* keyhandoff.impl._evp: the block-cipher engine and the per-call fast path in C, on libcrypto's EVP.
 *
 * Why it exists: a 16-byte encrypt through the Python CSP costs about four times a raw `cryptography`
 * update(), and docs/benchmarks.md measured that no Python (or C-calling-Python) fast path gets under three:
 * the interpreter's frames, attribute reads and the per-key lock cost more than the cipher. Here the whole
 * non-Final call on a live software AES or DES-family key is one C function: the handle-table lookup, the
 * key record's slots read directly, the key's lock found free (lock_free, _evp.h), EVP_CipherUpdate, the register
 * kept, all without releasing the GIL.
 * Anything else (Final, a refusal, another engine, a contended lock, arguments of another type) goes to the
 * Python method given as the fallback, untouched, so every rule, code and order stays the Python CSP's.
 *
 * BlockCipher is an engine (keyhandoff.impl.engines.Engine): AES-128/192/256 and DES-EDE3 (DES and 3DES-112
 * arrive as their EDE3 keys) in ECB, CBC and CFB-8, over whole blocks. Encrypt and decrypt share one feedback
 * register, as in CryptoAPI: one EVP context runs the current (mode, direction) and is re-keyed from the
 * register when either changes or the register is reset. Key bytes live in this object only: OPENSSL_cleanse
 * on wipe() and on deallocation, and EVP_CIPHER_CTX_free cleanses the schedule.
 *
 * Nothing here releases the GIL or runs Python code while a key's state is half-updated; the module declares
 * no free-threading support, so a free-threaded build keeps the GIL on for it. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "_evp.h"

/* wincrypt's CRYPT_MODE_* values. */
#define MODE_CBC 1
#define MODE_ECB 2
#define MODE_CFB 4

enum { IDX_ECB, IDX_CBC, IDX_CFB8, MODES };

static const char *const CIPHER_NAMES[FAMILIES][MODES] = {
    {"AES-128-ECB", "AES-128-CBC", "AES-128-CFB8"},
    {"AES-192-ECB", "AES-192-CBC", "AES-192-CFB8"},
    {"AES-256-ECB", "AES-256-CBC", "AES-256-CFB8"},
    {"DES-EDE3-ECB", "DES-EDE3-CBC", "DES-EDE3-CFB8"},
};
static const int KEY_BYTES[FAMILIES] = {16, 24, 32, 24};
static const int BLOCK_BYTES[FAMILIES] = {16, 16, 16, 8};
static const char *const FAMILY_NAMES[FAMILIES] = {"AES-128", "AES-192", "AES-256", "DES-EDE3"};

/* Fetched once at import: an EVP_CIPHER_fetch per context would cost more than a 16-byte call. */
static EVP_CIPHER *ciphers[FAMILIES][MODES];

/* EVP takes int lengths; larger calls go in chunks of whole blocks. */
#define CHUNK (1 << 30)

static int
mode_index(long mode)
{
    switch (mode) {
    case MODE_ECB: return IDX_ECB;
    case MODE_CBC: return IDX_CBC;
    case MODE_CFB: return IDX_CFB8;
    default: return -1;
    }
}

/* --- BlockCipher ------------------------------------------------------------------------------------- */

PyTypeObject BlockCipherType;

static void
block_cipher_clear_secret(BlockCipher *self)
{
    OPENSSL_cleanse(self->key, sizeof self->key);
    OPENSSL_cleanse(self->reg, sizeof self->reg);
    if (self->ctx != NULL) {
        EVP_CIPHER_CTX_free(self->ctx); /* cleanses the key schedule */
        self->ctx = NULL;
    }
    self->ctx_mode = -1;
}

BlockCipher *
block_cipher_new(int family, const unsigned char *key, const unsigned char *reg)
{
    BlockCipher *self = PyObject_New(BlockCipher, &BlockCipherType);
    if (self == NULL)
        return NULL;
    self->family = family;
    self->block = BLOCK_BYTES[family];
    self->wiped = 0;
    self->ctx_mode = -1;
    self->ctx_decrypt = 0;
    self->ctx = NULL; /* made on first use: an engine handed on unused costs nothing */
    memset(self->key, 0, sizeof self->key);
    memset(self->reg, 0, sizeof self->reg);
    memcpy(self->key, key, (size_t)KEY_BYTES[family]);
    memcpy(self->reg, reg, (size_t)self->block);
    return self;
}

static PyObject *
block_cipher_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"cipher", "key", "register", NULL};
    const char *name;
    Py_buffer key, reg;
    (void)type;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sy*y*:BlockCipher", kwlist, &name, &key, &reg))
        return NULL;
    PyObject *result = NULL;
    int family = block_cipher_family(name, key.len);
    if (family < 0) {
        if (strcmp(name, "AES") == 0)
            PyErr_Format(PyExc_ValueError, "an AES key is 16, 24 or 32 bytes, got %zd", key.len);
        else if (strcmp(name, "DES-EDE3") == 0)
            PyErr_Format(PyExc_ValueError, "a DES-EDE3 key is 24 bytes, got %zd", key.len);
        else
            PyErr_Format(PyExc_ValueError, "no EVP engine for %s (AES, DES-EDE3)", name);
    }
    else {
        if (reg.len != BLOCK_BYTES[family])
            PyErr_Format(PyExc_ValueError, "the register must be one block (%d bytes), got %zd",
                         BLOCK_BYTES[family], reg.len);
        else
            result = (PyObject *)block_cipher_new(family, key.buf, reg.buf);
    }
    PyBuffer_Release(&key);
    PyBuffer_Release(&reg);
    return result;
}

static void
block_cipher_dealloc(BlockCipher *self)
{
    block_cipher_clear_secret(self);
    PyObject_Free(self);
}

int
block_cipher_family(const char *name, Py_ssize_t key_len)
{
    if (strcmp(name, "AES") == 0)
        return key_len == 16 ? AES128 : key_len == 24 ? AES192 : key_len == 32 ? AES256 : -1;
    if (strcmp(name, "DES-EDE3") == 0)
        return key_len == 24 ? DES_EDE3 : -1;
    return -1;
}

/* The context for (mode, direction), re-keyed from the register when either changed. 0, or -1 with an error. */
static int
block_cipher_ready(BlockCipher *self, int index, int decrypt)
{
    if (self->ctx_mode == index && self->ctx_decrypt == decrypt)
        return 0;
    if (self->ctx == NULL && (self->ctx = EVP_CIPHER_CTX_new()) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->ctx_mode = -1;
    const unsigned char *iv = index == IDX_ECB ? NULL : self->reg;
    if (EVP_CipherInit_ex(self->ctx, ciphers[self->family][index], NULL, self->key, iv, decrypt ? 0 : 1) != 1
        || EVP_CIPHER_CTX_set_padding(self->ctx, 0) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto refused to key the cipher context");
        return -1;
    }
    self->ctx_mode = index;
    self->ctx_decrypt = decrypt;
    return 0;
}

/* 0 for a live engine; -1 with ValueError for a wiped one (its key died): it runs, resets and clones nothing. */
static int
refuse_if_wiped(BlockCipher *self)
{
    if (!self->wiped)
        return 0;
    PyErr_SetString(PyExc_ValueError, "the engine was wiped (its key is dead)");
    return -1;
}

/* Whole blocks of `in` (len > 0, checked by the caller) through the live context; the register moves on. */
static PyObject *
block_cipher_crypt(BlockCipher *self, int index, const unsigned char *in, Py_ssize_t len, int decrypt)
{
    if (block_cipher_ready(self, index, decrypt) < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, len);
    if (out == NULL)
        return NULL;
    unsigned char *buf = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t done = 0; done < len;) {
        int step = len - done > CHUNK ? CHUNK : (int)(len - done);
        int produced = 0;
        if (EVP_CipherUpdate(self->ctx, buf + done, &produced, in + done, step) != 1 || produced != step) {
            /* The context's position is unknown now: re-key from the register (unchanged) next time. */
            self->ctx_mode = -1;
            Py_DECREF(out);
            PyErr_SetString(PyExc_RuntimeError, "libcrypto failed a cipher update");
            return NULL;
        }
        done += step;
    }
    /* CBC: the last ciphertext block; CFB-8: the last block-length ciphertext bytes, the same thing for whole
     * blocks. ECB has no feedback. Updated only after the cipher succeeded. */
    if (index != IDX_ECB)
        memcpy(self->reg, (decrypt ? in : buf) + len - self->block, (size_t)self->block);
    return out;
}

/* run and hot: mode, data (bytes-like), decrypt. */
static PyObject *
block_cipher_run_checked(BlockCipher *self, PyObject *mode_obj, PyObject *data, PyObject *decrypt_obj)
{
    if (refuse_if_wiped(self) < 0)
        return NULL;
    long mode = PyLong_AsLong(mode_obj);
    if (mode == -1 && PyErr_Occurred())
        return NULL;
    int decrypt = PyObject_IsTrue(decrypt_obj);
    if (decrypt < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    int index = mode_index(mode);
    if (view.len % self->block)
        PyErr_SetString(PyExc_ValueError, "block engines take whole blocks (the CSP checks lengths first)");
    else if (view.len == 0)
        result = PyBytes_FromStringAndSize(NULL, 0);
    else if (index < 0)
        PyErr_Format(PyExc_ValueError, "mode %ld is not runnable (the CSP refuses it first)", mode);
    else
        result = block_cipher_crypt(self, index, view.buf, view.len, decrypt);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
block_cipher_run(BlockCipher *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"mode", "data", "decrypt", NULL};
    PyObject *mode, *data, *decrypt;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO$O:run", kwlist, &mode, &data, &decrypt))
        return NULL;
    return block_cipher_run_checked(self, mode, data, decrypt);
}

static PyObject *
block_cipher_hot(BlockCipher *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "hot() takes 3 positional arguments (%zd given)", nargs);
        return NULL;
    }
    return block_cipher_run_checked(self, args[0], args[1], args[2]);
}

static PyObject *
block_cipher_reset(BlockCipher *self, PyObject *iv)
{
    if (refuse_if_wiped(self) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(iv, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len != self->block) {
        PyErr_Format(PyExc_ValueError, "the IV must be one block (%d bytes), got %zd", self->block, view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    memcpy(self->reg, view.buf, (size_t)self->block);
    PyBuffer_Release(&view);
    self->ctx_mode = -1; /* the context continued from the old register */
    Py_RETURN_NONE;
}

static PyObject *
block_cipher_wipe(BlockCipher *self, PyObject *Py_UNUSED(ignored))
{
    block_cipher_clear_secret(self);
    self->wiped = 1;
    Py_RETURN_NONE;
}

static PyObject *
block_cipher_clone(BlockCipher *self, PyObject *Py_UNUSED(ignored))
{
    if (refuse_if_wiped(self) < 0)
        return NULL;
    return (PyObject *)block_cipher_new(self->family, self->key, self->reg);
}

static PyObject *
block_cipher_register(BlockCipher *self, void *Py_UNUSED(closure))
{
    return PyBytes_FromStringAndSize((const char *)self->reg, self->block);
}

static PyObject *
block_cipher_stream_pos(BlockCipher *self, void *Py_UNUSED(closure))
{
    (void)self;
    return PyLong_FromLong(0);
}

static PyObject *
block_cipher_stream_state(BlockCipher *self, void *Py_UNUSED(closure))
{
    (void)self;
    return PyBytes_FromStringAndSize(NULL, 0);
}

/* White box: whether every byte of the key buffer is zero (the test that watches a destroy wipe it). */
static PyObject *
block_cipher_key_zeroed(BlockCipher *self, void *Py_UNUSED(closure))
{
    unsigned char any = 0;
    for (size_t i = 0; i < sizeof self->key; i++)
        any |= self->key[i];
    return PyBool_FromLong(any == 0);
}

static PyObject *
block_cipher_repr(BlockCipher *self)
{
    /* Never the key; the register is ciphertext, but a repr has no need of it either. */
    return PyUnicode_FromFormat("<BlockCipher %s%s>", FAMILY_NAMES[self->family], self->wiped ? ", wiped" : "");
}

static PyMethodDef block_cipher_methods[] = {
    {"run", (PyCFunction)(void (*)(void))block_cipher_run, METH_VARARGS | METH_KEYWORDS,
     "run(mode, data, *, decrypt): whole blocks in a usable CRYPT_MODE_*, moving the register on."},
    {"hot", (PyCFunction)(void (*)(void))block_cipher_hot, METH_FASTCALL, "hot(mode, data, decrypt, /): run."},
    {"reset", (PyCFunction)block_cipher_reset, METH_O, "reset(iv): register := iv."},
    {"wipe", (PyCFunction)block_cipher_wipe, METH_NOARGS, "The key died: zero the key, free the context."},
    {"clone", (PyCFunction)block_cipher_clone, METH_NOARGS, "An independent engine in exactly this state."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef block_cipher_getset[] = {
    {"register", (getter)block_cipher_register, NULL, "The live feedback register.", NULL},
    {"stream_pos", (getter)block_cipher_stream_pos, NULL, "0: a block cipher has no stream position.", NULL},
    {"stream_state", (getter)block_cipher_stream_state, NULL, "b\"\": a block cipher has no stream state.", NULL},
    {"key_zeroed", (getter)block_cipher_key_zeroed, NULL, "White box: the key buffer is all zeros.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject BlockCipherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keyhandoff.impl._evp.BlockCipher",
    .tp_basicsize = sizeof(BlockCipher),
    .tp_dealloc = (destructor)block_cipher_dealloc,
    .tp_repr = (reprfunc)block_cipher_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "BlockCipher(cipher, key, register): a live AES or DES-EDE3 engine on libcrypto's EVP.",
    .tp_methods = block_cipher_methods,
    .tp_getset = block_cipher_getset,
    .tp_new = block_cipher_tp_new,
};

/* --- FastCrypt: the CSP's non-Final encrypt and decrypt ------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *table;         /* the handle table's dict of live entries: handle -> LiveKey or provider */
    PyTypeObject *key_type;  /* LiveKey */
    PyObject *fallback[2];   /* the Python encrypt and decrypt (bound methods) */
    Py_ssize_t engine_off, mode_off, tombstone_off, lock_off;
} FastCrypt;

static PyTypeObject FastCryptType;

PyObject *lock_type;
static PyObject *lock_locked; /* _thread.LockType.locked, unbound */

int
lock_free(PyObject *lock)
{
    PyObject *held = PyObject_CallOneArg(lock_locked, lock);
    if (held == NULL)
        return -1;
    int unheld = held == Py_False;
    Py_DECREF(held);
    return unheld;
}

/* The offset of a slot of `type` holding an object (an attrs slots class's field). */
Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    if (descr == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s has no slot %s", type->tp_name, name);
        }
        return -1;
    }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & READONLY))
            offset = member->offset;
    }
    Py_DECREF(descr);
    if (offset < 0)
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
    return offset;
}

static PyObject *
fast_crypt_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"table", "key_type", "lock_type", "encrypt", "decrypt", NULL};
    PyObject *table, *key_type, *key_lock_type, *encrypt, *decrypt;
    (void)type;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!OO:FastCrypt", kwlist, &PyDict_Type, &table, &PyType_Type,
                                     &key_type, &PyType_Type, &key_lock_type, &encrypt, &decrypt))
        return NULL;
    if (!PyCallable_Check(encrypt) || !PyCallable_Check(decrypt)) {
        PyErr_SetString(PyExc_TypeError, "the fallbacks must be callable");
        return NULL;
    }
    if (key_lock_type != lock_type) { /* lock_free knows what a _thread.lock's locked() means, nothing else's */
        PyErr_SetString(PyExc_TypeError, "FastCrypt: the keys' locks are threading.Lock");
        return NULL;
    }
    PyTypeObject *kt = (PyTypeObject *)key_type;
    Py_ssize_t engine_off = slot_offset(kt, "engine");
    Py_ssize_t mode_off = engine_off < 0 ? -1 : slot_offset(kt, "mode");
    Py_ssize_t tombstone_off = mode_off < 0 ? -1 : slot_offset(kt, "tombstone");
    Py_ssize_t lock_off = tombstone_off < 0 ? -1 : slot_offset(kt, "lock");
    if (lock_off < 0)
        return NULL;
    FastCrypt *self = PyObject_GC_New(FastCrypt, &FastCryptType);
    if (self == NULL)
        return NULL;
    self->table = Py_NewRef(table);
    self->key_type = (PyTypeObject *)Py_NewRef(key_type);
    self->fallback[0] = Py_NewRef(encrypt);
    self->fallback[1] = Py_NewRef(decrypt);
    self->engine_off = engine_off;
    self->mode_off = mode_off;
    self->tombstone_off = tombstone_off;
    self->lock_off = lock_off;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int
fast_crypt_traverse(FastCrypt *self, visitproc visit, void *arg)
{
    Py_VISIT(self->table);
    Py_VISIT(self->key_type);
    Py_VISIT(self->fallback[0]);
    Py_VISIT(self->fallback[1]);
    return 0;
}

static int
fast_crypt_clear(FastCrypt *self)
{
    Py_CLEAR(self->table);
    Py_CLEAR(self->key_type);
    Py_CLEAR(self->fallback[0]);
    Py_CLEAR(self->fallback[1]);
    return 0;
}

static void
fast_crypt_dealloc(FastCrypt *self)
{
    PyObject_GC_UnTrack(self);
    fast_crypt_clear(self);
    PyObject_GC_Del(self);
}

/* The fast path: 1 when it ran (*out: the result, or NULL with an error raised), 0 when it did not apply and
 * touched nothing (the fallback runs). */
static int
fast_crypt_try(FastCrypt *self, PyObject *key, PyObject *data, int decrypt, PyObject **out)
{
    *out = NULL;
    if (self->table == NULL)
        return 0;
    PyObject *entry = PyDict_GetItemWithError(self->table, key); /* lock-free, as HandleTable.lookup */
    if (entry == NULL)
        return PyErr_Occurred() ? 1 : 0;
    if (Py_TYPE(entry) != self->key_type)
        return 0; /* a provider handle, or a record of another kind */
    PyObject *lock = SLOT(entry, self->lock_off);
    if (lock == NULL || (PyObject *)Py_TYPE(lock) != lock_type)
        return 0;
    Py_INCREF(entry);
    Py_INCREF(lock);
    /* A key busy in another thread goes to the fallback, which waits for it. From here to the end of the
     * section: no GIL release, no Python code, no collection (see lock_free); the record cannot change. */
    int unheld = lock_free(lock);
    int ran = unheld < 0;
    if (unheld > 0) {
        PyObject *engine = SLOT(entry, self->engine_off);
        PyObject *mode_obj = SLOT(entry, self->mode_off);
        PyObject *tombstone = SLOT(entry, self->tombstone_off);
        if (engine != NULL && Py_IS_TYPE(engine, &BlockCipherType) && tombstone == Py_None && mode_obj != NULL
            && PyLong_CheckExact(mode_obj)) {
            BlockCipher *cipher = (BlockCipher *)engine;
            Py_ssize_t len = PyBytes_GET_SIZE(data);
            int overflow = 0;
            long mode = PyLong_AsLongAndOverflow(mode_obj, &overflow);
            int index = overflow ? -1 : mode_index(mode);
            /* The rules' non-refusing case: a live key, non-empty whole blocks, a usable mode. The engine is
             * the record's (held by entry): no reference of its own is needed. */
            if (index >= 0 && len > 0 && len % cipher->block == 0 && !cipher->wiped) {
                *out = block_cipher_crypt(cipher, index, (const unsigned char *)PyBytes_AS_STRING(data), len,
                                          decrypt);
                ran = 1;
            }
        }
    }
    Py_DECREF(lock);
    Py_DECREF(entry);
    return ran;
}

static PyObject *
fast_crypt_call(FastCrypt *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames, int decrypt)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    /* (key, data, final): final exactly False, data exactly bytes, key exactly int, as the Python fast path. */
    if (kwnames == NULL && nargs == 3 && args[2] == Py_False && PyBytes_CheckExact(args[1])
        && PyLong_CheckExact(args[0])) {
        PyObject *result;
        if (fast_crypt_try(self, args[0], args[1], decrypt, &result))
            return result;
    }
    PyObject *fallback = self->fallback[decrypt];
    if (fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the fast path was cleared");
        return NULL;
    }
    return PyObject_Vectorcall(fallback, args, nargs, kwnames);
}

static PyObject *
fast_crypt_encrypt(FastCrypt *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    return fast_crypt_call(self, args, nargsf, kwnames, 0);
}

static PyObject *
fast_crypt_decrypt(FastCrypt *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    return fast_crypt_call(self, args, nargsf, kwnames, 1);
}

static PyObject *
fast_crypt_repr(FastCrypt *self)
{
    (void)self;
    return PyUnicode_FromString("<FastCrypt>");
}

static PyMethodDef fast_crypt_methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))fast_crypt_encrypt, METH_FASTCALL | METH_KEYWORDS,
     "encrypt(key, data, final): CryptEncrypt; the fast path, else the fallback."},
    {"decrypt", (PyCFunction)(void (*)(void))fast_crypt_decrypt, METH_FASTCALL | METH_KEYWORDS,
     "decrypt(key, data, final): CryptDecrypt; the fast path, else the fallback."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastCryptType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keyhandoff.impl._evp.FastCrypt",
    .tp_basicsize = sizeof(FastCrypt),
    .tp_dealloc = (destructor)fast_crypt_dealloc,
    .tp_repr = (reprfunc)fast_crypt_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "FastCrypt(table, key_type, lock_type, encrypt, decrypt): the CSP's non-Final encrypt/decrypt.",
    .tp_traverse = (traverseproc)fast_crypt_traverse,
    .tp_clear = (inquiry)fast_crypt_clear,
    .tp_methods = fast_crypt_methods,
    .tp_new = fast_crypt_tp_new,
};

/* --- feistel: HandleSequence.permute ------------------------------------------------------------------- */

/* keyhandoff.impl.handles.HandleSequence.permute's Feistel network for `count` consecutive counters from
 * `start`, each round's function the low `half` bits of the first four little-endian bytes of round(block),
 * block = the right half as a 16-byte little-endian slot (`rounds`: the AES-ECB encryptors' update, called once
 * per round for all the slots). The same arithmetic as the Python, which packs the slots in one integer: its
 * conversions between integers and bytes cost about 500 ns a handle, one every 512 issued handles a refill of
 * a quarter of a millisecond inside an import (docs/benchmarks.md, section 3). */
static PyObject *
evp_feistel(PyObject *Py_UNUSED(module), PyObject *args)
{
    unsigned long long start;
    Py_ssize_t count;
    PyObject *rounds;
    int half;
    if (!PyArg_ParseTuple(args, "KnOi:feistel", &start, &count, &rounds, &half))
        return NULL;
    if (count < 1 || count > (1 << 16) || half < 1 || half > 31 || start > ~0ULL - (unsigned long long)count) {
        PyErr_SetString(PyExc_ValueError, "feistel: 1..65536 counters, halves of 1..31 bits");
        return NULL;
    }
    PyObject *fns = PySequence_Fast(rounds, "feistel: rounds must be a sequence");
    if (fns == NULL)
        return NULL;
    const unsigned long mask = (1UL << half) - 1;
    unsigned long *left = PyMem_Calloc((size_t)count * 2, sizeof *left);
    PyObject *result = NULL;
    if (left == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    unsigned long *right = left + count;
    for (Py_ssize_t i = 0; i < count; i++) {
        unsigned long long counter = start + (unsigned long long)i;
        left[i] = (unsigned long)(counter >> half) & mask;
        right[i] = (unsigned long)counter & mask;
    }
    for (Py_ssize_t r = 0; r < PySequence_Fast_GET_SIZE(fns); r++) {
        PyObject *in = PyBytes_FromStringAndSize(NULL, count * 16);
        if (in == NULL)
            goto done;
        unsigned char *slot = (unsigned char *)PyBytes_AS_STRING(in);
        memset(slot, 0, (size_t)count * 16);
        for (Py_ssize_t i = 0; i < count; i++, slot += 16) {
            for (int b = 0; b < 4; b++)
                slot[b] = (unsigned char)(right[i] >> (8 * b));
        }
        PyObject *out = PyObject_CallOneArg(PySequence_Fast_GET_ITEM(fns, r), in);
        Py_DECREF(in);
        if (out == NULL)
            goto done;
        if (!PyBytes_Check(out) || PyBytes_GET_SIZE(out) != count * 16) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_ValueError, "feistel: a round must give one 16-byte block per counter");
            goto done;
        }
        const unsigned char *mixed = (const unsigned char *)PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < count; i++, mixed += 16) {
            unsigned long f = ((unsigned long)mixed[0] | (unsigned long)mixed[1] << 8 | (unsigned long)mixed[2] << 16
                               | (unsigned long)mixed[3] << 24) & mask;
            unsigned long next = left[i] ^ f;
            left[i] = right[i];
            right[i] = next;
        }
        Py_DECREF(out);
    }
    result = PyList_New(count);
    for (Py_ssize_t i = 0; result != NULL && i < count; i++) {
        PyObject *handle = PyLong_FromUnsignedLongLong((unsigned long long)left[i] << half | right[i]);
        if (handle == NULL)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, i, handle);
    }
done:
    PyMem_Free(left);
    Py_DECREF(fns);
    return result;
}

/* --- the module ---------------------------------------------------------------------------------------- */

static PyMethodDef evp_methods[] = {
    {"feistel", evp_feistel, METH_VARARGS,
     "feistel(start, count, rounds, half): HandleSequence.permute's network for count counters from start."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef evp_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "keyhandoff.impl._evp",
    .m_doc = "Block-cipher engines, the CSP's per-call fast path and import, the handle permutation, on EVP.",
    .m_size = -1,
    .m_methods = evp_methods,
};

PyMODINIT_FUNC
PyInit__evp(void)
{
    for (int f = 0; f < FAMILIES; f++) {
        for (int m = 0; m < MODES; m++) {
            if (ciphers[f][m] == NULL && (ciphers[f][m] = EVP_CIPHER_fetch(NULL, CIPHER_NAMES[f][m], NULL)) == NULL) {
                PyErr_Format(PyExc_ImportError, "libcrypto has no %s", CIPHER_NAMES[f][m]);
                return NULL;
            }
        }
    }
    if (PyType_Ready(&BlockCipherType) < 0 || PyType_Ready(&FastCryptType) < 0 || fast_import_ready() < 0)
        return NULL;
    if (lock_type == NULL) {
        PyObject *thread = PyImport_ImportModule("_thread");
        lock_type = thread == NULL ? NULL : PyObject_GetAttrString(thread, "LockType");
        Py_XDECREF(thread);
        lock_locked = lock_type == NULL ? NULL : PyObject_GetAttrString(lock_type, "locked");
        if (lock_locked == NULL)
            return NULL;
    }
    PyObject *module = PyModule_Create(&evp_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "BlockCipher", (PyObject *)&BlockCipherType) < 0
        || PyModule_AddObjectRef(module, "FastCrypt", (PyObject *)&FastCryptType) < 0
        || PyModule_AddObjectRef(module, "FastImport", (PyObject *)&FastImportType) < 0
        || PyModule_AddStringConstant(module, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
