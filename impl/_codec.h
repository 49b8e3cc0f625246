/* The frames' common values in C, without marshal's general reader and writer (impl/_codec.c). */
#ifndef KEYHANDOFF_CODEC_H
#define KEYHANDOFF_CODEC_H

#include <Python.h>

/* marshal's type codes (Python/marshal.c, version 4) this codec reads or writes. */
#define M_NULL '0'
#define M_NONE 'N'
#define M_FALSE 'F'
#define M_TRUE 'T'
#define M_INT 'i'
#define M_LONG 'l'
#define M_BYTES 's'
#define M_SMALL_TUPLE ')'
#define M_DICT '{'
#define M_SHORT_ASCII 'z'
#define M_SHORT_ASCII_INTERNED 'Z'
#define M_FLAG_REF 0x80

/* Where a reader is: the next byte to read and the end of the bytes. */
typedef struct {
    const unsigned char *at, *end;
} Cursor;

/* One value of the subset (None, True, False, an int of at most 63 bits, bytes, a short ASCII str, a tuple of
 * fewer than 256 of these nested at most `depth` deep, an empty dict) read as marshal reads it: a new reference,
 * the cursor moved past it. NULL without an error when the bytes hold anything else, a reference (which this
 * reader does not keep), or too few bytes: the caller then gives them to marshal, whose answer stands. NULL
 * with an error for a failed allocation. */
PyObject *codec_read(Cursor *cursor, int depth);

/* The bytes codec_write takes for `value`, or -1 when it is not of the subset (the caller uses marshal). */
Py_ssize_t codec_size(PyObject *value, int depth);

/* `value` (codec_size said it fits) written at `out` as marshal would write it, bar the reference flags a
 * reader needs only for values seen twice: the end of what was written. */
unsigned char *codec_write(unsigned char *out, PyObject *value);

#endif
