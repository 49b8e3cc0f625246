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
/* _thread.LockType (threading.Lock's type), set at module init: the only lock type lock_free reads. */
extern PyObject *lock_type;
/* Whether `lock` (a _thread.lock) is free: 1; 0 when a thread holds it; -1 with an error.
 *
 * The fast paths check their locks instead of taking them, under one rule: between the check and the end of
 * its section, a fast path neither releases the GIL nor runs Python code nor triggers a collection (no
 * GC-tracked allocation, no reference dropped that could be an object's last; an error is set only once the
 * state is whole again, since making the exception may allocate). Under the GIL the section is then atomic: a free lock means no Python thread is inside a section of its own, and none can enter before
 * this one ends (a thread whose blocking acquire has just succeeded marks the lock held only once it has the
 * GIL again). Taking and releasing a lock through its methods costs more than the section it guards (argument
 * parsing, the clock, two method calls: docs/benchmarks.md, section 3). */
int lock_free(PyObject *lock);
/* PyType_Ready for FastImport, and its libcrypto ciphers fetched. 0, or -1 with an error. */
int fast_import_ready(void);

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

#endif
