/* What impl/_evp.c (the engine, FastCrypt) and impl/_import.c (FastImport) share. */
#ifndef KEYHANDOFF_EVP_H
#define KEYHANDOFF_EVP_H

#include <Python.h>
#include <openssl/evp.h>

enum { AES128, AES192, AES256, DES_EDE3, FAMILIES };

typedef struct {
    PyObject_HEAD
    int family;
    int block;
    int wiped;
    int ctx_mode;    /* the mode index the context runs; -1: none (re-key before use) */
    int ctx_decrypt;
    EVP_CIPHER_CTX *ctx;
    unsigned char key[32];
    unsigned char reg[16];
} BlockCipher;

extern PyTypeObject BlockCipherType;
extern PyTypeObject FastImportType;

/* The family of an engine for `name` ("AES", "DES-EDE3") and a key of key_len bytes, or -1. */
int block_cipher_family(const char *name, Py_ssize_t key_len);
/* A live engine: key (the family's length) and register (its block). New reference, or NULL. */
BlockCipher *block_cipher_new(int family, const unsigned char *key, const unsigned char *reg);
/* The offset of a writable object slot `name` of `type` (an attrs slots class's field), or -1 with TypeError. */
Py_ssize_t slot_offset(PyTypeObject *type, const char *name);
/* acquire(lock, False) (the lock type's unbound acquire): 1 taken, 0 held elsewhere, -1 with an error. */
int acquire_nowait(PyObject *acquire, PyObject *lock);
/* release(lock) (the lock type's unbound release) with the caller's error, if one is set, kept aside and
 * restored: 0; or -1 with release's own error (the caller's dropped). */
int release_keeping_error(PyObject *release, PyObject *lock);
/* PyType_Ready for FastImport, and its libcrypto ciphers fetched. 0, or -1 with an error. */
int fast_import_ready(void);

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

#endif
