/*
 * echoapp's optional UDP accelerator: a socket's ready datagrams read in
 * one system call (Linux's recvmmsg), which the standard library's socket
 * module does not offer.
 *
 * The contract is echoapp/_transports/datagram_batches.py's, where the same
 * call is written in Python on recvfrom (the fallback when this is not
 * built).  It passes MSG_DONTWAIT: it never blocks, so it keeps the GIL
 * (which also guards the one receive buffer below).
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

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS,
     "recv_batch(fd, max_count, max_size) -> [(data, address), ...]: what is ready, up to max_count "
     "(at most 32) datagrams of max_size bytes; [] for nothing; OSError for an error before any."},
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
