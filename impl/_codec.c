/* The frames' common values in C: what the boundary's requests and replies carry nearly always (a method name,
 * handles and other ints, bytes, flags, None), read and written without marshal's general reader and writer.
 *
 * Why it exists: per request, marshal's reader makes a list of references and interns the method name, its
 * writer builds and frees a hashtable, and both walk a generic dispatch. For a 16-byte encrypt that was a third
 * of the app process's work per request, and the code it touches is paid again after every wake
 * (docs/benchmarks.md, section 3).
 *
 * The format is marshal's own (version 4), so either end may be the Python code or another program: what this
 * writes, marshal.loads reads to the same value, and this reads only what marshal.loads reads to the value it
 * returns. Anything else it declines without a word (a reference, another type, a long of more than 63 bits,
 * too few bytes, a malformed digit) and the caller hands the bytes to marshal, whose answer, value or error,
 * stands. tests/impl/test_frames.py holds both directions to marshal on random and mutated values. */

#include "_codec.h"

#include <limits.h>
#include <string.h>

#define DIGIT_BITS 15
#define DIGIT_MASK 0x7fff
#define MAX_DIGITS 5 /* 63 bits */

static int
take(Cursor *cursor, Py_ssize_t n, const unsigned char **data)
{
    if (cursor->end - cursor->at < n)
        return 0;
    *data = cursor->at;
    cursor->at += n;
    return 1;
}

static long
le32(const unsigned char *p)
{
    return (long)(int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

/* marshal's TYPE_LONG: a signed count of 15-bit digits, least significant first; the last one not zero. */
static PyObject *
read_long(Cursor *cursor)
{
    const unsigned char *p;
    if (!take(cursor, 4, &p))
        return NULL;
    long n = le32(p);
    long count = n < 0 ? -n : n;
    if (count == 0 || count > MAX_DIGITS || !take(cursor, 2 * count, &p))
        return NULL;
    unsigned long long magnitude = 0;
    for (long i = 0; i < count; i++) {
        unsigned int d = (unsigned int)p[2 * i] | (unsigned int)p[2 * i + 1] << 8;
        if (d > DIGIT_MASK || (i == count - 1 && d == 0))
            return NULL; /* marshal refuses these */
        if (i == MAX_DIGITS - 1 && d >> (63 - DIGIT_BITS * (MAX_DIGITS - 1)))
            return NULL; /* beyond 63 bits */
        magnitude |= (unsigned long long)d << (DIGIT_BITS * i);
    }
    return n < 0 ? PyLong_FromLongLong(-(long long)magnitude) : PyLong_FromUnsignedLongLong(magnitude);
}

PyObject *
codec_read(Cursor *cursor, int depth)
{
    const unsigned char *p;
    if (!take(cursor, 1, &p))
        return NULL;
    switch (p[0] & ~M_FLAG_REF) {
    case M_NONE:
        return Py_NewRef(Py_None);
    case M_TRUE:
        return Py_NewRef(Py_True);
    case M_FALSE:
        return Py_NewRef(Py_False);
    case M_INT:
        return take(cursor, 4, &p) ? PyLong_FromLong(le32(p)) : NULL;
    case M_LONG:
        return read_long(cursor);
    case M_BYTES: {
        if (!take(cursor, 4, &p))
            return NULL;
        long n = le32(p);
        return n >= 0 && take(cursor, n, &p) ? PyBytes_FromStringAndSize((const char *)p, n) : NULL;
    }
    case M_SHORT_ASCII:
    case M_SHORT_ASCII_INTERNED: { /* marshal interns the second; an interned str is equal all the same */
        if (!take(cursor, 1, &p))
            return NULL;
        Py_ssize_t n = p[0];
        return take(cursor, n, &p) ? PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, p, n) : NULL;
    }
    case M_SMALL_TUPLE: {
        if (depth < 1 || !take(cursor, 1, &p))
            return NULL;
        Py_ssize_t n = p[0];
        PyObject *tuple = PyTuple_New(n);
        for (Py_ssize_t i = 0; tuple != NULL && i < n; i++) {
            PyObject *item = codec_read(cursor, depth - 1);
            if (item == NULL)
                Py_CLEAR(tuple);
            else
                PyTuple_SET_ITEM(tuple, i, item);
        }
        return tuple;
    }
    case M_DICT:
        return take(cursor, 1, &p) && p[0] == M_NULL ? PyDict_New() : NULL;
    default:
        return NULL;
    }
}

Py_ssize_t
codec_size(PyObject *value, int depth)
{
    if (value == Py_None || value == Py_True || value == Py_False)
        return 1;
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow || x == LLONG_MIN) {
            PyErr_Clear();
            return -1;
        }
        if (x >= INT32_MIN && x <= INT32_MAX)
            return 5;
        unsigned long long magnitude = x < 0 ? (unsigned long long)-x : (unsigned long long)x;
        Py_ssize_t digits = 0;
        for (; magnitude; magnitude >>= DIGIT_BITS)
            digits++;
        return 5 + 2 * digits;
    }
    if (PyBytes_CheckExact(value))
        return PyBytes_GET_SIZE(value) <= INT32_MAX ? 5 + PyBytes_GET_SIZE(value) : -1;
    if (PyUnicode_CheckExact(value))
        return PyUnicode_IS_ASCII(value) && PyUnicode_GET_LENGTH(value) < 256 ? 2 + PyUnicode_GET_LENGTH(value) : -1;
    if (PyTuple_CheckExact(value) && depth > 0 && PyTuple_GET_SIZE(value) < 256) {
        Py_ssize_t size = 2;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(value); i++) {
            Py_ssize_t item = codec_size(PyTuple_GET_ITEM(value, i), depth - 1);
            if (item < 0)
                return -1;
            size += item;
        }
        return size;
    }
    if (PyDict_CheckExact(value) && PyDict_GET_SIZE(value) == 0)
        return 2;
    return -1;
}

static unsigned char *
put_le32(unsigned char *out, long long x)
{
    for (int i = 0; i < 4; i++)
        out[i] = (unsigned char)((unsigned long long)x >> (8 * i));
    return out + 4;
}

unsigned char *
codec_write(unsigned char *out, PyObject *value)
{
    if (value == Py_None || value == Py_True || value == Py_False) {
        *out++ = value == Py_None ? M_NONE : value == Py_True ? M_TRUE : M_FALSE;
        return out;
    }
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(value, &overflow); /* in range: codec_size checked */
        if (x >= INT32_MIN && x <= INT32_MAX) { /* marshal's choice: TYPE_INT when it fits 32 bits */
            *out++ = M_INT;
            return put_le32(out, x);
        }
        unsigned long long magnitude = x < 0 ? (unsigned long long)-x : (unsigned long long)x;
        long long digits = 0;
        for (unsigned long long m = magnitude; m; m >>= DIGIT_BITS)
            digits++;
        *out++ = M_LONG;
        out = put_le32(out, x < 0 ? -digits : digits);
        for (; magnitude; magnitude >>= DIGIT_BITS) {
            *out++ = (unsigned char)(magnitude & 0xff);
            *out++ = (unsigned char)((magnitude & DIGIT_MASK) >> 8);
        }
        return out;
    }
    if (PyBytes_CheckExact(value)) {
        Py_ssize_t n = PyBytes_GET_SIZE(value);
        *out++ = M_BYTES;
        out = put_le32(out, n);
        memcpy(out, PyBytes_AS_STRING(value), (size_t)n);
        return out + n;
    }
    if (PyUnicode_CheckExact(value)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(value);
        *out++ = M_SHORT_ASCII;
        *out++ = (unsigned char)n;
        memcpy(out, PyUnicode_1BYTE_DATA(value), (size_t)n);
        return out + n;
    }
    if (PyTuple_CheckExact(value)) {
        *out++ = M_SMALL_TUPLE;
        *out++ = (unsigned char)PyTuple_GET_SIZE(value);
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(value); i++)
            out = codec_write(out, PyTuple_GET_ITEM(value, i));
        return out;
    }
    *out++ = M_DICT; /* an empty dict */
    *out++ = M_NULL;
    return out;
}
