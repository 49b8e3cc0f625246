/* The least a 16-byte encrypt through a CSP with per-key locks must do, in C: one benchmark line of
 * bench/bench_impl.py, section 1 (a floor, not an implementation of the CSP's fast path).
 *
 * A CPython extension module, native_hot, with one function:
 *   encrypt(table, handle, data) -> bytes
 * table: a dict from handle to a record with three attributes: lock (a threading.Lock), update (a live
 * cipher context's bound update) and tail (where the last ciphertext is kept: the register). It looks the
 * handle up, takes the record's lock, calls update(data), stores the result as tail, releases the lock and
 * returns the result: no argument checks, no mode or liveness checks, no refusal paths.
 *
 * Build (bench_impl.py does it): cc -O2 -shared -fPIC -I<python include dir> -o native_hot<EXT_SUFFIX> native_hot.c
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *s_lock, *s_update, *s_tail, *s_acquire, *s_release;

static PyObject *hot_encrypt(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "encrypt(table: dict, handle, data)");
        return NULL;
    }
    PyObject *record = PyDict_GetItemWithError(args[0], args[1]); /* borrowed */
    if (record == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "no such handle");
        return NULL;
    }
    PyObject *lock = PyObject_GetAttr(record, s_lock);
    if (lock == NULL) return NULL;
    PyObject *ok = PyObject_CallMethodNoArgs(lock, s_acquire);
    if (ok == NULL) {
        Py_DECREF(lock);
        return NULL;
    }
    Py_DECREF(ok);
    PyObject *out = NULL;
    PyObject *update = PyObject_GetAttr(record, s_update);
    if (update != NULL) {
        out = PyObject_CallOneArg(update, args[2]);
        Py_DECREF(update);
        if (out != NULL && PyObject_SetAttr(record, s_tail, out) < 0) Py_CLEAR(out);
    }
    /* release even after an error, keeping that error */
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    ok = PyObject_CallMethodNoArgs(lock, s_release);
    Py_DECREF(lock);
    if (ok == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        Py_XDECREF(out);
        return NULL;
    }
    Py_DECREF(ok);
    PyErr_Restore(type, value, traceback);
    return out;
}

static PyMethodDef methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))hot_encrypt, METH_FASTCALL, "lookup, lock, update, tail, unlock"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_hot = {PyModuleDef_HEAD_INIT, "native_hot", NULL, -1, methods,
                                        NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_native_hot(void) {
    s_lock = PyUnicode_InternFromString("lock");
    s_update = PyUnicode_InternFromString("update");
    s_tail = PyUnicode_InternFromString("tail");
    s_acquire = PyUnicode_InternFromString("acquire");
    s_release = PyUnicode_InternFromString("release");
    if (!s_lock || !s_update || !s_tail || !s_acquire || !s_release) return NULL;
    return PyModule_Create(&native_hot);
}
