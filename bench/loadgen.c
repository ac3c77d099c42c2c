/* Load generator for `python -m bench tcp`: one thread, epoll, non-blocking sockets, TCP_NODELAY.
 *
 *   loadgen MODE HOST PORT CONNS WARMUP_S MEASURE_S BYTES
 *
 *   pingpong  CONNS connections, each keeps exactly one BYTES-long message in flight (to an echo server)
 *   framed    pingpong whose message is one frame: a 4-byte big-endian length (BYTES - 4), then 'x's
 *   upload    CONNS connections write BYTES-long chunks as fast as they are accepted (to a sink)
 *   download  CONNS connections read as fast as they can (from a source)
 *   connrate  CONNS loops of: connect, send BYTES, read them back and the server's close, close
 *             (to a server that echoes BYTES and closes, so that no TIME_WAIT pins a client port)
 *
 * Protocol on stdout, one line each, flushed:
 *   "measure"                              the warm-up is over and the measured window starts
 *   "result OPS BYTES SECONDS ERRORS"      the window is over; OPS = round trips (pingpong),
 *                                          completed connections (connrate) or bytes (upload, download);
 *                                          BYTES = payload bytes moved in the window; ERRORS = failed
 *                                          connections (connrate only; any failure elsewhere is fatal)
 * When stdin is a pipe, the connections then stay open until stdin closes, so that the caller can
 * read the proxy's CPU time for exactly the window, without connection teardown in it.
 * Exit status 1 when a connection fails outside connrate, 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { PINGPONG, UPLOAD, DOWNLOAD, CONNRATE };
typedef struct { int fd; size_t got; int connected; } conn_t;

static struct sockaddr_in addr;
static int mode, ep;
static size_t msg_bytes;
static char *wbuf;
static char rbuf[262144];
static long long ops, moved, errors;
static double begin, end;  /* the measured window */
static int counting, over;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void say(const char *line);

/* Opens and closes the window; 1 once it is over. */
static int tick(void) {
    double t = now();
    if (!counting && !over && t >= begin) { counting = 1; say("measure\n"); }
    if (t >= end) { counting = 0; over = 1; }
    return over;
}

static void say(const char *line) {
    size_t n = strlen(line);
    if (write(1, line, n) != (ssize_t)n) exit(1);
}

/* errno 0: nothing more to say (the peer closed the connection) */
static void fail(const char *what) {
    if (errno) fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    else fprintf(stderr, "loadgen: %s\n", what);
    exit(1);
}

static int open_conn(conn_t *c) {
    c->fd = -1; c->got = 0; c->connected = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) { close(fd); return -1; }
    c->fd = fd;
    /* EPOLLOUT reports the end of the non-blocking connect */
    struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static void close_conn(conn_t *c) {
    close(c->fd);  /* closing removes it from the epoll set */
    c->fd = -1;
}

/* connrate: a failed connection is counted and replaced; elsewhere it ends the run. */
static void lost(conn_t *c, const char *what) {
    if (mode != CONNRATE) fail(what);
    if (counting) errors++;
    close_conn(c);
}

static void send_msg(conn_t *c) {
    ssize_t w = write(c->fd, wbuf, msg_bytes);
    /* a small message into an empty socket buffer is never short */
    if (w != (ssize_t)msg_bytes) {
        if (w >= 0) errno = 0;
        lost(c, w >= 0 ? "short write" : "write");
    }
    else if (counting) moved += w;
}

static void on_connected(conn_t *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) { errno = err; lost(c, "connect"); return; }
    c->connected = 1;
    struct epoll_event ev = { .events = mode == UPLOAD ? EPOLLOUT : EPOLLIN, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    if (mode == PINGPONG || mode == CONNRATE) send_msg(c);
}

/* Bulk loops run until the socket is full (EAGAIN) so that, sharing one CPU with the backend, the load
 * generator sleeps as soon as it cannot make progress.  When the peer runs on another CPU it may never
 * fill, so the clock is looked at every CHECK_EVERY calls and the loop ends with the window. */
enum { CHECK_EVERY = 16 };

static void on_writable(conn_t *c) {
    for (unsigned i = 1;; i++) {
        if (i % CHECK_EVERY == 0 && tick()) return;
        ssize_t w = write(c->fd, wbuf, msg_bytes);
        if (w < 0 && errno == EAGAIN) return;
        if (w <= 0) { lost(c, "write"); return; }
        if (counting) { moved += w; ops += w; }
    }
}

static void on_readable(conn_t *c) {
    for (unsigned i = 1;; i++) {
        if (i % CHECK_EVERY == 0 && tick()) return;
        ssize_t r = read(c->fd, rbuf, sizeof rbuf);
        if (r < 0 && errno == EAGAIN) return;
        if (r == 0 && mode == CONNRATE && c->got >= msg_bytes) {  /* echoed, then closed by the server */
            if (counting) ops++;
            close_conn(c);  /* reopened by the main loop */
            return;
        }
        if (r <= 0) { if (r == 0) errno = 0; lost(c, r == 0 ? "peer closed the connection" : "read"); return; }
        if (mode == DOWNLOAD) {
            if (counting) { moved += r; ops += r; }
            if ((size_t)r < sizeof rbuf) return;
            continue;
        }
        if (counting) moved += r;
        c->got += (size_t)r;
        if (c->got < msg_bytes) return;
        if (mode == CONNRATE) continue;  /* wait for the server to close: see echo.c, mode "once" */
        c->got -= msg_bytes;
        if (counting) ops++;
        send_msg(c);
        return;
    }
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: loadgen pingpong|upload|download|connrate HOST PORT CONNS WARMUP_S MEASURE_S BYTES\n");
        return 2;
    }
    const char *m = argv[1];
    int framed = !strcmp(m, "framed");  /* pingpong whose message is one length-prefixed frame */
    if (framed) m = "pingpong";
    mode = !strcmp(m, "pingpong") ? PINGPONG : !strcmp(m, "upload") ? UPLOAD
         : !strcmp(m, "download") ? DOWNLOAD : !strcmp(m, "connrate") ? CONNRATE : -1;
    int conns = atoi(argv[4]);
    double warmup_s = atof(argv[5]), measure_s = atof(argv[6]);
    msg_bytes = (size_t)atol(argv[7]);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(atoi(argv[3]));
    if (mode < 0 || conns < 1 || measure_s <= 0 || warmup_s < 0 || msg_bytes < 1
        || inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);  /* a peer that goes away is an EPIPE to handle, not a fatal signal */
    wbuf = malloc(msg_bytes);
    memset(wbuf, 'x', msg_bytes);
    if (framed) {
        if (msg_bytes < 5) { fprintf(stderr, "loadgen: framed messages need at least 5 bytes\n"); return 2; }
        uint32_t body = htonl((uint32_t)(msg_bytes - 4));  /* 4-byte big-endian length, then the body */
        memcpy(wbuf, &body, 4);
    }
    ep = epoll_create1(0);
    conn_t *cs = calloc((size_t)conns, sizeof *cs);
    for (int i = 0; i < conns; i++)
        if (open_conn(&cs[i]) < 0 && mode != CONNRATE) fail("connect");
    struct epoll_event evs[512];
    begin = now() + warmup_s;
    end = begin + measure_s;
    for (;;) {
        if (tick()) break;
        int reopen = 0;
        if (mode == CONNRATE)
            for (int i = 0; i < conns; i++)
                if (cs[i].fd < 0 && open_conn(&cs[i]) < 0) { if (counting) errors++; reopen = 1; }
        double t = now(), until = counting ? end : begin;
        int wait_ms = reopen ? 1 : (int)((until - t) * 1000) + 1;
        int n = epoll_wait(ep, evs, 512, wait_ms < 50 ? wait_ms : 50);
        if (n < 0 && errno != EINTR) fail("epoll_wait");
        /* An event that arrives after the window closed is not counted. */
        if (tick()) break;
        for (int i = 0; i < n && !over; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->fd < 0) continue;  /* closed earlier in this batch */
            unsigned e = evs[i].events;
            if (!c->connected) { on_connected(c); continue; }
            if ((e & (EPOLLERR | EPOLLHUP)) && !(e & EPOLLIN)) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                errno = err;
                lost(c, "connection failed");
                continue;
            }
            if (e & EPOLLIN) on_readable(c);
            else if (e & EPOLLOUT) on_writable(c);
        }
    }
    char line[160];
    snprintf(line, sizeof line, "result %lld %lld %.6f %lld\n", ops, moved, measure_s, errors);
    say(line);
    struct stat st;
    if (fstat(0, &st) == 0 && S_ISFIFO(st.st_mode)) {
        char b[64];
        while (read(0, b, sizeof b) > 0) {}
    }
    return 0;
}
