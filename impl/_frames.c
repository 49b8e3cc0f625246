/* keyhandoff.impl._frames: both ends of the process boundary's round trip in C, when built: the app process's
 * serving loop (keyhandoff.impl.child.serve) and the parent's call, one request for one reply
 * (keyhandoff.impl.boundary.ChildProcess.call).
 *
 * Why it exists: a handoff is one round trip into the app process, and on this kind of machine a process just
 * woken runs Python code up to 1.6 times slower than warm (docs/benchmarks.md, section 3). The loop's own work
 * per request (reading the frame, decoding it, the reply tuple, encoding, writing) is Python bytecode in the
 * loop of child.py; here it is C, so a request whose method is itself C (the CSP's native import and data
 * path) runs no Python bytecode in the app process at all.
 *
 * It is the same protocol as child.py's loop, request for request: the same frames, the same marshal values,
 * the same replies ("ok", value) / ("err", code, operation) / ("crash", type name), the same methods (looked
 * up through the Python dispatcher's `method`, which decides what may be called), the same end (end of input,
 * or a frame header announcing more than MAX_FRAME). tests/impl/test_frames.py runs both loops on the same
 * requests. The GIL is released only around read(2), write(2) and poll(2), and only when another thread could
 * use it (see `alone`). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <marshal.h>

#include "_codec.h"

#include <errno.h>
#include <stddef.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HEADER 4
#define READ_SIZE (1 << 16)

/* The callables of the names a request read by impl/_codec.c named, found by the name's bytes. */
#define NAMED 16
#define NAME_BYTES 32
#define MAX_ARGS 8 /* a request with more arguments goes through marshal */

typedef struct {
    PyObject *method;      /* the dispatcher's method(name) -> callable or None */
    PyObject *crypt_error; /* keyhandoff.model.errors.CryptError */
    PyObject *unserialisable, *too_large; /* the prebuilt frames child.py sends for either case */
    Py_ssize_t max_frame;
    PyObject *cache; /* name -> callable, for names method() answered */
    struct {
        unsigned char len;
        char name[NAME_BYTES];
        PyObject *func;
    } named[NAMED];
    int n_named;
} Loop;

/* Whether the calling thread is the only thread of the only interpreter. Then a blocking system call may keep
 * the GIL: no other thread could take it, and handing it over and back costs two mutexes and a condition
 * variable each way, a tenth of a request's work and a good share of the code it touches after a wake
 * (docs/benchmarks.md, section 3). A Python thread can only be started by code holding the GIL, so the check,
 * made before each call, cannot miss one; a foreign thread that attaches meanwhile waits for the call. Signals
 * still interrupt the call (EINTR), and their handlers run as before. */
static int
alone(void)
{
    PyThreadState *self = PyThreadState_Get();
    PyInterpreterState *interp = PyThreadState_GetInterpreter(self);
    return PyInterpreterState_Head() == interp && PyInterpreterState_Next(interp) == NULL
           && PyInterpreterState_ThreadHead(interp) == self && PyThreadState_Next(self) == NULL;
}

/* `call` (a system call's statement), with the GIL released unless this thread is alone. */
#define BLOCKING(call)                                                                                            \
    do {                                                                                                          \
        if (alone()) {                                                                                            \
            call;                                                                                                 \
        }                                                                                                         \
        else {                                                                                                    \
            Py_BEGIN_ALLOW_THREADS call;                                                                          \
            Py_END_ALLOW_THREADS                                                                                  \
        }                                                                                                         \
    } while (0)

/* read(2) (see BLOCKING); EINTR retried unless a signal handler raised. -1 with an error set. */
static Py_ssize_t
read_some(int fd, char *buf, size_t size)
{
    for (;;) {
        Py_ssize_t got;
        BLOCKING(got = read(fd, buf, size));
        if (got >= 0)
            return got;
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}

/* All of `data` to fd, in as many write(2) calls as the pipe needs. 0; -1 with the error a signal handler
 * raised; -2 when write(2) failed (errno says why, no error set). */
static int
write_frame(int fd, const char *data, Py_ssize_t len)
{
    while (len > 0) {
        Py_ssize_t put;
        BLOCKING(put = write(fd, data, (size_t)len));
        if (put < 0) {
            if (errno != EINTR)
                return -2;
            if (PyErr_CheckSignals() < 0)
                return -1;
            continue;
        }
        data += put;
        len -= put;
    }
    return 0;
}

/* write_frame, its failure an OSError (as os.write's). 0, or -1 with an error set. */
static int
write_all(int fd, const char *data, Py_ssize_t len)
{
    int written = write_frame(fd, data, len);
    if (written == -2)
        PyErr_SetFromErrno(PyExc_OSError);
    return written < 0 ? -1 : 0;
}

static PyObject *
crash(const char *why)
{
    return Py_BuildValue("(ss)", "crash", why);
}

/* marshal.loads of a payload: the value (new reference); or NULL, with *refused set and no error when marshal
 * refused the bytes (EOFError, ValueError, TypeError: what both ends answer as malformed), else with the error. */
static PyObject *
loads(const char *payload, Py_ssize_t size, int *refused)
{
    *refused = 0;
    PyObject *value = PyMarshal_ReadObjectFromString(payload, size);
    if (value == NULL
        && (PyErr_ExceptionMatches(PyExc_EOFError) || PyErr_ExceptionMatches(PyExc_ValueError)
            || PyErr_ExceptionMatches(PyExc_TypeError))) {
        PyErr_Clear();
        *refused = 1;
    }
    return value;
}

/* The callable for `name`, or None: child.py's _Dispatcher.method, asked once per name. New reference. */
static PyObject *
method_for(Loop *loop, PyObject *name)
{
    if (PyUnicode_CheckExact(name)) {
        PyObject *found = PyDict_GetItemWithError(loop->cache, name);
        if (found != NULL)
            return Py_NewRef(found);
        if (PyErr_Occurred())
            return NULL;
    }
    PyObject *func = PyObject_CallOneArg(loop->method, name);
    if (func != NULL && func != Py_None && PyUnicode_CheckExact(name) && PyDict_SetItem(loop->cache, name, func) < 0)
        Py_CLEAR(func);
    return func;
}

/* The reply tuple for the exception the call raised: ("err", code, operation) for a CryptError, ("crash", its
 * type's name) for another Exception (never its message, which could carry data). New reference; NULL for an
 * exception that is not the call's to report (KeyboardInterrupt, SystemExit: it ends the loop, as it would end
 * child.py's), left set. */
static PyObject *
refusal(Loop *loop)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL;
    PyObject *type, *exc, *traceback, *reply = NULL;
    PyErr_Fetch(&type, &exc, &traceback);
    PyErr_NormalizeException(&type, &exc, &traceback);
    Py_XDECREF(traceback);
    if (exc == NULL) { /* normalization failed: report the type alone */
        reply = Py_BuildValue("(sN)", "crash", PyType_GetName((PyTypeObject *)type));
        Py_DECREF(type);
        return reply;
    }
    Py_DECREF(type);
    if (PyErr_GivenExceptionMatches(exc, loop->crypt_error)) {
        PyObject *code = PyObject_GetAttrString(exc, "code");
        PyObject *operation = code == NULL ? NULL : PyObject_GetAttrString(exc, "operation");
        if (operation != NULL)
            reply = Py_BuildValue("(sOO)", "err", code, operation);
        Py_XDECREF(code);
        Py_XDECREF(operation);
    }
    else {
        reply = Py_BuildValue("(sN)", "crash", PyType_GetName(Py_TYPE(exc)));
    }
    Py_DECREF(exc);
    return reply;
}

/* The callable for a name given as its bytes (as a request read by impl/_codec.c holds it), or None; found
 * among the names seen before without making a str. New reference, or NULL with an error. */
static PyObject *
method_named(Loop *loop, const unsigned char *name, Py_ssize_t len)
{
    for (int i = 0; i < loop->n_named; i++) {
        if (loop->named[i].len == len && memcmp(loop->named[i].name, name, (size_t)len) == 0)
            return Py_NewRef(loop->named[i].func);
    }
    PyObject *text = PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, name, len); /* as marshal reads it */
    if (text == NULL)
        return NULL;
    PyObject *func = method_for(loop, text);
    Py_DECREF(text);
    if (func != NULL && func != Py_None && len < NAME_BYTES && loop->n_named < NAMED) {
        int at = loop->n_named++;
        loop->named[at].len = (unsigned char)len;
        memcpy(loop->named[at].name, name, (size_t)len);
        loop->named[at].func = Py_NewRef(func);
    }
    return func;
}

/* A request of the codec's subset, (name, (arguments...), {}), read without marshal: 1 with the callable (new
 * reference, or None for a name the dispatcher does not serve) and the arguments (new references); 0 when the
 * payload is anything else (nothing held: marshal reads it); -1 with an error. */
static int
read_request(Loop *loop, const char *payload, Py_ssize_t size, PyObject **func, PyObject **argv, Py_ssize_t *nargs)
{
    Cursor cursor = {(const unsigned char *)payload, (const unsigned char *)payload + size};
    const unsigned char *p = cursor.at;
    if (size < 4 || (p[0] & ~M_FLAG_REF) != M_SMALL_TUPLE || p[1] != 3
        || ((p[2] & ~M_FLAG_REF) != M_SHORT_ASCII && (p[2] & ~M_FLAG_REF) != M_SHORT_ASCII_INTERNED))
        return 0;
    const unsigned char *name = p + 4;
    Py_ssize_t name_len = p[3];
    if (4 + name_len > size)
        return 0;
    cursor.at = name + name_len;
    if (cursor.end - cursor.at < 2 || (cursor.at[0] & ~M_FLAG_REF) != M_SMALL_TUPLE || cursor.at[1] > MAX_ARGS)
        return 0;
    *nargs = cursor.at[1];
    cursor.at += 2;
    Py_ssize_t got = 0;
    for (; got < *nargs; got++) {
        if ((argv[got] = codec_read(&cursor, 1)) == NULL)
            break;
    }
    int whole = got == *nargs && !PyErr_Occurred() && cursor.end - cursor.at >= 2
                && (cursor.at[0] & ~M_FLAG_REF) == M_DICT && cursor.at[1] == M_NULL;
    if (whole)
        *func = method_named(loop, name, name_len);
    if (!whole || *func == NULL) {
        for (Py_ssize_t i = 0; i < got; i++)
            Py_DECREF(argv[i]);
        return PyErr_Occurred() ? -1 : 0;
    }
    return 1;
}

/* child.py's _Dispatcher.reply for one request payload: the value of an "ok" reply in *value (new reference)
 * and NULL returned; or the reply tuple of any other answer (new reference); or NULL with *value NULL for an
 * exception that is not the call's to report (it ends the loop, as it would end child.py's). */
static PyObject *
reply_to(Loop *loop, const char *payload, Py_ssize_t size, PyObject **value)
{
    *value = NULL;
    PyObject *func, *argv[MAX_ARGS];
    Py_ssize_t nargs;
    int read = read_request(loop, payload, size, &func, argv, &nargs);
    if (read < 0)
        return NULL;
    if (read) {
        if (func == Py_None) {
            Py_DECREF(func);
            for (Py_ssize_t i = 0; i < nargs; i++)
                Py_DECREF(argv[i]);
            return crash("NoSuchMethod");
        }
        *value = PyObject_Vectorcall(func, argv, nargs, NULL);
        Py_DECREF(func);
        for (Py_ssize_t i = 0; i < nargs; i++)
            Py_DECREF(argv[i]);
        return *value == NULL ? refusal(loop) : NULL;
    }
    int refused;
    PyObject *request = loads(payload, size, &refused);
    if (request == NULL)
        return refused ? crash("MalformedRequest") : NULL;
    PyObject *reply = NULL;
    if (!PyTuple_CheckExact(request) || PyTuple_GET_SIZE(request) != 3
        || !PyTuple_CheckExact(PyTuple_GET_ITEM(request, 1)) || !PyDict_CheckExact(PyTuple_GET_ITEM(request, 2))) {
        reply = crash("MalformedRequest");
        goto done;
    }
    func = method_for(loop, PyTuple_GET_ITEM(request, 0));
    if (func == NULL)
        goto done;
    if (func == Py_None) {
        Py_DECREF(func);
        reply = crash("NoSuchMethod");
        goto done;
    }
    PyObject *kwargs = PyTuple_GET_ITEM(request, 2);
    *value = PyObject_Call(func, PyTuple_GET_ITEM(request, 1), PyDict_GET_SIZE(kwargs) ? kwargs : NULL);
    Py_DECREF(func);
    if (*value == NULL)
        reply = refusal(loop);
done:
    Py_DECREF(request);
    return reply;
}

/* A frame's header: the payload's length, 4 bytes big-endian. */
static void
put_header(unsigned char *out, Py_ssize_t size)
{
    out[0] = (unsigned char)(size >> 24);
    out[1] = (unsigned char)(size >> 16);
    out[2] = (unsigned char)(size >> 8);
    out[3] = (unsigned char)size;
}

/* The frame of marshal bytes: their 4-byte big-endian length, then them. New reference, or NULL. */
static PyObject *
framed(PyObject *payload)
{
    Py_ssize_t size = PyBytes_GET_SIZE(payload);
    PyObject *frame = PyBytes_FromStringAndSize(NULL, HEADER + size);
    if (frame != NULL) {
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(frame);
        put_header(out, size);
        memcpy(out + HEADER, PyBytes_AS_STRING(payload), (size_t)size);
    }
    return frame;
}

/* The frame of a reply: its 4-byte big-endian length and marshal bytes; child.py's two prebuilt frames for a
 * value marshal refuses (ValueError) and for a reply over MAX_FRAME. New reference, or NULL. */
static PyObject *
frame_of(Loop *loop, PyObject *reply)
{
    PyObject *payload = PyMarshal_WriteObjectToString(reply, Py_MARSHAL_VERSION);
    if (payload == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return NULL;
        PyErr_Clear();
        return Py_NewRef(loop->unserialisable);
    }
    Py_ssize_t size = PyBytes_GET_SIZE(payload);
    if (HEADER + size > loop->max_frame) {
        Py_DECREF(payload);
        return Py_NewRef(loop->too_large);
    }
    PyObject *frame = framed(payload);
    Py_DECREF(payload);
    return frame;
}

/* ("ok", value) written to fd: by impl/_codec.c when the value is of its subset (one buffer, no marshal), else
 * as frame_of writes it. 0, or -1 with an error set. */
static int
write_ok(Loop *loop, int fd, PyObject *value)
{
    static const unsigned char ok[] = {M_SMALL_TUPLE, 2, M_SHORT_ASCII, 2, 'o', 'k'};
    Py_ssize_t size = codec_size(value, 2);
    if (size >= 0 && HEADER + (Py_ssize_t)sizeof ok + size <= loop->max_frame) {
        unsigned char small[512];
        Py_ssize_t len = HEADER + (Py_ssize_t)sizeof ok + size;
        unsigned char *frame = len <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)len);
        if (frame == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        put_header(frame, len - HEADER);
        memcpy(frame + HEADER, ok, sizeof ok);
        codec_write(frame + HEADER + sizeof ok, value);
        int written = write_all(fd, (const char *)frame, len);
        if (frame != small)
            PyMem_Free(frame);
        return written;
    }
    /* Not of the subset, or too large: a tuple as Py_BuildValue("(sO)") made it, then marshal. */
    PyObject *text = PyUnicode_FromStringAndSize("ok", 2);
    PyObject *reply = text == NULL ? NULL : PyTuple_Pack(2, text, value);
    Py_XDECREF(text);
    PyObject *frame = reply == NULL ? NULL : frame_of(loop, reply);
    Py_XDECREF(reply);
    int written = frame == NULL ? -1 : write_all(fd, PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame));
    Py_XDECREF(frame);
    return written;
}

/* Buffered input: [start, end) of buf holds bytes read and not yet consumed. */
typedef struct {
    char *buf;
    Py_ssize_t cap, start, end;
} Input;

/* Make room for `need` unconsumed bytes plus a read. 0, or -1 with MemoryError. */
static int
input_reserve(Input *in, Py_ssize_t need)
{
    if (in->start == in->end) {
        in->start = in->end = 0;
        if (in->cap > 4 * READ_SIZE) { /* a large frame has gone: give its memory back */
            PyMem_Free(in->buf);
            in->buf = NULL;
            in->cap = 0;
        }
    }
    if (in->end + READ_SIZE <= in->cap && in->start + need <= in->cap)
        return 0;
    Py_ssize_t held = in->end - in->start;
    if (in->start > 0) {
        memmove(in->buf, in->buf + in->start, (size_t)held);
        in->start = 0;
        in->end = held;
    }
    Py_ssize_t want = (need > held ? need : held) + READ_SIZE;
    if (want <= in->cap)
        return 0;
    char *grown = PyMem_Realloc(in->buf, (size_t)want);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    in->buf = grown;
    in->cap = want;
    return 0;
}

/* Whether a whole frame is held: 1, with *need its length with the header; 0, with *need the bytes it takes to
 * go on (the header, or the whole frame); -1 for a header announcing more than max_frame (a corrupt stream). */
static int
frame_held(const Input *in, Py_ssize_t max_frame, Py_ssize_t *need)
{
    Py_ssize_t held = in->end - in->start;
    *need = HEADER;
    if (held < HEADER)
        return 0;
    const unsigned char *h = (const unsigned char *)in->buf + in->start;
    size_t announced = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
    if (announced > (size_t)max_frame)
        return -1;
    *need = HEADER + (Py_ssize_t)announced;
    return held >= *need;
}

/* One read(2) into `in`, with room for `need` held bytes: how many bytes came (0 at end of input), or -1 with
 * an error set. */
static Py_ssize_t
input_fill(Input *in, int fd, Py_ssize_t need)
{
    if (input_reserve(in, need) < 0)
        return -1;
    Py_ssize_t got = read_some(fd, in->buf + in->end, (size_t)(in->cap - in->end));
    if (got > 0)
        in->end += got;
    return got;
}

static PyObject *
frames_serve(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"in_fd", "out_fd", "method", "crypt_error", "unserialisable", "too_large", "max_frame",
                             NULL};
    int in_fd, out_fd;
    Loop loop;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiOOSSn:serve", kwlist, &in_fd, &out_fd, &loop.method,
                                     &loop.crypt_error, &loop.unserialisable, &loop.too_large, &loop.max_frame))
        return NULL;
    if (!PyCallable_Check(loop.method) || !PyType_Check(loop.crypt_error) || loop.max_frame < HEADER) {
        PyErr_SetString(PyExc_TypeError, "serve: method must be callable, crypt_error a type, max_frame >= 4");
        return NULL;
    }
    if ((loop.cache = PyDict_New()) == NULL)
        return NULL;
    loop.n_named = 0;
    Input in = {NULL, 0, 0, 0};
    int failed = 0;
    for (;;) {
        Py_ssize_t need;
        int whole = frame_held(&in, loop.max_frame, &need);
        if (whole < 0)
            break; /* FrameTooLarge: the stream is corrupt, serving ends */
        if (!whole) {
            Py_ssize_t got = input_fill(&in, in_fd, need);
            if (got < 0)
                failed = 1;
            if (got <= 0)
                break; /* an error, or end of input */
            continue;
        }
        const char *payload = in.buf + in.start + HEADER;
        in.start += need;
        PyObject *value;
        PyObject *reply = reply_to(&loop, payload, need - HEADER, &value);
        if (value != NULL) {
            int written = write_ok(&loop, out_fd, value);
            Py_DECREF(value);
            if (written < 0) {
                failed = 1;
                break;
            }
            continue;
        }
        PyObject *frame = reply == NULL ? NULL : frame_of(&loop, reply);
        Py_XDECREF(reply);
        if (frame == NULL || write_all(out_fd, PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame)) < 0) {
            Py_XDECREF(frame);
            failed = 1;
            break;
        }
        Py_DECREF(frame);
    }
    PyMem_Free(in.buf);
    Py_DECREF(loop.cache);
    for (int i = 0; i < loop.n_named; i++)
        Py_DECREF(loop.named[i].func);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

static double
monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec * 1000.0 + (double)now.tv_nsec / 1e6;
}

/* The outcomes of a round trip, and the cases the parent's Python answers (ChildProcess._outcome). */
enum {
    OK, TIMED_OUT, DIED, OVERSIZED, GONE, /* the round trip's */
    REQUEST_TOO_LARGE, EXITED, PENDING, REPLY /* the call's */
};

/* The request written, then bytes read (poll(2) bounded by the deadline, read(2)) into `in` until one whole
 * reply frame is there: OK with *need its length (header included) at in->start, or another outcome; -1 with an
 * error set (a signal handler raised, or read or poll failed as os.read or poll would). The caller frees
 * in->buf in every case. */
static int
round_trip(int out_fd, int in_fd, const char *frame, Py_ssize_t len, double timeout, Py_ssize_t max_frame,
           Input *in, Py_ssize_t *need)
{
    double deadline = monotonic_ms() + timeout * 1000.0;
    int written = write_frame(out_fd, frame, len);
    if (written == -1)
        return -1;
    if (written == -2) /* EPIPE: the child is gone */
        return GONE;
    for (;;) {
        int whole = frame_held(in, max_frame, need);
        if (whole < 0)
            return OVERSIZED;
        if (whole)
            return OK;
        double remaining = deadline - monotonic_ms();
        if (remaining <= 0)
            return TIMED_OUT;
        struct pollfd waiting = {.fd = in_fd, .events = POLLIN, .revents = 0};
        int ready;
        BLOCKING(ready = poll(&waiting, 1, remaining > 2e9 ? 2000000000 : (int)remaining + 1));
        if (ready < 0) {
            if (errno == EINTR && PyErr_CheckSignals() == 0)
                continue;
            if (errno != EINTR)
                PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (ready == 0)
            continue;
        Py_ssize_t got = input_fill(in, in_fd, *need);
        if (got <= 0)
            return got == 0 ? DIED : -1;
    }
}

/* The request frame of (method, args, kwargs) by impl/_codec.c, when all three are of its subset (a str
 * method, a tuple of arguments, no keywords), into `small` or a PyMem_Malloc'd buffer: its length (header
 * included), *frame set; 0 when they are not (marshal writes them); -1 with MemoryError. */
static Py_ssize_t
write_request(PyObject *method, PyObject *args, PyObject *kwargs, unsigned char *small, Py_ssize_t small_size,
              unsigned char **frame)
{
    Py_ssize_t name = PyUnicode_CheckExact(method) ? codec_size(method, 0) : -1;
    Py_ssize_t values = name >= 0 && PyTuple_CheckExact(args) ? codec_size(args, 2) : -1;
    Py_ssize_t keywords = values >= 0 && PyDict_CheckExact(kwargs) ? codec_size(kwargs, 0) : -1;
    if (keywords < 0)
        return 0;
    Py_ssize_t len = HEADER + 2 + name + values + keywords;
    *frame = len <= small_size ? small : PyMem_Malloc((size_t)len);
    if (*frame == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    unsigned char *out = *frame;
    put_header(out, len - HEADER);
    out += HEADER;
    *out++ = M_SMALL_TUPLE;
    *out++ = 3;
    out = codec_write(out, method);
    out = codec_write(out, args);
    codec_write(out, kwargs);
    return len;
}

/* The value of an ("ok", value) reply of impl/_codec.c's subset (new reference); NULL without an error for any
 * other reply (marshal reads it), with one for a failed allocation. */
static PyObject *
read_ok(const unsigned char *payload, Py_ssize_t size)
{
    if (size < 6 || (payload[0] & ~M_FLAG_REF) != M_SMALL_TUPLE || payload[1] != 2
        || ((payload[2] & ~M_FLAG_REF) != M_SHORT_ASCII && (payload[2] & ~M_FLAG_REF) != M_SHORT_ASCII_INTERNED)
        || payload[3] != 2 || payload[4] != 'o' || payload[5] != 'k')
        return NULL;
    Cursor cursor = {payload + 6, payload + size};
    return codec_read(&cursor, 2);
}

/* The names the call looks up each time, interned once (a lookup by C string makes a string first). */
static PyObject *s_acquire, *s_release, *s_returncode, *s_data;

/* lock.acquire() (blocking: the lock releases the GIL while it waits) or lock.release(). 0, or -1. */
static int
lock_call(PyObject *lock, PyObject *name)
{
    PyObject *done = PyObject_CallMethodNoArgs(lock, name);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* outcome(kind, method, detail): the parent's Python answers every case but an "ok" reply. */
static PyObject *
answer(PyObject *outcome, int kind, PyObject *method, PyObject *detail)
{
    PyObject *kind_obj = PyLong_FromLong(kind);
    if (kind_obj == NULL)
        return NULL;
    PyObject *call_args[3] = {kind_obj, method, detail};
    PyObject *result = PyObject_Vectorcall(outcome, call_args, 3, NULL);
    Py_DECREF(kind_obj);
    return result;
}

/* ChildProcess.call in C. parts: (lock, popen, reader, request fd, reply fd, outcome, max_frame, request_limit);
 * then method, args, kwargs, timeout. The request encoded (marshal: a ValueError for what it cannot carry),
 * the lock taken, the round trip made, the reader left holding what was read past the reply, and an ("ok",
 * value) reply answered with the value; every other case goes to outcome() (under the lock when the request was
 * sent, as the Python steps raise under it), which answers it as ChildProcess does. */
static PyObject *
frames_call(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyTuple_CheckExact(args[0]) || PyTuple_GET_SIZE(args[0]) != 8) {
        PyErr_SetString(PyExc_TypeError, "call(parts, method, args, kwargs, timeout)");
        return NULL;
    }
    PyObject *const *part = &PyTuple_GET_ITEM(args[0], 0);
    PyObject *lock = part[0], *popen = part[1], *reader = part[2], *outcome = part[5];
    int out_fd = (int)PyLong_AsLong(part[3]), in_fd = (int)PyLong_AsLong(part[4]);
    Py_ssize_t max_frame = PyLong_AsSsize_t(part[6]), request_limit = PyLong_AsSsize_t(part[7]);
    double timeout = PyFloat_AsDouble(args[4]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *method = args[1];
    unsigned char small[512], *request = NULL;
    PyObject *frame = NULL; /* the request's frame when marshal wrote it */
    Py_ssize_t len = write_request(method, args[2], args[3], small, (Py_ssize_t)sizeof small, &request);
    if (len < 0)
        return NULL;
    if (len == 0) {
        PyObject *packed = PyTuple_Pack(3, method, args[2], args[3]);
        PyObject *encoded = packed == NULL ? NULL : PyMarshal_WriteObjectToString(packed, Py_MARSHAL_VERSION);
        Py_XDECREF(packed);
        frame = encoded == NULL ? NULL : framed(encoded);
        Py_XDECREF(encoded);
        if (frame == NULL)
            return NULL;
        request = (unsigned char *)PyBytes_AS_STRING(frame);
        len = PyBytes_GET_SIZE(frame);
    }
    PyObject *result = NULL, *reply = NULL, *returncode = NULL, *held = NULL;
    Input in = {NULL, 0, 0, 0};
    int pending = 0;
    if (len > request_limit) {
        result = answer(outcome, REQUEST_TOO_LARGE, method, Py_None);
        goto done;
    }
    if (lock_call(lock, s_acquire) < 0)
        goto done;
    returncode = PyObject_GetAttr(popen, s_returncode);
    held = returncode == NULL ? NULL : PyObject_GetAttr(reader, s_data);
    if (held == NULL)
        goto unlock;
    if (returncode != Py_None) { /* reaped by an earlier call */
        result = answer(outcome, EXITED, method, returncode);
        goto unlock;
    }
    pending = PyObject_IsTrue(held); /* bytes already read: the Python steps take them first, unlocked */
    if (pending != 0)
        goto unlock;
    Py_ssize_t need;
    int got = round_trip(out_fd, in_fd, (const char *)request, len, timeout, max_frame, &in, &need);
    if (got < 0)
        goto unlock;
    if (got != OK) {
        PyObject *detail = PyFloat_FromDouble(timeout);
        if (detail != NULL) {
            result = answer(outcome, got, method, detail);
            Py_DECREF(detail);
        }
        goto unlock;
    }
    Py_ssize_t extra = in.end - in.start - need;
    if (extra > 0) { /* bytes past the reply: the reader keeps them for the next call (it held none) */
        PyObject *rest = PyBytes_FromStringAndSize(in.buf + in.start + need, extra);
        int kept = rest != NULL && PyObject_SetAttr(reader, s_data, rest) == 0;
        Py_XDECREF(rest);
        if (!kept)
            goto unlock;
    }
    const unsigned char *payload = (const unsigned char *)in.buf + in.start + HEADER;
    result = read_ok(payload, need - HEADER);
    if (result == NULL && !PyErr_Occurred()) {
        int refused;
        reply = loads((const char *)payload, need - HEADER, &refused);
        if (reply == NULL && refused)
            reply = Py_NewRef(Py_None); /* answered as a malformed reply */
    }
unlock:
    PyMem_Free(in.buf);
    Py_XDECREF(returncode);
    Py_XDECREF(held);
    /* Released with the call's own error (an outcome raised under the lock, as the Python steps do) set aside. */
    PyObject *error_type, *error, *traceback;
    PyErr_Fetch(&error_type, &error, &traceback);
    if (lock_call(lock, s_release) < 0) {
        Py_XDECREF(error_type);
        Py_XDECREF(error);
        Py_XDECREF(traceback);
        Py_CLEAR(result);
        Py_CLEAR(reply);
        pending = -1;
        goto done;
    }
    PyErr_Restore(error_type, error, traceback);
done:
    if (frame != NULL)
        Py_DECREF(frame);
    else if (request != small)
        PyMem_Free(request);
    if (pending < 0)
        return NULL;
    if (pending) {
        PyObject *detail = PyTuple_Pack(3, args[2], args[3], args[4]);
        result = detail == NULL ? NULL : answer(outcome, PENDING, method, detail);
        Py_XDECREF(detail);
        return result;
    }
    if (reply == NULL)
        return result; /* an "ok" reply's value, an outcome's answer, or NULL with its error */
    if (PyTuple_CheckExact(reply) && PyTuple_GET_SIZE(reply) == 2 && PyUnicode_CheckExact(PyTuple_GET_ITEM(reply, 0))
        && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(reply, 0), "ok") == 0) {
        result = Py_NewRef(PyTuple_GET_ITEM(reply, 1));
        Py_DECREF(reply);
        return result;
    }
    result = answer(outcome, REPLY, method, reply);
    Py_DECREF(reply);
    return result;
}

/* --- Route: one of ProcessCsp's calls into the app process, in C ---------------------------------------- */

/* Why: with the app process's side in C, the parent's Python around the call (ProcessCsp's method, whose
 * handle it is, the argument's conversion, ChildProcess.call, the answer's check) cost as many instructions as
 * the app process's whole import, and its code is what a process just woken pays for (docs/benchmarks.md,
 * section 3). A Route is the method's usual case in C: the handle an exact int of the app process's range, the
 * other arguments of the types the Python method passes on as they are, no keywords, exactly `arity`
 * arguments; it makes the call as ChildProcess.call does (its timeout read each time) and checks the answer's
 * kind. Anything else goes, untouched, to the Python method (`fallback`), and an answer of another kind to
 * `judge`, which raises what the Python method raises for it. */

enum { ANSWER_HANDLE, ANSWER_BYTES, ANSWER_NONE };

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;  /* route_call: called without an arguments tuple */
    PyObject *child;            /* the ChildProcess (its timeout, read each call) */
    PyObject *parts;            /* its native call's parts */
    PyObject *method;           /* the app process's method */
    PyObject *judge;            /* value -> what the Python method does with an answer of another kind */
    PyObject *fallback;         /* the Python method, bound */
    long long low, high;        /* the app process's handles: low <= handle < high */
    int arity, answer;
} Route;

static PyObject *s_timeout;

static int
route_traverse(Route *self, visitproc visit, void *arg)
{
    Py_VISIT(self->child);
    Py_VISIT(self->parts);
    Py_VISIT(self->method);
    Py_VISIT(self->judge);
    Py_VISIT(self->fallback);
    return 0;
}

static int
route_clear(Route *self)
{
    Py_CLEAR(self->child);
    Py_CLEAR(self->parts);
    Py_CLEAR(self->method);
    Py_CLEAR(self->judge);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
route_dealloc(Route *self)
{
    PyObject_GC_UnTrack(self);
    route_clear(self);
    PyObject_GC_Del(self);
}

static PyTypeObject RouteType;
static PyObject *route_call(Route *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

static PyObject *
route_new(PyTypeObject *Py_UNUSED(type), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"child", "parts", "method", "arity", "low", "high", "answer", "judge", "fallback", NULL};
    PyObject *child, *parts, *method, *judge, *fallback;
    int arity;
    long long low, high;
    const char *answer;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!UiLLsOO:Route", kwlist, &child, &PyTuple_Type, &parts, &method,
                                     &arity, &low, &high, &answer, &judge, &fallback))
        return NULL;
    int kind = strcmp(answer, "handle") == 0 ? ANSWER_HANDLE
               : strcmp(answer, "bytes") == 0 ? ANSWER_BYTES
               : strcmp(answer, "none") == 0  ? ANSWER_NONE
                                              : -1;
    if (kind < 0 || arity < 1 || arity > 8 || low < 1 || high <= low || PyTuple_GET_SIZE(parts) != 8
        || !PyCallable_Check(judge) || !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_ValueError, "Route: answer handle|bytes|none, 1..8 arguments, 0 < low < high, "
                                          "a native call's 8 parts, callable judge and fallback");
        return NULL;
    }
    Route *self = PyObject_GC_New(Route, &RouteType);
    if (self == NULL)
        return NULL;
    self->child = Py_NewRef(child);
    self->parts = Py_NewRef(parts);
    self->method = Py_NewRef(method);
    self->judge = Py_NewRef(judge);
    self->fallback = Py_NewRef(fallback);
    self->low = low;
    self->high = high;
    self->arity = arity;
    self->answer = kind;
    self->vectorcall = (vectorcallfunc)route_call;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* An exact int in [low, high). */
static int
in_range(PyObject *value, long long low, long long high)
{
    if (!PyLong_CheckExact(value))
        return 0;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(value, &overflow);
    return !overflow && x >= low && x < high;
}

static PyObject *frames_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

static PyObject *
route_call(Route *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    int usual = kwnames == NULL && nargs == self->arity && in_range(args[0], self->low, self->high);
    for (Py_ssize_t i = 1; usual && i < nargs; i++) { /* what the Python method passes on unconverted */
        PyTypeObject *type = Py_TYPE(args[i]);
        usual = type == &PyBytes_Type || type == &PyLong_Type || type == &PyBool_Type || type == &PyUnicode_Type
                || type == &PyFloat_Type || args[i] == Py_None;
    }
    if (!usual)
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    PyObject *timeout = PyObject_GetAttr(self->child, s_timeout);
    PyObject *call_args = timeout == NULL ? NULL : PyTuple_New(nargs);
    PyObject *kwargs = call_args == NULL ? NULL : PyDict_New();
    PyObject *value = NULL;
    if (kwargs != NULL) {
        for (Py_ssize_t i = 0; i < nargs; i++)
            PyTuple_SET_ITEM(call_args, i, Py_NewRef(args[i]));
        PyObject *call[5] = {self->parts, self->method, call_args, kwargs, timeout};
        value = frames_call(NULL, call, 5);
    }
    Py_XDECREF(timeout);
    Py_XDECREF(call_args);
    Py_XDECREF(kwargs);
    if (value == NULL)
        return NULL;
    if (self->answer == ANSWER_NONE) {
        Py_DECREF(value);
        Py_RETURN_NONE;
    }
    if (self->answer == ANSWER_HANDLE ? in_range(value, self->low, self->high) : PyBytes_CheckExact(value))
        return value;
    PyObject *judged = PyObject_CallOneArg(self->judge, value);
    Py_DECREF(value);
    return judged;
}

static PyTypeObject RouteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keyhandoff.impl._frames.Route",
    .tp_basicsize = sizeof(Route),
    .tp_dealloc = (destructor)route_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Route, vectorcall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Route(child, parts, method, arity, low, high, answer, judge, fallback): one of ProcessCsp's calls\n"
              "into the app process, its usual case in C.",
    .tp_traverse = (traverseproc)route_traverse,
    .tp_clear = (inquiry)route_clear,
    .tp_new = route_new,
};

/* White-box hooks for tests/impl/test_frames.py, which holds impl/_codec.c to marshal. */

/* _codec_read(data, depth): (True, value) for what the codec reads, (False, None) for what it declines. */
static PyObject *
frames_codec_read(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer data;
    int depth;
    if (!PyArg_ParseTuple(args, "y*i:_codec_read", &data, &depth))
        return NULL;
    Cursor cursor = {data.buf, (const unsigned char *)data.buf + data.len};
    PyObject *value = codec_read(&cursor, depth);
    PyBuffer_Release(&data);
    if (value == NULL)
        return PyErr_Occurred() ? NULL : Py_BuildValue("(OO)", Py_False, Py_None);
    return Py_BuildValue("(ON)", Py_True, value);
}

/* _codec_write(value, depth): the bytes the codec writes for value, or None when it declines. */
static PyObject *
frames_codec_write(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *value;
    int depth;
    if (!PyArg_ParseTuple(args, "Oi:_codec_write", &value, &depth))
        return NULL;
    Py_ssize_t size = codec_size(value, depth);
    if (size < 0)
        Py_RETURN_NONE;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out != NULL && codec_write((unsigned char *)PyBytes_AS_STRING(out), value)
                           != (unsigned char *)PyBytes_AS_STRING(out) + size) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_AssertionError, "codec_write wrote another size than codec_size gave");
        return NULL;
    }
    return out;
}

static PyMethodDef frames_methods[] = {
    {"_codec_read", frames_codec_read, METH_VARARGS, "White box: impl/_codec.c's reader, (read, value)."},
    {"_codec_write", frames_codec_write, METH_VARARGS, "White box: impl/_codec.c's writer, bytes or None."},
    {"serve", (PyCFunction)(void (*)(void))frames_serve, METH_VARARGS | METH_KEYWORDS,
     "serve(in_fd, out_fd, method, crypt_error, unserialisable, too_large, max_frame): answer framed requests\n"
     "until end of input or an absurd frame length (keyhandoff.impl.child's loop, in C)."},
    {"call", (PyCFunction)(void (*)(void))frames_call, METH_FASTCALL,
     "call(parts, method, args, kwargs, timeout): keyhandoff.impl.boundary.ChildProcess.call's round trip in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef frames_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "keyhandoff.impl._frames",
    .m_doc = "Both ends of the process boundary's round trip in C (keyhandoff.impl.child, .boundary).",
    .m_size = -1,
    .m_methods = frames_methods,
};

PyMODINIT_FUNC
PyInit__frames(void)
{
    if ((s_acquire == NULL && (s_acquire = PyUnicode_InternFromString("acquire")) == NULL)
        || (s_release == NULL && (s_release = PyUnicode_InternFromString("release")) == NULL)
        || (s_returncode == NULL && (s_returncode = PyUnicode_InternFromString("returncode")) == NULL)
        || (s_data == NULL && (s_data = PyUnicode_InternFromString("_data")) == NULL)
        || (s_timeout == NULL && (s_timeout = PyUnicode_InternFromString("timeout")) == NULL)
        || PyType_Ready(&RouteType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&frames_module);
    if (module != NULL && PyModule_AddObjectRef(module, "Route", (PyObject *)&RouteType) < 0)
        Py_CLEAR(module);
    return module;
}
