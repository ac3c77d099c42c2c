/* The per-frame work of a `frames` listener's steady state, in one call per read.
 *
 * proxy/net/frames.py does the same in Python and keeps doing it for everything but the common case:
 * these functions handle a prefix of the bytes just read and return where they stopped, and the caller
 * hands the rest (a partial frame, an oversized header, an envelope of any other shape) to the Python
 * decoder, which owns every error.  So they only ever accept what the Python path would accept in the
 * same way, and never raise for bad input.
 *
 * The per-connection constants come first, so that a connection binds them once (functools.partial).
 *
 *   wrap_reqs(hsize, big, max_frame, inflight, data, seq) -> (out | None, next_seq, end)
 *       Client frames -> `req` envelopes: each complete frame of `data` (header of `hsize` bytes,
 *       big-endian if `big`, at most `max_frame` bytes) is numbered from `seq`, recorded as
 *       inflight[seq] = body, and appended to `out` as {"t": "req", "seq": seq, "body": bin}, framed
 *       with a 4-byte big-endian length, byte for byte what msgpack's Packer makes of that dict.
 *
 *   unwrap_res(inflight, hsize, big, data) -> (out | None, count, body_bytes, end)
 *       Backend envelopes -> client frames: each complete envelope that is exactly a msgpack map
 *       {"t": "res", "seq": N, "body": bin} (any key order, minimal encodings of the keys) whose N is
 *       in `inflight` pops N and appends the body to `out` with a client header of `hsize` (4 or 8)
 *       bytes.  Stops before the first envelope of any other shape.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define ENV_HEADER 4

static uint64_t
read_header(const unsigned char *p, Py_ssize_t hsize, int big)
{
    uint64_t v = 0;
    if (big) {
        for (Py_ssize_t i = 0; i < hsize; i++) v = (v << 8) | p[i];
    }
    else {
        for (Py_ssize_t i = hsize; i > 0; i--) v = (v << 8) | p[i - 1];
    }
    return v;
}

static unsigned char *
write_header(unsigned char *p, uint64_t v, Py_ssize_t hsize, int big)
{
    if (big) {
        for (Py_ssize_t i = hsize; i > 0; i--) { p[i - 1] = (unsigned char)v; v >>= 8; }
    }
    else {
        for (Py_ssize_t i = 0; i < hsize; i++) { p[i] = (unsigned char)v; v >>= 8; }
    }
    return p + hsize;
}

static Py_ssize_t
uint_size(uint64_t v)
{
    return v <= 0x7f ? 1 : v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffffULL ? 5 : 9;
}

static Py_ssize_t
bin_header_size(uint64_t n)
{
    return n <= 0xff ? 2 : n <= 0xffff ? 3 : 5;
}

/* fixmap(3), "t": "req", "seq": <uint>, "body": <bin> */
static const unsigned char REQ_HEAD[] = {0x83, 0xa1, 't', 0xa3, 'r', 'e', 'q', 0xa3, 's', 'e', 'q'};
static const unsigned char BODY_KEY[] = {0xa4, 'b', 'o', 'd', 'y'};

static unsigned char *
write_uint(unsigned char *p, uint64_t v)
{
    if (v <= 0x7f) { *p++ = (unsigned char)v; return p; }
    if (v <= 0xff) { *p++ = 0xcc; return write_header(p, v, 1, 1); }
    if (v <= 0xffff) { *p++ = 0xcd; return write_header(p, v, 2, 1); }
    if (v <= 0xffffffffULL) { *p++ = 0xce; return write_header(p, v, 4, 1); }
    *p++ = 0xcf;
    return write_header(p, v, 8, 1);
}

static int
parse_ssize(PyObject *o, Py_ssize_t *out)
{
    *out = PyLong_AsSsize_t(o);
    return !(*out == -1 && PyErr_Occurred());
}

/* (a, b, c) or (a, b, c, d) from new references, stealing them (NULL for an error, already set). */
static PyObject *
tuple_of(Py_ssize_t n, PyObject *a, PyObject *b, PyObject *c, PyObject *d)
{
    PyObject *items[4] = {a, b, c, d};
    PyObject *t = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (items[i] == NULL) goto fail;
    }
    t = PyTuple_New(n);
    if (t == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(t, i, items[i]);
    return t;
fail:
    for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(items[i]);
    return NULL;
}

static PyObject *
none_ref(void)
{
    Py_INCREF(Py_None);
    return Py_None;
}

static PyObject *
wrap_reqs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "wrap_reqs(hsize, big, max_frame, inflight, data, seq)");
        return NULL;
    }
    PyObject *data = args[4], *inflight = args[3];
    if (!PyBytes_CheckExact(data) || !PyDict_CheckExact(inflight)) {
        PyErr_SetString(PyExc_TypeError, "wrap_reqs: data must be bytes and inflight a dict");
        return NULL;
    }
    Py_ssize_t hsize, max_frame;
    if (!parse_ssize(args[0], &hsize) || !parse_ssize(args[2], &max_frame)) return NULL;
    if (hsize != 1 && hsize != 2 && hsize != 4 && hsize != 8) {
        PyErr_SetString(PyExc_ValueError, "wrap_reqs: hsize must be 1, 2, 4 or 8");
        return NULL;
    }
    int big = PyObject_IsTrue(args[1]);
    if (big < 0) return NULL;
    uint64_t seq = PyLong_AsUnsignedLongLong(args[5]);
    if (seq == (uint64_t)-1 && PyErr_Occurred()) return NULL;

    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);

    /* First pass: how many complete frames, and the exact size of their envelopes. */
    Py_ssize_t pos = 0, total = 0;
    uint64_t s = seq;
    while (n - pos >= hsize) {
        uint64_t len = read_header(buf + pos, hsize, big);
        if (len > (uint64_t)max_frame || len > (uint64_t)(n - pos - hsize)) break;
        Py_ssize_t payload = (Py_ssize_t)sizeof(REQ_HEAD) + uint_size(s) + (Py_ssize_t)sizeof(BODY_KEY)
                             + bin_header_size(len) + (Py_ssize_t)len;
        if ((uint64_t)payload > 0xffffffffULL) break; /* cannot be framed: leave it to the caller */
        total += ENV_HEADER + payload;
        pos += hsize + (Py_ssize_t)len;
        s++;
    }
    Py_ssize_t end = pos;
    if (s == seq) return tuple_of(3, none_ref(), PyLong_FromUnsignedLongLong(seq), PyLong_FromSsize_t(0), NULL);

    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) return NULL;
    unsigned char *w = (unsigned char *)PyBytes_AS_STRING(out);
    pos = 0;
    s = seq;
    while (pos < end) {
        uint64_t len = read_header(buf + pos, hsize, big);
        const unsigned char *body = buf + pos + hsize;
        Py_ssize_t payload = (Py_ssize_t)sizeof(REQ_HEAD) + uint_size(s) + (Py_ssize_t)sizeof(BODY_KEY)
                             + bin_header_size(len) + (Py_ssize_t)len;
        w = write_header(w, (uint64_t)payload, ENV_HEADER, 1);
        memcpy(w, REQ_HEAD, sizeof(REQ_HEAD));
        w += sizeof(REQ_HEAD);
        w = write_uint(w, s);
        memcpy(w, BODY_KEY, sizeof(BODY_KEY));
        w += sizeof(BODY_KEY);
        if (len <= 0xff) { *w++ = 0xc4; w = write_header(w, len, 1, 1); }
        else if (len <= 0xffff) { *w++ = 0xc5; w = write_header(w, len, 2, 1); }
        else { *w++ = 0xc6; w = write_header(w, len, 4, 1); }
        memcpy(w, body, (size_t)len);
        w += len;

        PyObject *key = PyLong_FromUnsignedLongLong(s);
        PyObject *value = key ? PyBytes_FromStringAndSize((const char *)body, (Py_ssize_t)len) : NULL;
        if (value == NULL || PyDict_SetItem(inflight, key, value) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(value);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(value);
        pos += hsize + (Py_ssize_t)len;
        s++;
    }
    return tuple_of(3, out, PyLong_FromUnsignedLongLong(s), PyLong_FromSsize_t(end), NULL);
}

/* The value of the fixstr key at p, as one of: 1 "t", 2 "seq", 3 "body", 0 anything else. */
static int
key_of(const unsigned char *p, const unsigned char *limit, const unsigned char **next)
{
    if (p >= limit) return 0;
    unsigned c = p[0];
    if ((c & 0xe0) != 0xa0) return 0;
    Py_ssize_t len = c & 0x1f;
    if (limit - p - 1 < len) return 0;
    *next = p + 1 + len;
    if (len == 1 && p[1] == 't') return 1;
    if (len == 3 && memcmp(p + 1, "seq", 3) == 0) return 2;
    if (len == 4 && memcmp(p + 1, "body", 4) == 0) return 3;
    return 0;
}

/* The fast reply's shape; 1 with *seq, *body and *body_len set, 0 for anything else. */
static int
parse_res(const unsigned char *p, const unsigned char *limit, uint64_t *seq, const unsigned char **body,
          uint64_t *body_len)
{
    if (p >= limit || *p != 0x83) return 0;
    p++;
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        const unsigned char *q;
        int key = key_of(p, limit, &q);
        if (key == 0 || (seen & (1 << key))) return 0;
        seen |= 1 << key;
        p = q;
        if (p >= limit) return 0;
        unsigned c = *p;
        if (key == 1) {
            if (c != 0xa3 || limit - p < 4 || memcmp(p + 1, "res", 3) != 0) return 0;
            p += 4;
        }
        else if (key == 2) {
            Py_ssize_t size;
            if (c <= 0x7f) { *seq = c; size = 0; }
            else if (c == 0xcc) size = 1;
            else if (c == 0xcd) size = 2;
            else if (c == 0xce) size = 4;
            else if (c == 0xcf) size = 8;
            else return 0;
            if (limit - p - 1 < size) return 0;
            if (size) *seq = read_header(p + 1, size, 1);
            p += 1 + size;
        }
        else {
            Py_ssize_t size = c == 0xc4 ? 1 : c == 0xc5 ? 2 : c == 0xc6 ? 4 : 0;
            if (size == 0 || limit - p - 1 < size) return 0;
            uint64_t len = read_header(p + 1, size, 1);
            p += 1 + size;
            if ((uint64_t)(limit - p) < len) return 0;
            *body = p;
            *body_len = len;
            p += len;
        }
    }
    return p == limit && *seq > 0;
}

static PyObject *
unwrap_res(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "unwrap_res(inflight, hsize, big, data)");
        return NULL;
    }
    PyObject *data = args[3], *inflight = args[0];
    if (!PyBytes_CheckExact(data) || !PyDict_CheckExact(inflight)) {
        PyErr_SetString(PyExc_TypeError, "unwrap_res: data must be bytes and inflight a dict");
        return NULL;
    }
    Py_ssize_t hsize;
    if (!parse_ssize(args[1], &hsize)) return NULL;
    if (hsize != 4 && hsize != 8) {
        PyErr_SetString(PyExc_ValueError, "unwrap_res: hsize must be 4 or 8");
        return NULL;
    }
    int big = PyObject_IsTrue(args[2]);
    if (big < 0) return NULL;

    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    Py_ssize_t pos = 0, count = 0, nbody = 0;
    PyObject *out = NULL;
    unsigned char *start = NULL, *w = NULL;
    while (n - pos >= ENV_HEADER) {
        uint64_t len = read_header(buf + pos, ENV_HEADER, 1);
        if (len > (uint64_t)(n - pos - ENV_HEADER)) break;
        const unsigned char *payload = buf + pos + ENV_HEADER;
        uint64_t seq = 0, body_len = 0;
        const unsigned char *body = NULL;
        if (!parse_res(payload, payload + len, &seq, &body, &body_len)) break;
        PyObject *key = PyLong_FromUnsignedLongLong(seq);
        if (key == NULL) goto error;
        PyObject *found = PyDict_GetItemWithError(inflight, key);
        if (found == NULL) {
            Py_DECREF(key);
            if (PyErr_Occurred()) goto error;
            break; /* not outstanding: the caller reports it */
        }
        if (PyDict_DelItem(inflight, key) < 0) {
            Py_DECREF(key);
            goto error;
        }
        Py_DECREF(key);
        if (out == NULL) {
            /* A client header (<= 8) plus the body never exceeds the envelope it came in (>= 19
             * bytes of map and keys around the body, plus its 4-byte header), so the rest of the
             * read bounds the output. */
            out = PyBytes_FromStringAndSize(NULL, n - pos);
            if (out == NULL) goto error;
            start = w = (unsigned char *)PyBytes_AS_STRING(out);
        }
        w = write_header(w, body_len, hsize, big);
        memcpy(w, body, (size_t)body_len);
        w += body_len;
        nbody += (Py_ssize_t)body_len;
        count++;
        pos += ENV_HEADER + (Py_ssize_t)len;
    }
    if (out == NULL) {
        return tuple_of(4, none_ref(), PyLong_FromSsize_t(0), PyLong_FromSsize_t(0), PyLong_FromSsize_t(pos));
    }
    if (_PyBytes_Resize(&out, w - start) < 0) return NULL;
    return tuple_of(4, out, PyLong_FromSsize_t(count), PyLong_FromSsize_t(nbody), PyLong_FromSsize_t(pos));

error:
    Py_XDECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"wrap_reqs", (PyCFunction)(void (*)(void))wrap_reqs, METH_FASTCALL,
     "wrap_reqs(hsize, big, max_frame, inflight, data, seq) -> (out | None, next_seq, end)"},
    {"unwrap_res", (PyCFunction)(void (*)(void))unwrap_res, METH_FASTCALL,
     "unwrap_res(inflight, hsize, big, data) -> (out | None, count, body_bytes, end)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "replay._speedups",
    "Compiled steady-state paths of the frames listener (see proxy/net/frames.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
