/* Load generator for bench/tcp.py: epoll, non-blocking, TCP_NODELAY, one thread.
 *
 *   loadgen pingpong HOST PORT CONNS SECONDS MSG_BYTES   each connection keeps one message in flight
 *   loadgen bulk     HOST PORT CONNS SECONDS CHUNK_BYTES each connection writes as fast as it can
 *   loadgen connrate HOST PORT CONCURRENCY SECONDS MSG_BYTES  connect, one round trip, close
 *
 * Prints one line: "<operations> <bytes> <seconds>" (operations = round trips, or connections for
 * connrate; bytes moved by the client).  Exit status 1 on setup errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { PINGPONG, BULK, CONNRATE };
typedef struct { int fd; size_t got; int connected; } conn_t;

static struct sockaddr_in addr;
static int mode, msg_bytes, ep;
static char *buf;
static long long ops, moved;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int open_conn(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) { close(fd); return -1; }
    c->fd = fd; c->got = 0; c->connected = 0;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static void send_msg(conn_t *c) {
    ssize_t n = write(c->fd, buf, msg_bytes);
    if (n > 0) moved += n;
}

int main(int argc, char **argv) {
    if (argc != 7) { fprintf(stderr, "usage: loadgen pingpong|bulk|connrate HOST PORT CONNS SECONDS BYTES\n"); return 1; }
    mode = !strcmp(argv[1], "pingpong") ? PINGPONG : !strcmp(argv[1], "bulk") ? BULK : CONNRATE;
    int conns = atoi(argv[4]);
    double seconds = atof(argv[5]);
    msg_bytes = atoi(argv[6]);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(atoi(argv[3]));
    inet_pton(AF_INET, argv[2], &addr.sin_addr);
    buf = malloc(msg_bytes > 65536 ? msg_bytes : 65536);
    memset(buf, 'x', msg_bytes > 65536 ? msg_bytes : 65536);
    ep = epoll_create1(0);
    conn_t *cs = calloc(conns, sizeof *cs);
    for (int i = 0; i < conns; i++)
        if (open_conn(&cs[i]) < 0) { perror("connect"); return 1; }
    struct epoll_event evs[512];
    char rbuf[65536];
    double start = now(), end = start + seconds;
    while (now() < end) {
        int n = epoll_wait(ep, evs, 512, 100);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLERR | EPOLLHUP) && !(evs[i].events & EPOLLIN)) {
                if (mode == CONNRATE) { epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); open_conn(c); continue; }
                fprintf(stderr, "connection failed\n"); return 1;
            }
            if ((evs[i].events & EPOLLOUT) && !c->connected) {
                c->connected = 1;
                struct epoll_event ev = { .events = mode == BULK ? EPOLLOUT : EPOLLIN, .data.ptr = c };
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                if (mode == BULK) continue;
                send_msg(c);
                continue;
            }
            if (mode == BULK && (evs[i].events & EPOLLOUT)) {
                for (;;) {
                    ssize_t w = write(c->fd, buf, msg_bytes);
                    if (w <= 0) break;
                    moved += w;
                }
                continue;
            }
            if (evs[i].events & EPOLLIN) {
                ssize_t r = read(c->fd, rbuf, sizeof rbuf);
                if (r <= 0) {
                    if (mode == CONNRATE) { epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); open_conn(c); continue; }
                    fprintf(stderr, "connection closed by peer\n"); return 1;
                }
                c->got += r;
                if (c->got >= (size_t)msg_bytes) {
                    c->got -= msg_bytes;
                    ops++;
                    if (mode == PINGPONG) send_msg(c);
                    else { epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); open_conn(c); }
                }
            }
        }
    }
    double took = now() - start;
    if (mode == BULK) ops = moved;
    printf("%lld %lld %.6f\n", ops, moved, took);
    return 0;
}
