/*
 * The floor: a greeter (or, with "echo", an RFC 862 echo) in C on epoll,
 * nothing but the syscalls a server on one core must make per request.
 * What any Python server costs above this is its own.
 *
 *   epoll_server PORT [echo|udpecho]
 *
 * The greeter sends "Welcome!\r\n" and answers each LF-terminated line with
 * "Hello, <line>!\n" in one send per read; the echo sends back what it read;
 * "udpecho" is a UDP echo (RFC 862 over UDP: each datagram back to its
 * sender), a blocking recvfrom/sendto loop, the UDP proxy scenario's upstream.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define PARTIAL 65536

typedef struct {
    int fd;
    size_t held; /* bytes of a partial line */
    char line[PARTIAL];
} conn_t;

static int echo;

static void serve(conn_t *c) {
    static char in[65536], out[65536 * 2 + 64];
    ssize_t got = recv(c->fd, in, sizeof in, 0);
    if (got <= 0) {
        if (got < 0 && errno == EAGAIN) return;
        close(c->fd);
        free(c);
        return;
    }
    if (echo) {
        send(c->fd, in, got, MSG_NOSIGNAL);
        return;
    }
    size_t n = 0;
    for (ssize_t i = 0; i < got; i++) {
        if (in[i] != '\n') {
            if (c->held < PARTIAL) c->line[c->held++] = in[i];
            continue;
        }
        if (n + c->held + 9 > sizeof out) {
            send(c->fd, out, n, MSG_NOSIGNAL);
            n = 0;
        }
        memcpy(out + n, "Hello, ", 7);
        memcpy(out + n + 7, c->line, c->held);
        memcpy(out + n + 7 + c->held, "!\n", 2);
        n += c->held + 9;
        c->held = 0;
    }
    if (n) send(c->fd, out, n, MSG_NOSIGNAL);
}

static int udp_echo(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("bind");
        return 1;
    }
    static char in[65536];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t length = sizeof from;
        ssize_t got = recvfrom(fd, in, sizeof in, 0, (struct sockaddr *)&from, &length);
        if (got >= 0) sendto(fd, in, got, 0, (struct sockaddr *)&from, length);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: epoll_server PORT [echo|udpecho]\n");
        return 2;
    }
    if (argc > 2 && strcmp(argv[2], "udpecho") == 0) return udp_echo(atoi(argv[1]));
    echo = argc > 2 && strcmp(argv[2], "echo") == 0;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 4096) < 0) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    struct epoll_event events[1024];
    for (;;) {
        int n = epoll_wait(ep, events, 1024, -1);
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            if (c) {
                serve(c);
                continue;
            }
            int fd;
            while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                conn_t *new = calloc(1, sizeof *new);
                new->fd = fd;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                if (!echo) send(fd, "Welcome!\r\n", 10, MSG_NOSIGNAL);
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = new};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
            }
        }
    }
}
