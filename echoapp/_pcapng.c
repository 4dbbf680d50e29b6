/*
 * The wire record's data packets as pcapng blocks, for echoapp's optional
 * C accelerator (built into _mmsg with _mmsg.c): pack_data makes one block
 * (echoapp/_record/packets.py's DataHeaders.block is its twin and says what
 * each piece is), and pack_run makes a run of them from the store's
 * journal, the capture's loop over a batch (echoapp/_record/capture.py's
 * CaptureFile.batch is its twin, and hands it only the entries with no
 * note: a connection's data packets, each from its side's pieces).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const char *at;
    Py_ssize_t size;
} piece;

static int
piece_of(PyObject *bytes, piece *out)
{
    char *at;
    if (PyBytes_AsStringAndSize(bytes, &at, &out->size) < 0)
        return -1;
    out->at = at;
    return 0;
}

/*
 * The block: first, the time in microseconds as two 32-bit halves in the
 * machine's order, second, the sequence and acknowledgement numbers
 * (network order), gap0, the TCP checksum, gap1, the payload and the
 * trailer.  The checksum is 0xFFFF minus the sum, modulo 0xFFFF, of base,
 * seq, ack and the payload's 16-bit words (an odd payload padded with a
 * zero byte): the twin's remainder, summed here.
 */
static PyObject *
make_block(const piece *pieces, unsigned long long base, double at, unsigned long seq, unsigned long ack,
           const char *payload, Py_ssize_t size)
{
    if (seq > 0xFFFFFFFFUL || ack > 0xFFFFFFFFUL || base > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_OverflowError, "seq, ack and base are 32-bit numbers");
        return NULL;
    }
    double micro = nearbyint(at * 1e6); /* round half to even, as Python's round() */
    if (!(micro >= 0 && micro < 18446744073709551616.0)) {
        PyErr_SetString(PyExc_OverflowError, "the time is out of a pcapng block's range");
        return NULL;
    }
    unsigned long long stamp = (unsigned long long)micro;
    unsigned long long sum = base + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF);
    const unsigned char *bytes = (const unsigned char *)payload;
    Py_ssize_t i = 0;
    for (; i + 1 < size; i += 2)
        sum += ((unsigned int)bytes[i] << 8) | bytes[i + 1];
    if (i < size)
        sum += (unsigned int)bytes[i] << 8;
    unsigned int checksum = 0xFFFF - (unsigned int)(sum % 0xFFFF);
    const piece *first = &pieces[0], *second = &pieces[1], *gap0 = &pieces[2], *gap1 = &pieces[3];
    const piece *trailer = &pieces[4];
    Py_ssize_t total =
        first->size + 8 + second->size + 8 + gap0->size + 2 + gap1->size + size + trailer->size;
    PyObject *block = PyBytes_FromStringAndSize(NULL, total);
    if (block == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(block);
    uint32_t halves[2] = {(uint32_t)(stamp >> 32), (uint32_t)(stamp & 0xFFFFFFFFULL)};
    uint32_t numbers[2] = {htonl((uint32_t)seq), htonl((uint32_t)ack)};
    uint16_t sum16 = htons((uint16_t)checksum);
    memcpy(out, first->at, (size_t)first->size);
    out += first->size;
    memcpy(out, halves, 8); /* the machine's order, as the block's other fields */
    out += 8;
    memcpy(out, second->at, (size_t)second->size);
    out += second->size;
    memcpy(out, numbers, 8);
    out += 8;
    memcpy(out, gap0->at, (size_t)gap0->size);
    out += gap0->size;
    memcpy(out, &sum16, 2);
    out += 2;
    memcpy(out, gap1->at, (size_t)gap1->size);
    out += gap1->size;
    memcpy(out, payload, (size_t)size);
    out += size;
    memcpy(out, trailer->at, (size_t)trailer->size);
    return block;
}

PyObject *
pack_data(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    piece pieces[5];
    char *payload;
    Py_ssize_t size;

    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError,
                        "pack_data(first, second, gap0, gap1, trailer, base, at, seq, ack, payload)");
        return NULL;
    }
    for (int i = 0; i < 5; i++)
        if (piece_of(args[i], &pieces[i]) < 0)
            return NULL;
    if (PyBytes_AsStringAndSize(args[9], &payload, &size) < 0)
        return NULL;
    unsigned long long base = PyLong_AsUnsignedLongLong(args[5]);
    double at = PyFloat_AsDouble(args[6]);
    unsigned long seq = PyLong_AsUnsignedLong(args[7]);
    unsigned long ack = PyLong_AsUnsignedLong(args[8]);
    if (PyErr_Occurred())
        return NULL;
    return make_block(pieces, base, at, seq, ack, payload, size);
}

/* Attribute names, made once. */
static PyObject *s_number, *s_headers, *s_seq, *s_size, *s_packed, *s_sized;

static int
name(PyObject **made, const char *text)
{
    if (*made == NULL)
        *made = PyUnicode_InternFromString(text);
    return *made == NULL ? -1 : 0;
}

static int
names(void)
{
    if (name(&s_number, "number") < 0 || name(&s_headers, "headers") < 0 || name(&s_seq, "seq") < 0 ||
        name(&s_size, "size") < 0 || name(&s_packed, "packed") < 0 || name(&s_sized, "_sized") < 0)
        return -1;
    return 0;
}

/* A wire's attribute that is a dict (its headers, its seq): a new reference, or NULL with an error set. */
static PyObject *
dict_of(PyObject *wire, PyObject *name)
{
    PyObject *found = PyObject_GetAttr(wire, name);
    if (found != NULL && !PyDict_Check(found)) {
        PyErr_Format(PyExc_TypeError, "a wire's %U is a dict", name);
        Py_CLEAR(found);
    }
    return found;
}

/*
 * One entry (at, record, direction, data) as its block, appended to out:
 * 1 made, 0 for one left to Python (no wire for its record, no side made
 * yet for its direction, or data over segment), -1 for an error.  *total
 * is the block's length.
 */
static int
pack_entry(PyObject *entry, PyObject *wires, PyObject *out, Py_ssize_t segment, long long *total)
{
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 4)
        return 0;
    PyObject *record = PyTuple_GET_ITEM(entry, 1), *direction = PyTuple_GET_ITEM(entry, 2);
    PyObject *data = PyTuple_GET_ITEM(entry, 3);
    if (!PyBytes_Check(data) || PyBytes_GET_SIZE(data) > segment)
        return 0;
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    PyObject *number = PyObject_GetAttr(record, s_number);
    if (number == NULL)
        return -1;
    PyObject *wire = PyDict_GetItemWithError(wires, number); /* borrowed */
    Py_DECREF(number);
    if (wire == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(wire);
    /* Declared before the first goto: nothing read after done is left unset. */
    int made = -1;
    PyObject *headers = NULL, *side = NULL, *packed = NULL, *seq = NULL, *block = NULL, *next = NULL;
    PyObject *sized, *sender, *receiver, *sent_number, *ack_number;
    Py_ssize_t was;
    piece pieces[5];
    unsigned long long base, sent, ack;
    long long length;
    double at;
    headers = dict_of(wire, s_headers);
    if (headers == NULL)
        goto done;
    side = PyDict_GetItemWithError(headers, direction);
    if (side == NULL) {
        made = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    Py_INCREF(side);
    sized = PyObject_GetAttr(side, s_size);
    if (sized == NULL)
        goto done;
    was = PyLong_AsSsize_t(sized);
    Py_DECREF(sized);
    if (was == -1 && PyErr_Occurred())
        goto done;
    if (was != size) { /* what depends on the size alone, made by the twin for this size */
        PyObject *asked = PyLong_FromSsize_t(size);
        PyObject *done_sizing = asked == NULL ? NULL : PyObject_CallMethodOneArg(side, s_sized, asked);
        Py_XDECREF(asked);
        if (done_sizing == NULL)
            goto done;
        Py_DECREF(done_sizing);
    }
    /* (first, second, gap0, gap1, trailer, base, total, sender, receiver) */
    packed = PyObject_GetAttr(side, s_packed);
    if (packed == NULL)
        goto done;
    if (!PyTuple_Check(packed) || PyTuple_GET_SIZE(packed) != 9) {
        PyErr_SetString(PyExc_TypeError, "a side's packed pieces are a tuple of 9");
        goto done;
    }
    for (int i = 0; i < 5; i++)
        if (piece_of(PyTuple_GET_ITEM(packed, i), &pieces[i]) < 0)
            goto done;
    base = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(packed, 5));
    length = PyLong_AsLongLong(PyTuple_GET_ITEM(packed, 6));
    sender = PyTuple_GET_ITEM(packed, 7);
    receiver = PyTuple_GET_ITEM(packed, 8);
    at = PyFloat_AsDouble(PyTuple_GET_ITEM(entry, 0));
    if (PyErr_Occurred())
        goto done;
    seq = dict_of(wire, s_seq);
    if (seq == NULL)
        goto done;
    sent_number = PyDict_GetItemWithError(seq, sender);
    ack_number = sent_number == NULL ? NULL : PyDict_GetItemWithError(seq, receiver);
    if (ack_number == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_KeyError, "a wire's seq has both sides");
        goto done;
    }
    sent = PyLong_AsUnsignedLongLong(sent_number);
    ack = PyLong_AsUnsignedLongLong(ack_number);
    if (PyErr_Occurred())
        goto done;
    block = make_block(pieces, base, at, (unsigned long)(sent & 0xFFFFFFFFULL),
                       (unsigned long)(ack & 0xFFFFFFFFULL), PyBytes_AS_STRING(data), size);
    if (block == NULL)
        goto done;
    next = PyLong_FromUnsignedLongLong(sent + (unsigned long long)size);
    if (next == NULL || PyDict_SetItem(seq, sender, next) < 0 || PyList_Append(out, block) < 0)
        goto done;
    *total = length;
    made = 1;
done:
    Py_XDECREF(next);
    Py_XDECREF(block);
    Py_XDECREF(seq);
    Py_XDECREF(packed);
    Py_XDECREF(side);
    Py_XDECREF(headers);
    Py_DECREF(wire);
    return made;
}

/*
 * pack_run(entries, start, stop, wires, out, size, limit, segment) ->
 * (index, size): the blocks of entries[start:stop], appended to out, until
 * one it leaves to Python (its index is returned) or, with a limit, the
 * size written reaches it (the index after the last made: the file rotates
 * there).
 */
PyObject *
pack_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "pack_run(entries, start, stop, wires, out, size, limit, segment)");
        return NULL;
    }
    PyObject *entries = args[0], *wires = args[3], *out = args[4];
    if (!PyList_Check(entries) || !PyDict_Check(wires) || !PyList_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "entries and out are lists, wires a dict");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), stop = PyLong_AsSsize_t(args[2]);
    long long size = PyLong_AsLongLong(args[5]), limit = PyLong_AsLongLong(args[6]);
    Py_ssize_t segment = PyLong_AsSsize_t(args[7]);
    if (PyErr_Occurred() || names() < 0)
        return NULL;
    if (start < 0)
        start = 0;
    Py_ssize_t index = start;
    while (index < stop && index < PyList_GET_SIZE(entries)) {
        long long total = 0;
        PyObject *entry = Py_NewRef(PyList_GET_ITEM(entries, index)); /* the twin's _sized is Python */
        int made = pack_entry(entry, wires, out, segment, &total);
        Py_DECREF(entry);
        if (made < 0)
            return NULL;
        if (made == 0)
            break;
        index++;
        size += total;
        if (limit > 0 && size >= limit)
            break;
    }
    return Py_BuildValue("(nL)", index, size);
}
