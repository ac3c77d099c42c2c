/* Backend for `python -m bench tcp`: one thread, epoll, non-blocking sockets, TCP_NODELAY.
 *
 *   echo MODE PORT [BYTES]     MODE is one of
 *     echo    write back every byte read (ping-pong)
 *     once    write back BYTES bytes (default 64), then close (connection rate)
 *     sink    read and discard (bulk upload)
 *     source  write 64 KiB chunks as fast as the peer reads, discard anything read (bulk download)
 *
 * PORT 0 takes a free port.  Prints "ready PORT" on stdout once listening, then serves until killed.
 * Cheap on purpose: it shares one core with the load generator, so it must never be the bottleneck
 * of a proxy that has a core to itself.
 *
 * Why "once" closes first: the side that closes first keeps the connection in TIME_WAIT for 60 s.
 * If that were the client or the proxy, every connection would pin an ephemeral port of a single
 * source address, and the kernel recycles those at only about 14 000 per second on loopback; the
 * connection rate would then measure that, not the proxy.  A server's TIME_WAIT pins no port.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { ECHO, ONCE, SINK, SOURCE };
enum { CHUNK = 65536, MAX_FDS = 1 << 17 };

/* Per connection: echo bytes the peer is not yet reading (reading stops while any are pending, so
 * this never grows beyond one read), and how many bytes were echoed in all. */
typedef struct { char *buf; size_t len, off, echoed; } conn_t;

static int mode, ep;
static size_t once_bytes = 64;
static conn_t *conns;
static char buf[262144];

static void watch(int fd, unsigned events, int op) {
    struct epoll_event ev = { .events = events, .data.fd = fd };
    epoll_ctl(ep, op, fd, &ev);
}

static void drop(int fd) {
    free(conns[fd].buf);
    memset(&conns[fd], 0, sizeof conns[fd]);
    close(fd);
}

/* Write what is pending; 1 when all of it is out, 0 when the socket is full, -1 on error. */
static int flush_pending(int fd) {
    conn_t *c = &conns[fd];
    while (c->off < c->len) {
        ssize_t w = write(fd, c->buf + c->off, c->len - c->off);
        if (w < 0) return errno == EAGAIN ? 0 : -1;
        c->off += (size_t)w;
    }
    c->len = c->off = 0;
    return 1;
}

/* A loop over one socket normally ends with EAGAIN, so that sharing one CPU with the load generator
 * the server sleeps as soon as it cannot make progress.  The bound is only for a peer on another CPU
 * that keeps the socket ready forever: the other connections still get their turn. */
enum { BURST = 256 };

/* 0 when the connection was closed */
static int on_readable(int fd) {
    conn_t *c = &conns[fd];
    for (int i = 0; i < BURST; i++) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EAGAIN)) { drop(fd); return 0; }
        if (r < 0) return 1;
        if (mode == SINK || mode == SOURCE) {
            if ((size_t)r < sizeof buf) return 1;
            continue;
        }
        ssize_t off = 0;
        while (off < r) {
            ssize_t w = write(fd, buf + off, (size_t)(r - off));
            if (w < 0 && errno == EAGAIN) break;
            if (w < 0) { drop(fd); return 0; }
            off += w;
        }
        c->echoed += (size_t)r;
        if (off < r) {  /* peer is slow: keep the rest, stop reading until it is written */
            c->buf = realloc(c->buf, (size_t)(r - off));
            memcpy(c->buf, buf + off, (size_t)(r - off));
            c->len = (size_t)(r - off);
            c->off = 0;
            watch(fd, EPOLLOUT, EPOLL_CTL_MOD);
            return 1;
        }
        if (mode == ONCE && c->echoed >= once_bytes) { drop(fd); return 0; }
        if ((size_t)r < sizeof buf) return 1;
    }
    return 1;
}

static void on_writable(int fd) {
    if (mode == SOURCE) {
        for (int i = 0; i < BURST; i++) {
            ssize_t w = write(fd, buf, CHUNK);
            if (w < 0 && errno == EAGAIN) return;
            if (w <= 0) { drop(fd); return; }
        }
        return;
    }
    int done = flush_pending(fd);
    if (done < 0 || (done && mode == ONCE && conns[fd].echoed >= once_bytes)) drop(fd);
    else if (done) watch(fd, EPOLLIN, EPOLL_CTL_MOD);
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) { fprintf(stderr, "usage: echo echo|once|sink|source PORT [BYTES]\n"); return 2; }
    const char *m = argv[1];
    mode = !strcmp(m, "echo") ? ECHO : !strcmp(m, "once") ? ONCE : !strcmp(m, "sink") ? SINK
         : !strcmp(m, "source") ? SOURCE : -1;
    if (argc == 4) once_bytes = (size_t)atol(argv[3]);
    if (mode < 0 || once_bytes < 1) { fprintf(stderr, "echo: bad arguments\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);  /* a peer that goes away is an EPIPE to handle, not a fatal signal */
    conns = calloc(MAX_FDS, sizeof *conns);
    memset(buf, 'y', sizeof buf);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])), .sin_addr.s_addr = htonl(0x7f000001) };
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0) { perror("listen"); return 1; }
    socklen_t len = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &len);
    printf("ready %d\n", ntohs(a.sin_port));
    fflush(stdout);
    ep = epoll_create1(0);
    watch(ls, EPOLLIN, EPOLL_CTL_ADD);
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAX_FDS) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    watch(c, mode == SOURCE ? EPOLLIN | EPOLLOUT : EPOLLIN, EPOLL_CTL_ADD);
                }
                continue;
            }
            unsigned e = evs[i].events;
            if (e & (EPOLLERR | EPOLLHUP) && !(e & EPOLLIN)) { drop(fd); continue; }
            if ((e & EPOLLIN) && !on_readable(fd)) continue;
            if (e & EPOLLOUT) on_writable(fd);
        }
    }
}
