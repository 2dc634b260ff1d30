/* The usage recorder's per-request work in C: podium._hitlog.HitLog.
 *
 * The proxy calls HitLog.hit() once for every request it serves for content. Written in
 * Python, the least a recorder can do (read the clock, keep one tuple) costs the proxy
 * benchmark about 4% of its throughput, above the 3% budget (bench/README.md). This does
 * the same work without creating a Python object: it picks the three headers a hit keeps,
 * reads the clock and appends the hit to a buffer of its own, already serialized.
 *
 * What take() returns is what podium.hitlog.PyHitLog (the same class in Python, used
 * where this module could not be built) hands on: the hits as lists of podium.hitlog.Hit
 * tuples in marshal's format, each behind its length (a uint32), as
 * FRAME.pack(len(data)) + marshal.dumps(hits, 2) would write each; a list is closed and
 * another begun past FRAME_BYTES. Only marshal's oldest
 * types are written (list, tuple, binary float, int, long, str as UTF-8, bytes, None),
 * which every marshal reads; tests/test_hitlog.py checks the bytes are the same.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define INITIAL_BYTES (1024 * 1024)
#define SHRINK_ABOVE_BYTES (16 * 1024 * 1024)
#define LIST_HEAD 9 /* the frame's length (uint32), marshal's list type and its length */
#define FRAME_BYTES (64 * 1024 * 1024) /* a list closed past this, another begun */
#define FIELD_HEAD 5 /* a field's type and its length (int32) */
#define MAX_FIELD 0x7FFFFFFF
#define FORMAT 1 /* what take() returns: podium.hitlog.FORMAT */

typedef struct {
    PyObject_HEAD
    char *buffer;
    Py_ssize_t used; /* LIST_HEAD when no hit is buffered */
    Py_ssize_t size;
    Py_ssize_t hits; /* since the last take */
    Py_ssize_t frame; /* where the open list's head is */
    Py_ssize_t frame_hits; /* in the open list */
} HitLog;

static int reserve(HitLog *self, Py_ssize_t more) {
    if (self->used + more <= self->size)
        return 0;
    Py_ssize_t size = self->size ? self->size : INITIAL_BYTES;
    while (size < self->used + more) {
        if (size > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        size *= 2;
    }
    char *buffer = PyMem_RawRealloc(self->buffer, (size_t)size);
    if (buffer == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->buffer = buffer;
    self->size = size;
    return 0;
}

static inline char *put_u32(char *at, uint32_t value) {
    for (int i = 0; i < 4; i++)
        at[i] = (char)(value >> (8 * i));
    return at + 4;
}

/* A field: bytes (or another object with a buffer, as bytes), a str (its UTF-8) or None.
 * held: the buffer to release once copied. -1 on a wrong type. */
typedef struct {
    char type;
    const char *data;
    Py_ssize_t length;
} Field;

static int field(PyObject *value, Field *out, Py_buffer *held) {
    held->obj = NULL;
    if (value == Py_None) {
        out->type = 'N';
        out->length = 0;
        return 0;
    }
    if (PyBytes_Check(value)) {
        out->type = 's';
        out->data = PyBytes_AS_STRING(value);
        out->length = PyBytes_GET_SIZE(value);
    } else if (PyUnicode_Check(value)) {
        out->type = 'u';
        out->data = PyUnicode_AsUTF8AndSize(value, &out->length);
        if (out->data == NULL)
            return -1;
    } else if (PyObject_CheckBuffer(value)) {
        if (PyObject_GetBuffer(value, held, PyBUF_CONTIG_RO) < 0)
            return -1;
        out->type = 's';
        out->data = held->buf;
        out->length = held->len;
    } else {
        PyErr_Format(PyExc_TypeError, "a hit's field must be bytes, str or None, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    if (out->length > MAX_FIELD) {
        if (held->obj != NULL)
            PyBuffer_Release(held);
        PyErr_SetString(PyExc_ValueError, "a hit's field is longer than 2 GiB");
        return -1;
    }
    return 0;
}

static inline int name_is(PyObject *name, const char *expected, Py_ssize_t length) {
    return PyBytes_GET_SIZE(name) == length && memcmp(PyBytes_AS_STRING(name), expected, (size_t)length) == 0;
}

static int is_websocket(PyObject *value) {
    static const char websocket[] = "websocket";
    if (!PyBytes_Check(value) || PyBytes_GET_SIZE(value) != 9)
        return 0;
    const char *data = PyBytes_AS_STRING(value);
    for (int i = 0; i < 9; i++) {
        char c = data[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != websocket[i])
            return 0;
    }
    return 1;
}

/* The bundle id as marshal writes an int: 'i' and an int32, or 'l', its number of 15-bit
 * digits (negative for a negative number) and the digits, least significant first. */
static char *put_int(char *at, long long value) {
    if (value >= INT32_MIN && value <= INT32_MAX) {
        *at++ = 'i';
        return put_u32(at, (uint32_t)(int32_t)value);
    }
    unsigned long long magnitude = value < 0 ? 0ull - (unsigned long long)value : (unsigned long long)value;
    char digits[16];
    int count = 0;
    while (magnitude) {
        unsigned digit = (unsigned)(magnitude & 0x7FFF);
        digits[2 * count] = (char)(digit & 0xFF);
        digits[2 * count + 1] = (char)(digit >> 8);
        magnitude >>= 15;
        count++;
    }
    *at++ = 'l';
    at = put_u32(at, (uint32_t)(int32_t)(value < 0 ? -count : count));
    memcpy(at, digits, (size_t)(2 * count));
    return at + 2 * count;
}

/* Write the open list's head: its length, and its number of hits. */
static void close_frame(HitLog *self) {
    char *at = put_u32(self->buffer + self->frame, (uint32_t)(self->used - self->frame - 4));
    *at++ = '[';
    put_u32(at, (uint32_t)self->frame_hits);
    self->frame_hits = 0;
}

PyDoc_STRVAR(hit_doc,
"hit(method, target, headers, content_guid, user_guid, bundle_id) -> bool\n\n"
"Append one hit; whether the request asks for a WebSocket (Upgrade: websocket).\n"
"headers: the request's (name, value) pairs, names lower-case bytes.");

static PyObject *HitLog_hit(HitLog *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "hit() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    if (self->buffer == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "HitLog.__init__ was not called");
        return NULL;
    }
    PyObject *headers = args[2];
    if (!PyList_Check(headers) && !PyTuple_Check(headers)) {
        PyErr_SetString(PyExc_TypeError, "hit(): headers must be a list or a tuple");
        return NULL;
    }
    long long bundle_id = 0;
    int has_bundle = args[5] != Py_None;
    if (has_bundle) {
        bundle_id = PyLong_AsLongLong(args[5]);
        if (bundle_id == -1 && PyErr_Occurred())
            return NULL;
    }
    PyObject *picked[3] = {Py_None, Py_None, Py_None}; /* user agent, dest, site */
    int websocket = 0;
    /* ASGI's headers: (name, value) pairs, as tuples or lists, in a list or a tuple */
    Py_ssize_t count = PySequence_Fast_GET_SIZE(headers);
    PyObject **items = PySequence_Fast_ITEMS(headers);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = items[i];
        if (!(PyTuple_Check(pair) || PyList_Check(pair)) || PySequence_Fast_GET_SIZE(pair) != 2)
            continue;
        PyObject *name = PySequence_Fast_GET_ITEM(pair, 0);
        PyObject *value = PySequence_Fast_GET_ITEM(pair, 1);
        if (!PyBytes_Check(name))
            continue;
        Py_ssize_t length = PyBytes_GET_SIZE(name);
        if (length == 10 && name_is(name, "user-agent", 10))
            picked[0] = value;
        else if (length == 14 && name_is(name, "sec-fetch-dest", 14))
            picked[1] = value;
        else if (length == 14 && name_is(name, "sec-fetch-site", 14))
            picked[2] = value;
        else if (length == 7 && name_is(name, "upgrade", 7))
            websocket = is_websocket(value);
    }
    /* the tuple's fields but the time and the bundle id, in order (the bundle id goes
     * between the user GUID and the target) */
    PyObject *values[7] = {args[3], args[4], args[1], args[0], picked[0], picked[1], picked[2]};
    Field fields[7];
    Py_buffer held[7];
    Py_ssize_t size = 5 + 9 + 1 + 2 + 8 * 2; /* tuple head, float, and a long int's most */
    int ready = 0;
    PyObject *result = NULL;
    for (; ready < 7; ready++) {
        if (field(values[ready], &fields[ready], &held[ready]) < 0)
            goto done;
        size += FIELD_HEAD + fields[ready].length;
    }
    if (size > FRAME_BYTES) { /* a request's line and headers are far smaller */
        PyErr_SetString(PyExc_ValueError, "a hit of more than 64 MiB");
        goto done;
    }
    if (self->frame_hits && self->used - self->frame + size > FRAME_BYTES) {
        if (reserve(self, LIST_HEAD + size) < 0)
            goto done;
        close_frame(self);
        self->frame = self->used;
        self->used += LIST_HEAD;
    } else if (reserve(self, size) < 0)
        goto done;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    char *at = self->buffer + self->used;
    *at++ = '(';
    at = put_u32(at, 9);
    *at++ = 'g';
    if (PyFloat_Pack8((double)now.tv_sec + (double)now.tv_nsec * 1e-9, at, 1) < 0)
        goto done;
    at += 8;
    for (int i = 0; i < 7; i++) {
        if (i == 2) { /* the bundle id comes after the content and user GUIDs */
            if (has_bundle)
                at = put_int(at, bundle_id);
            else
                *at++ = 'N';
        }
        *at++ = fields[i].type;
        if (fields[i].type != 'N') {
            at = put_u32(at, (uint32_t)fields[i].length);
            memcpy(at, fields[i].data, (size_t)fields[i].length);
            at += fields[i].length;
        }
    }
    self->used = at - self->buffer;
    self->hits++;
    self->frame_hits++;
    result = websocket ? Py_True : Py_False;
    Py_INCREF(result);
done:
    for (int i = 0; i < ready; i++)
        if (held[i].obj != NULL)
            PyBuffer_Release(&held[i]);
    return result;
}

PyDoc_STRVAR(take_doc,
"take() -> bytes\n\nThe hits appended since the last take() (b'' if none), leaving the log empty.");

static PyObject *HitLog_take(HitLog *self, PyObject *Py_UNUSED(ignored)) {
    if (self->hits == 0)
        return PyBytes_FromStringAndSize(NULL, 0);
    close_frame(self);
    PyObject *taken = PyBytes_FromStringAndSize(self->buffer, self->used);
    if (taken == NULL)
        return NULL;
    Py_ssize_t used = self->used;
    self->used = LIST_HEAD;
    self->hits = 0;
    self->frame = 0;
    if (self->size > SHRINK_ABOVE_BYTES && used < self->size / 4) { /* after a peak */
        Py_ssize_t size = 2 * used > INITIAL_BYTES ? 2 * used : INITIAL_BYTES;
        char *buffer = PyMem_RawRealloc(self->buffer, (size_t)size);
        if (buffer != NULL) {
            self->buffer = buffer;
            self->size = size;
        }
    }
    return taken;
}

static Py_ssize_t HitLog_length(HitLog *self) {
    return self->hits;
}

static int HitLog_init(HitLog *self, PyObject *args, PyObject *kwargs) {
    if (!PyArg_ParseTuple(args, ":HitLog") || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "HitLog() takes no arguments");
        return -1;
    }
    if (reserve(self, LIST_HEAD) < 0)
        return -1;
    self->used = LIST_HEAD;
    self->hits = 0;
    self->frame = 0;
    self->frame_hits = 0;
    return 0;
}

static void HitLog_dealloc(HitLog *self) {
    PyMem_RawFree(self->buffer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef HitLog_methods[] = {
    {"hit", (PyCFunction)(void (*)(void))HitLog_hit, METH_FASTCALL, hit_doc},
    {"take", (PyCFunction)HitLog_take, METH_NOARGS, take_doc},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods HitLog_sequence = {
    .sq_length = (lenfunc)HitLog_length,
};

static PyTypeObject HitLogType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "podium._hitlog.HitLog",
    .tp_doc = PyDoc_STR("Hits appended to a buffer, as marshal writes them (podium.hitlog)."),
    .tp_basicsize = sizeof(HitLog),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)HitLog_init,
    .tp_dealloc = (destructor)HitLog_dealloc,
    .tp_methods = HitLog_methods,
    .tp_as_sequence = &HitLog_sequence,
};

static struct PyModuleDef hitlog_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "podium._hitlog",
    .m_doc = "The usage recorder's per-request work in C (see podium.hitlog).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__hitlog(void) {
    if (PyType_Ready(&HitLogType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&hitlog_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "FORMAT", FORMAT) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&HitLogType);
    if (PyModule_AddObject(module, "HitLog", (PyObject *)&HitLogType) < 0) {
        Py_DECREF(&HitLogType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
