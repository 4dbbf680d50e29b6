/*
 * echoapp's optional UDP accelerator: a socket's ready datagrams read in
 * one system call (Linux's recvmmsg), which the standard library's socket
 * module does not offer, the greeter's reply to one made and sent
 * without a Python object (send_reply), and the UDP proxy's two other
 * calls, a session's read (recv_one) and the send back to its client
 * (send_to), without socket's 64 KiB buffer, exception and GIL release;
 * and the wire record's data packets packed into pcapng blocks (pack_data,
 * pack_run: in _pcapng.c).
 *
 * The contract is echoapp/_transports/datagram_batches.py's, where the same
 * call is written in Python on recvfrom (the fallback when this is not
 * built).  It passes MSG_DONTWAIT: it never blocks, so it keeps the GIL,
 * which keeps other threads off the one receive buffer below; a call made
 * again from the same thread (a finalizer the garbage collector runs while
 * a result is built) is kept off it by copying each datagram out of it
 * before anything the collector tracks is made.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_BATCH 32

static char *slab;          /* MAX_BATCH buffers of slot bytes, reused by every call */
static Py_ssize_t slot;

/*
 * The last source's host, as a string, per family: consecutive datagrams
 * mostly come from one host, which then costs no inet_ntop and no new
 * string (and the greeter's "same source as the last?" is an identity).
 */
static struct in_addr last4;
static struct in6_addr last6;
static PyObject *host4, *host6;

static PyObject *
host(int family, const void *raw, size_t size, void *last, PyObject **cached)
{
    char text[INET6_ADDRSTRLEN];
    if (*cached == NULL || memcmp(raw, last, size) != 0) {
        inet_ntop(family, raw, text, sizeof(text));
        PyObject *fresh = PyUnicode_FromString(text);
        if (fresh == NULL)
            return NULL;
        Py_XSETREF(*cached, fresh);
        memcpy(last, raw, size);
    }
    return Py_NewRef(*cached);
}

/* (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6: socket.recvfrom's. */
static PyObject *
address(const struct sockaddr_storage *from)
{
    if (from->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)from;
        PyObject *name = host(AF_INET, &in->sin_addr, sizeof(in->sin_addr), &last4, &host4);
        if (name == NULL)
            return NULL;
        PyObject *port = PyLong_FromLong(ntohs(in->sin_port));
        PyObject *pair = port == NULL ? NULL : PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_XDECREF(port);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, port);
        return pair;
    }
    if (from->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)from;
        PyObject *name = host(AF_INET6, &in6->sin6_addr, sizeof(in6->sin6_addr), &last6, &host6);
        return name == NULL ? NULL
                            : Py_BuildValue("(NiII)", name, ntohs(in6->sin6_port),
                                            (unsigned int)ntohl(in6->sin6_flowinfo), (unsigned int)in6->sin6_scope_id);
    }
    PyErr_Format(PyExc_OSError, "datagram from an address of family %d", (int)from->ss_family);
    return NULL;
}

/* A Python int as a C int: 0, or -1 with an exception (not an int, or out of range). */
static int
as_int(PyObject *value, int *out)
{
    long wide = PyLong_AsLong(value);
    if (wide == -1 && PyErr_Occurred())
        return -1;
    if (wide < INT_MIN || wide > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "an argument is out of a C int's range");
        return -1;
    }
    *out = (int)wide;
    return 0;
}

/* The largest datagram a read may ask for: UDP's own, with room to spare. */
#define MAX_SIZE 65536

/* The slab holds MAX_BATCH datagrams of size bytes: grown once (untouched pages cost no memory); -1 with
 * MemoryError. */
static int
room_for(Py_ssize_t size)
{
    if (size > slot) {
        char *grown = PyMem_RawRealloc(slab, (size_t)size * MAX_BATCH);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        slab = grown;
        slot = size;
    }
    return 0;
}

static PyObject *
recv_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int received;
    struct mmsghdr headers[MAX_BATCH];
    struct iovec vectors[MAX_BATCH];
    struct sockaddr_storage sources[MAX_BATCH];

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "recv_batch(fd, max_count, max_size)");
        return NULL;
    }
    int fd, count, wanted;
    if (as_int(args[0], &fd) < 0 || as_int(args[1], &count) < 0 || as_int(args[2], &wanted) < 0)
        return NULL;
    if (count < 1 || count > MAX_BATCH || wanted < 1 || wanted > MAX_SIZE) {
        PyErr_Format(PyExc_ValueError, "recv_batch takes 1 to %d datagrams of 1 to %d bytes", MAX_BATCH,
                     MAX_SIZE);
        return NULL;
    }
    Py_ssize_t size = wanted;
    if (room_for(size) < 0)
        return NULL;
    memset(headers, 0, sizeof(struct mmsghdr) * count);
    for (int i = 0; i < count; i++) {
        vectors[i].iov_base = slab + (size_t)i * slot;
        vectors[i].iov_len = (size_t)size;
        headers[i].msg_hdr.msg_iov = &vectors[i];
        headers[i].msg_hdr.msg_iovlen = 1;
        headers[i].msg_hdr.msg_name = &sources[i];
        headers[i].msg_hdr.msg_namelen = sizeof(sources[i]);
    }
    do {
        received = recvmmsg(fd, headers, (unsigned int)count, MSG_DONTWAIT, NULL);
    } while (received < 0 && errno == EINTR);
    if (received < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* Every payload copied out of the slab first: building the tuples and
     * the list below may run the garbage collector, and with it Python code
     * (a finalizer) that reads a socket again into the same slab, or grows
     * it.  bytes objects are not the collector's, so making them runs none. */
    PyObject *payloads[MAX_BATCH];
    for (int i = 0; i < received; i++) {
        Py_ssize_t length = headers[i].msg_len < (unsigned int)size ? (Py_ssize_t)headers[i].msg_len : size;
        payloads[i] = PyBytes_FromStringAndSize(vectors[i].iov_base, length);
        if (payloads[i] == NULL) {
            while (i-- > 0)
                Py_DECREF(payloads[i]);
            return NULL;
        }
    }
    PyObject *datagrams = PyList_New(received);
    for (int i = 0; i < received; i++) {
        PyObject *from = datagrams == NULL ? NULL : address(&sources[i]);
        PyObject *pair = from == NULL ? NULL : PyTuple_New(2);
        if (pair == NULL) {
            Py_XDECREF(from);
            Py_XDECREF(datagrams);
            for (int j = i; j < received; j++)
                Py_DECREF(payloads[j]);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, payloads[i]);
        PyTuple_SET_ITEM(pair, 1, from);
        PyList_SET_ITEM(datagrams, i, pair);
    }
    if (datagrams == NULL)
        return NULL;
    return datagrams;
}

/*
 * A destination (host, port[, flowinfo, scope_id]) as a socket address of
 * the socket's family.  The host string last parsed is kept by identity:
 * replies mostly go to the host whose string recv_batch made once (see
 * host() above), so most calls parse no text.
 */
static PyObject *last_dest;
static struct sockaddr_storage last_parsed;

static int
destination(PyObject *addr, int family, struct sockaddr_storage *out, socklen_t *length)
{
    PyObject *name;
    long port;
    unsigned long flowinfo = 0, scope_id = 0;
    Py_ssize_t size = PyTuple_Check(addr) ? PyTuple_GET_SIZE(addr) : 0;
    if (size != 2 && size != 4) {
        PyErr_SetString(PyExc_TypeError, "an address is (host, port[, flowinfo, scope_id])");
        return -1;
    }
    name = PyTuple_GET_ITEM(addr, 0);
    port = PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
    if (port == -1 && PyErr_Occurred())
        return -1;
    if (size == 4) {
        flowinfo = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 2));
        scope_id = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 3));
        if (PyErr_Occurred())
            return -1;
    }
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "an address's host is a str");
        return -1;
    }
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_OverflowError, "port must be 0-65535");
        return -1;
    }
    if (name != last_dest || last_parsed.ss_family != family) {
        Py_ssize_t length_of_text;
        const char *text = PyUnicode_AsUTF8AndSize(name, &length_of_text);
        if (text == NULL)
            return -1;
        if ((size_t)length_of_text != strlen(text)) { /* "127.0.0.1\0..." must not pass as 127.0.0.1 */
            PyErr_SetString(PyExc_ValueError, "an address's host has a NUL character");
            return -1;
        }
        struct sockaddr_storage parsed;
        memset(&parsed, 0, sizeof(parsed));
        void *raw = family == AF_INET ? (void *)&((struct sockaddr_in *)&parsed)->sin_addr
                                      : (void *)&((struct sockaddr_in6 *)&parsed)->sin6_addr;
        if (inet_pton(family, text, raw) != 1) {
            PyErr_Format(PyExc_OSError, "%R is not a numeric address of the socket's family", name);
            return -1;
        }
        parsed.ss_family = (sa_family_t)family;
        memcpy(&last_parsed, &parsed, sizeof(parsed));
        memcpy(out, &parsed, sizeof(*out));
        /* Last: releasing the old host may run Python code (a str subclass's
         * __del__) that calls send_reply and changes the cache. */
        Py_XSETREF(last_dest, Py_NewRef(name));
    } else {
        memcpy(out, &last_parsed, sizeof(*out));
    }
    if (family == AF_INET) {
        ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
        *length = sizeof(struct sockaddr_in);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
        in6->sin6_port = htons((uint16_t)port);
        in6->sin6_flowinfo = htonl((uint32_t)flowinfo);
        in6->sin6_scope_id = (uint32_t)scope_id;
        *length = sizeof(struct sockaddr_in6);
    }
    return 0;
}

/* The socket's descriptor and family (args[0], args[1]), a family of IP: 0, or -1 with an exception. */
static int
socket_of(PyObject *const *args, int *fd, int *family)
{
    if (as_int(args[0], fd) < 0 || as_int(args[1], family) < 0)
        return -1;
    if (*family != AF_INET && *family != AF_INET6) {
        PyErr_SetString(PyExc_ValueError, "the family is AF_INET or AF_INET6");
        return -1;
    }
    return 0;
}

/* size bytes sent to target at once (MSG_DONTWAIT): how many went, or OSError. */
static PyObject *
send_now(int fd, const char *data, Py_ssize_t size, struct sockaddr_storage *target, socklen_t namelen)
{
    ssize_t sent;
    do {
        sent = sendto(fd, data, (size_t)size, MSG_DONTWAIT, (struct sockaddr *)target, namelen);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromSsize_t(sent);
}

/*
 * The greeter's reply to one datagram, made and sent without a Python
 * object: prefix, the datagram without its trailing CR/LF, suffix, the
 * CR/LF mirrored (what bytes.rstrip(b"\r\n") and three concatenations
 * make in Python, udp.py's read_ready), sent with MSG_DONTWAIT.
 */
static PyObject *
send_reply(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    char stack[2048];
    char *buffer = stack;
    struct sockaddr_storage target;
    socklen_t namelen;
    char *prefix, *suffix, *data;
    Py_ssize_t prefix_size, suffix_size, size;

    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "send_reply(fd, family, prefix, suffix, datagram, address)");
        return NULL;
    }
    int fd, family;
    if (socket_of(args, &fd, &family) < 0)
        return NULL;
    if (PyBytes_AsStringAndSize(args[2], &prefix, &prefix_size) < 0 ||
        PyBytes_AsStringAndSize(args[3], &suffix, &suffix_size) < 0 ||
        PyBytes_AsStringAndSize(args[4], &data, &size) < 0)
        return NULL;
    if (destination(args[5], family, &target, &namelen) < 0)
        return NULL;
    Py_ssize_t message = size;
    while (message > 0 && (data[message - 1] == '\r' || data[message - 1] == '\n'))
        message--;
    Py_ssize_t total = prefix_size + size + suffix_size;
    if (total > (Py_ssize_t)sizeof(stack)) {
        buffer = PyMem_Malloc((size_t)total);
        if (buffer == NULL)
            return PyErr_NoMemory();
    }
    memcpy(buffer, prefix, (size_t)prefix_size);
    memcpy(buffer + prefix_size, data, (size_t)message);
    memcpy(buffer + prefix_size + message, suffix, (size_t)suffix_size);
    memcpy(buffer + prefix_size + message + suffix_size, data + message, (size_t)(size - message));
    PyObject *sent = send_now(fd, buffer, total, &target, namelen);
    if (buffer != stack)
        PyMem_Free(buffer);
    return sent;
}

/*
 * One datagram from a connected socket (a proxy session's upstream), into
 * the receive buffer recv_batch uses: bytes, or None when nothing is ready.
 * socket.recv allocates its whole size (64 KiB) per call, releases the GIL
 * and raises for "nothing ready"; this does none of that.
 */
static PyObject *
recv_one(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recv_one(fd, max_size)");
        return NULL;
    }
    int fd, wanted;
    if (as_int(args[0], &fd) < 0 || as_int(args[1], &wanted) < 0)
        return NULL;
    if (wanted < 1 || wanted > MAX_SIZE) {
        PyErr_Format(PyExc_ValueError, "recv_one takes datagrams of 1 to %d bytes", MAX_SIZE);
        return NULL;
    }
    Py_ssize_t size = wanted;
    if (room_for(size) < 0)
        return NULL;
    ssize_t got;
    do {
        got = recv(fd, slab, (size_t)size, MSG_DONTWAIT);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyBytes_FromStringAndSize(slab, got);
}

/*
 * A datagram sent as it is to an address (host, port[, flowinfo, scope_id])
 * of the socket's family, without waiting: what socket.sendto does, with
 * the host parsed once per host string (destination() above) and the GIL
 * kept (MSG_DONTWAIT never blocks).
 */
static PyObject *
send_to(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct sockaddr_storage target;
    socklen_t namelen;
    char *data;
    Py_ssize_t size;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "send_to(fd, family, datagram, address)");
        return NULL;
    }
    int fd, family;
    if (socket_of(args, &fd, &family) < 0)
        return NULL;
    if (PyBytes_AsStringAndSize(args[2], &data, &size) < 0)
        return NULL;
    if (destination(args[3], family, &target, &namelen) < 0)
        return NULL;
    return send_now(fd, data, size, &target, namelen);
}

/* The wire record's blocks: _pcapng.c. */
PyObject *pack_data(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *pack_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

static PyMethodDef methods[] = {
    {"recv_batch", (PyCFunction)(void (*)(void))recv_batch, METH_FASTCALL,
     "recv_batch(fd, max_count, max_size) -> [(data, address), ...]: what is ready, up to max_count "
     "(at most 32) datagrams of max_size bytes; [] for nothing; OSError for an error before any."},
    {"send_reply", (PyCFunction)(void (*)(void))send_reply, METH_FASTCALL,
     "send_reply(fd, family, prefix, suffix, datagram, address) -> sent: the greeter's reply to one "
     "datagram (prefix, the datagram without its trailing CR/LF, suffix, the CR/LF), sent at once."},
    {"recv_one", (PyCFunction)(void (*)(void))recv_one, METH_FASTCALL,
     "recv_one(fd, max_size) -> data or None: one datagram of a connected socket, None for nothing "
     "ready; OSError for an error."},
    {"send_to", (PyCFunction)(void (*)(void))send_to, METH_FASTCALL,
     "send_to(fd, family, datagram, address) -> sent: the datagram as it is, to a numeric address of "
     "the socket's family, at once."},
    {"pack_data", (PyCFunction)(void (*)(void))pack_data, METH_FASTCALL,
     "pack_data(first, second, gap0, gap1, trailer, base, at, seq, ack, payload) -> block: one pcapng "
     "block of the wire record's data packets (echoapp/_record/packets.py's twin)."},
    {"pack_run", (PyCFunction)(void (*)(void))pack_run, METH_FASTCALL,
     "pack_run(entries, start, stop, wires, out, size, limit, segment) -> (index, size): the blocks of "
     "a run of the journal's data entries (echoapp/_record/capture.py's batch is the twin)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_mmsg",
    .m_doc = "recvmmsg for echoapp's UDP ports.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__mmsg(void)
{
    PyObject *made = PyModule_Create(&module);
    if (made != NULL && PyModule_AddIntConstant(made, "MAX_BATCH", MAX_BATCH) < 0) {
        Py_DECREF(made);
        return NULL;
    }
    return made;
}
