/*
 * echoapp benchmark load generator: N connections doing request/response
 * (or pipelined) rounds of LF-terminated lines against a greeter that
 * answers "Hello, <line without LF>!\n" and sends one banner line first.
 *
 *   loadgen HOST PORT CONNECTIONS MSGSIZE DEPTH WARMUP_S DURATION_S [udp|echo|udpecho]
 *
 * With "echo", the server sends no banner and answers each message with
 * the same bytes (RFC 862).
 * With "udp", CONNECTIONS is the number of UDP sockets, each with one
 * datagram in flight; a reply that has not come within 200 ms is counted as
 * lost and the next datagram is sent.  With "udpecho", the same against a
 * UDP echo (each reply is the datagram itself), as through a UDP proxy.
 *
 * Prints "warm" when the warm-up ends (the harness samples the server's
 * CPU then), then one line:
 *   requests=N seconds=S p50_us=X p99_us=Y errors=E lost=L
 * Written in C so that the client is never the bottleneck.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUCKETS 100000 /* 1 us buckets up to 100 ms; the last one holds the rest */

typedef struct {
    int fd;
    int banner_done;
    long pending;      /* bytes of replies still expected */
    int in_flight;     /* requests sent, not yet answered */
    double sent_at[64];
    int head, tail;
} conn_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t histogram[BUCKETS];
static char *message;
static long msgsize, replysize;

static int send_one(conn_t *c) {
    long off = 0;
    while (off < msgsize) {
        ssize_t n = send(c->fd, message + off, msgsize - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) continue; /* tiny messages: the kernel buffer drains at once */
            return -1;
        }
        off += n;
    }
    c->sent_at[c->tail] = now();
    c->tail = (c->tail + 1) % 64;
    c->in_flight++;
    c->pending += replysize;
    return 0;
}

static double percentile(uint64_t total, double p) {
    uint64_t want = (uint64_t)(total * p), seen = 0;
    for (int i = 0; i < BUCKETS; i++) {
        seen += histogram[i];
        if (seen > want) return i;
    }
    return BUCKETS;
}

int main(int argc, char **argv) {
    if (argc != 8 && argc != 9) {
        fprintf(stderr, "usage: loadgen HOST PORT CONNECTIONS MSGSIZE DEPTH WARMUP DURATION [udp|echo|udpecho]\n");
        return 2;
    }
    int udpecho = argc == 9 && strcmp(argv[8], "udpecho") == 0;
    int udp = udpecho || (argc == 9 && strcmp(argv[8], "udp") == 0);
    int echo = udpecho || (argc == 9 && strcmp(argv[8], "echo") == 0);
    const char *host = argv[1];
    int port = atoi(argv[2]), nconn = atoi(argv[3]), depth = atoi(argv[5]);
    double warmup = atof(argv[6]), duration = atof(argv[7]);
    msgsize = atol(argv[4]);
    replysize = echo ? msgsize : msgsize - 1 + 9; /* "Hello, " + line + "!\n" */
    if (udp) depth = 1;
    if (depth < 1 || depth > 64) depth = 1;
    message = malloc(msgsize);
    memset(message, 'x', msgsize);
    message[msgsize - 1] = '\n';

    int ep = epoll_create1(0);
    conn_t *conns = calloc(nconn, sizeof(conn_t));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    for (int i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
        int one = 1;
        if (!udp) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            return 1;
        }
        fcntl(fd, F_SETFL, O_NONBLOCK);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        if (udp || echo) { /* no banner: start at once */
            conns[i].banner_done = 1;
            for (int d = 0; d < depth; d++)
                if (send_one(&conns[i]) < 0) return 1;
        }
    }

    static char buf[1 << 16];
    struct epoll_event events[1024];
    double start = now(), measure_from = start + warmup, end = measure_from + duration;
    int warm = 0;
    uint64_t requests = 0, errors = 0, lost = 0;
    while (1) {
        double t = now();
        if (!warm && t >= measure_from) {
            warm = 1;
            memset(histogram, 0, sizeof histogram);
            requests = 0;
            printf("warm\n");
            fflush(stdout);
            measure_from = t;
        }
        if (t >= end) break;
        if (udp) /* a datagram unanswered for 200 ms is lost: send the next one */
            for (int i = 0; i < nconn; i++)
                if (conns[i].in_flight && t - conns[i].sent_at[conns[i].head] > 0.2) {
                    conns[i].head = (conns[i].head + 1) % 64;
                    conns[i].in_flight--;
                    conns[i].pending = 0;
                    lost++;
                    if (send_one(&conns[i]) < 0) errors++;
                }
        int n = epoll_wait(ep, events, 1024, udp ? 20 : 50);
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            ssize_t got = recv(c->fd, buf, sizeof buf, 0);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            char *p = buf;
            if (!c->banner_done) {
                char *lf = memchr(buf, '\n', got);
                if (!lf) continue;
                c->banner_done = 1;
                p = lf + 1;
                got -= p - buf;
                for (int d = 0; d < depth; d++)
                    if (send_one(c) < 0) errors++;
            }
            c->pending -= got;
            /* every completed reply: record it and send the next request */
            while (c->in_flight > 0 && c->pending <= (long)(c->in_flight - 1) * replysize) {
                double latency = now() - c->sent_at[c->head];
                c->head = (c->head + 1) % 64;
                c->in_flight--;
                long us = (long)(latency * 1e6);
                histogram[us < BUCKETS ? us : BUCKETS - 1]++;
                requests++;
                if (send_one(c) < 0) errors++;
            }
        }
    }
    double seconds = now() - measure_from;
    printf("requests=%lu seconds=%.3f p50_us=%.0f p99_us=%.0f errors=%lu lost=%lu\n", (unsigned long)requests,
           seconds, percentile(requests, 0.50), percentile(requests, 0.99), (unsigned long)errors, (unsigned long)lost);
    return 0;
}
