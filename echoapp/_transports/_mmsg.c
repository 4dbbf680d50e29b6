/*
 * echoapp's optional UDP accelerator: a socket's ready datagrams read, and
 * replies sent, a batch per system call (Linux's recvmmsg and sendmmsg),
 * which the standard library's socket module does not offer.
 *
 * The contract is echoapp/_transports/datagram_batches.py's, where the same
 * two calls are written in Python on recvfrom/sendto (the fallback when
 * this is not built).  Both calls pass MSG_DONTWAIT: they never block, so
 * they keep the GIL (which also guards the one receive buffer below).
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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
        return name == NULL ? NULL : Py_BuildValue("(Ni)", name, ntohs(in->sin_port));
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

static PyObject *
recv_batch(PyObject *self, PyObject *args)
{
    int fd, count, received;
    Py_ssize_t size;
    struct mmsghdr headers[MAX_BATCH];
    struct iovec vectors[MAX_BATCH];
    struct sockaddr_storage sources[MAX_BATCH];

    if (!PyArg_ParseTuple(args, "iin:recv_batch", &fd, &count, &size))
        return NULL;
    if (count < 1 || count > MAX_BATCH || size < 1) {
        PyErr_Format(PyExc_ValueError, "recv_batch takes 1 to %d datagrams of 1 byte or more", MAX_BATCH);
        return NULL;
    }
    if (size > slot) { /* grown once: untouched pages cost no memory */
        char *grown = PyMem_RawRealloc(slab, (size_t)size * MAX_BATCH);
        if (grown == NULL)
            return PyErr_NoMemory();
        slab = grown;
        slot = size;
    }
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
    PyObject *datagrams = PyList_New(received);
    if (datagrams == NULL)
        return NULL;
    for (int i = 0; i < received; i++) {
        PyObject *from = address(&sources[i]);
        if (from == NULL) {
            Py_DECREF(datagrams);
            return NULL;
        }
        Py_ssize_t length = headers[i].msg_len < (unsigned int)size ? (Py_ssize_t)headers[i].msg_len : size;
        PyObject *pair = Py_BuildValue("(y#N)", vectors[i].iov_base, length, from);
        if (pair == NULL) {
            Py_DECREF(datagrams);
            return NULL;
        }
        PyList_SET_ITEM(datagrams, i, pair);
    }
    return datagrams;
}

/*
 * The destination of one (data, address) pair, parsed as socket.sendto
 * would for a numeric host of the socket's family; 0 for anything else
 * (a name, a scoped host, a bad port, data not bytes), which the caller
 * then sends its own way.
 */
static int
destination(PyObject *item, int family, struct sockaddr_storage *to, socklen_t *length, struct iovec *data)
{
    PyObject *addr, *host;
    const char *text;
    long port;
    unsigned long flowinfo = 0, scope_id = 0;
    Py_ssize_t parts;

    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyBytes_CheckExact(PyTuple_GET_ITEM(item, 0)))
        return 0;
    addr = PyTuple_GET_ITEM(item, 1);
    if (!PyTuple_Check(addr) || (parts = PyTuple_GET_SIZE(addr)) < 2 || parts > 4 || (family == AF_INET && parts != 2))
        return 0;
    host = PyTuple_GET_ITEM(addr, 0);
    if (!PyUnicode_Check(host) || !PyLong_CheckExact(PyTuple_GET_ITEM(addr, 1)))
        return 0;
    text = PyUnicode_AsUTF8(host);
    port = PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
    if (parts > 2)
        flowinfo = PyLong_Check(PyTuple_GET_ITEM(addr, 2)) ? PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 2)) : ~0UL;
    if (parts > 3)
        scope_id = PyLong_Check(PyTuple_GET_ITEM(addr, 3)) ? PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 3)) : ~0UL;
    if (text == NULL || PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (port < 0 || port > 65535 || flowinfo > 0xfffff || scope_id > 0xffffffffUL)
        return 0;
    memset(to, 0, sizeof(*to));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)to;
        if (inet_pton(AF_INET, text, &in->sin_addr) != 1)
            return 0;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *length = sizeof(*in);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)to;
        if (inet_pton(AF_INET6, text, &in6->sin6_addr) != 1)
            return 0;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        in6->sin6_flowinfo = htonl((uint32_t)flowinfo);
        in6->sin6_scope_id = (uint32_t)scope_id;
        *length = sizeof(*in6);
    }
    data->iov_base = PyBytes_AS_STRING(PyTuple_GET_ITEM(item, 0));
    data->iov_len = (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 0));
    return 1;
}

static PyObject *
send_batch(PyObject *self, PyObject *args)
{
    int fd, family;
    Py_ssize_t start, total;
    PyObject *datagrams;
    struct mmsghdr headers[MAX_BATCH];
    struct iovec vectors[MAX_BATCH];
    struct sockaddr_storage targets[MAX_BATCH];

    if (!PyArg_ParseTuple(args, "iiO!n:send_batch", &fd, &family, &PyList_Type, &datagrams, &start))
        return NULL;
    if (family != AF_INET && family != AF_INET6) {
        PyErr_SetString(PyExc_ValueError, "send_batch sends over AF_INET or AF_INET6 sockets");
        return NULL;
    }
    total = PyList_GET_SIZE(datagrams);
    while (start >= 0 && start < total) {
        int ready = 0, sent;
        memset(headers, 0, sizeof(headers));
        /* The list's items stay alive: nothing here runs Python code. */
        while (ready < MAX_BATCH && start + ready < total) {
            socklen_t length;
            if (!destination(PyList_GET_ITEM(datagrams, start + ready), family, &targets[ready], &length,
                             &vectors[ready]))
                break;
            headers[ready].msg_hdr.msg_name = &targets[ready];
            headers[ready].msg_hdr.msg_namelen = length;
            headers[ready].msg_hdr.msg_iov = &vectors[ready];
            headers[ready].msg_hdr.msg_iovlen = 1;
            ready++;
        }
        if (ready == 0)
            break;
        do {
            sent = sendmmsg(fd, headers, (unsigned int)ready, MSG_DONTWAIT);
        } while (sent < 0 && errno == EINTR);
        if (sent <= 0)
            break; /* the caller's own send meets the error, and handles it */
        start += sent;
        if (sent < ready)
            break;
    }
    return PyLong_FromSsize_t(start);
}

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS,
     "recv_batch(fd, max_count, max_size) -> [(data, address), ...]: what is ready, up to max_count "
     "(at most 32) datagrams of max_size bytes; [] for nothing; OSError for an error before any."},
    {"send_batch", send_batch, METH_VARARGS,
     "send_batch(fd, family, [(data, address), ...], start) -> the index of the first datagram not "
     "sent: the list's end, or the one that failed or is not a numeric address of the family."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_mmsg",
    .m_doc = "recvmmsg and sendmmsg for echoapp's UDP ports.",
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
