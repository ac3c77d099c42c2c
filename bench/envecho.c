/* Envelope-dialect echo server for `python -m bench frames`: answers every `req` with a `res` that
 * carries the same body, so that a frames listener can be measured against HAProxy relaying to
 * bench/echo.c, with the backend costing next to nothing in both cases.
 *
 *   envecho PORT        (0: any free port; prints "ready PORT" once listening)
 *
 * It understands exactly what the proxy sends it in that benchmark (docs/protocol.md): `attach`
 * (answered `attached` with no partitions), `req` (answered `res`), `restore` (`restored`), `fence`
 * (`fenced`), `release` and `ack` (no answer).  Sessions hold no state.  One thread, epoll.
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
#include <unistd.h>

typedef struct {
    int fd;
    unsigned char *in;
    size_t in_len, in_cap;
    unsigned char *out;
    size_t out_len, out_cap;
    uint64_t last_seq;
    int want_out;
} conn_t;

static int ep;

static void die(const char *what) { perror(what); exit(1); }

static void *grow(void *p, size_t *cap, size_t need) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    p = realloc(p, c);
    if (!p) die("realloc");
    *cap = c;
    return p;
}

/* -- msgpack, the little that is needed ------------------------------------------------------ */

static uint32_t be16(const unsigned char *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* Size of the value at p (within end), or 0 if malformed. */
static size_t skip(const unsigned char *p, const unsigned char *end, int depth) {
    if (p >= end || depth > 32) return 0;
    unsigned c = p[0];
    size_t n, used, i;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) return 1;
    if ((c & 0xe0) == 0xa0) return 1 + (c & 0x1f);
    if ((c & 0xf0) == 0x80 || (c & 0xf0) == 0x90) {
        n = (c & 0x0f) * ((c & 0xf0) == 0x80 ? 2 : 1);
        used = 1;
        for (i = 0; i < n; i++) {
            size_t s = skip(p + used, end, depth + 1);
            if (!s) return 0;
            used += s;
        }
        return used;
    }
    switch (c) {
    case 0xc4: case 0xd9: return end - p >= 2 ? 2 + p[1] : 0;
    case 0xc5: case 0xda: return end - p >= 3 ? 3 + be16(p + 1) : 0;
    case 0xc6: case 0xdb: return end - p >= 5 ? 5 + be32(p + 1) : 0;
    case 0xcc: case 0xd0: return 2;
    case 0xcd: case 0xd1: return 3;
    case 0xce: case 0xd2: case 0xca: return 5;
    case 0xcf: case 0xd3: case 0xcb: return 9;
    case 0xdc: case 0xde: {
        if (end - p < 3) return 0;
        n = be16(p + 1) * (c == 0xde ? 2 : 1);
        used = 3;
        for (i = 0; i < n; i++) {
            size_t s = skip(p + used, end, depth + 1);
            if (!s) return 0;
            used += s;
        }
        return used;
    }
    }
    return 0;
}

static uint64_t read_uint(const unsigned char *p) {
    unsigned c = p[0];
    if (c <= 0x7f) return c;
    if (c == 0xcc) return p[1];
    if (c == 0xcd) return be16(p + 1);
    if (c == 0xce) return be32(p + 1);
    if (c == 0xcf) return (uint64_t)be32(p + 1) << 32 | be32(p + 5);
    return 0;
}

/* Body of a bin value: pointer and length. */
static const unsigned char *read_bin(const unsigned char *p, size_t *len) {
    if (p[0] == 0xc4) { *len = p[1]; return p + 2; }
    if (p[0] == 0xc5) { *len = be16(p + 1); return p + 3; }
    if (p[0] == 0xc6) { *len = be32(p + 1); return p + 5; }
    *len = 0;
    return p;
}

typedef struct { unsigned char *buf; size_t len; } w_t;

static void put(w_t *w, const void *p, size_t n) { memcpy(w->buf + w->len, p, n); w->len += n; }
static void put_byte(w_t *w, unsigned char b) { w->buf[w->len++] = b; }
static void put_str(w_t *w, const char *s) { size_t n = strlen(s); put_byte(w, 0xa0 | (unsigned char)n); put(w, s, n); }
static void put_uint(w_t *w, uint64_t v) {
    if (v <= 0x7f) { put_byte(w, (unsigned char)v); return; }
    if (v <= 0xff) { put_byte(w, 0xcc); put_byte(w, (unsigned char)v); return; }
    if (v <= 0xffff) { put_byte(w, 0xcd); put_byte(w, v >> 8); put_byte(w, v & 0xff); return; }
    if (v <= 0xffffffffu) { put_byte(w, 0xce); uint32_t b = htonl((uint32_t)v); put(w, &b, 4); return; }
    put_byte(w, 0xcf);
    uint32_t hi = htonl((uint32_t)(v >> 32)), lo = htonl((uint32_t)v);
    put(w, &hi, 4);
    put(w, &lo, 4);
}
static void put_bin(w_t *w, const unsigned char *p, size_t n) {
    if (n <= 0xff) { put_byte(w, 0xc4); put_byte(w, (unsigned char)n); }
    else if (n <= 0xffff) { put_byte(w, 0xc5); put_byte(w, n >> 8); put_byte(w, n & 0xff); }
    else { put_byte(w, 0xc6); uint32_t b = htonl((uint32_t)n); put(w, &b, 4); }
    put(w, p, n);
}

/* -- connections -------------------------------------------------------------------------------- */

static void flush_out(conn_t *c) {
    while (c->out_len) {
        ssize_t n = write(c->fd, c->out, c->out_len);
        if (n < 0) {
            if (errno == EAGAIN) break;
            return;
        }
        memmove(c->out, c->out + n, c->out_len - n);
        c->out_len -= n;
    }
    int want = c->out_len != 0;
    if (want != c->want_out) {
        c->want_out = want;
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void close_conn(conn_t *c) {
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* Handles one envelope; returns 0 to close the connection. */
static int envelope(conn_t *c, const unsigned char *p, size_t len) {
    const unsigned char *end = p + len, *t = NULL, *sid = NULL, *body = NULL;
    size_t t_len = 0, sid_len = 0, body_len = 0, n;
    uint64_t seq = 0, epoch = 0;
    unsigned h = p[0];
    if ((h & 0xf0) == 0x80) { n = h & 0x0f; p += 1; }
    else if (h == 0xde && len >= 3) { n = be16(p + 1); p += 3; }
    else return 0;
    for (size_t i = 0; i < n; i++) {
        if (p >= end || (p[0] & 0xe0) != 0xa0) return 0;
        size_t klen = p[0] & 0x1f;
        const unsigned char *k = p + 1;
        p += 1 + klen;
        size_t vs = skip(p, end, 0);
        if (!vs || p + vs > end) return 0;
        if (klen == 1 && k[0] == 't' && (p[0] & 0xe0) == 0xa0) { t = p + 1; t_len = p[0] & 0x1f; }
        else if (klen == 3 && !memcmp(k, "sid", 3)) { sid = p; sid_len = vs; }
        else if (klen == 3 && !memcmp(k, "seq", 3)) seq = read_uint(p);
        else if (klen == 5 && !memcmp(k, "epoch", 5)) epoch = read_uint(p);
        else if (klen == 4 && !memcmp(k, "body", 4)) body = read_bin(p, &body_len);
        p += vs;
    }
    if (!t) return 0;
    c->out = grow(c->out, &c->out_cap, c->out_len + body_len + sid_len + 64);
    w_t w = {c->out + c->out_len + 4, 0};
    if (t_len == 3 && !memcmp(t, "req", 3)) {
        put_byte(&w, 0x83);
        put_str(&w, "t"); put_str(&w, "res");
        put_str(&w, "seq"); put_uint(&w, seq);
        put_str(&w, "body"); put_bin(&w, body ? body : (const unsigned char *)"", body_len);
        c->last_seq = seq;
    } else if (t_len == 6 && !memcmp(t, "attach", 6)) {
        put_byte(&w, 0x84);
        put_str(&w, "t"); put_str(&w, "attached");
        put_str(&w, "sid"); put(&w, sid, sid_len);
        put_str(&w, "epoch"); put_uint(&w, epoch);
        put_str(&w, "digests"); put_byte(&w, 0x80);
    } else if (t_len == 7 && !memcmp(t, "restore", 7)) {
        put_byte(&w, 0x83);
        put_str(&w, "t"); put_str(&w, "restored");
        put_str(&w, "epoch"); put_uint(&w, epoch);
        put_str(&w, "digests"); put_byte(&w, 0x80);
    } else if (t_len == 5 && !memcmp(t, "fence", 5)) {
        put_byte(&w, 0x84);
        put_str(&w, "t"); put_str(&w, "fenced");
        put_str(&w, "epoch"); put_uint(&w, epoch);
        put_str(&w, "last_seq"); put_uint(&w, c->last_seq);
        put_str(&w, "deltas"); put_byte(&w, 0x80);
    } else {
        return 1;  /* release, ack: no answer */
    }
    uint32_t be = htonl((uint32_t)w.len);
    memcpy(c->out + c->out_len, &be, 4);
    c->out_len += 4 + w.len;
    return 1;
}

static void readable(conn_t *c) {
    for (;;) {
        c->in = grow(c->in, &c->in_cap, c->in_len + 65536);
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n == 0 || (n < 0 && errno != EAGAIN)) { close_conn(c); return; }
        if (n < 0) break;
        c->in_len += n;
    }
    size_t pos = 0;
    while (c->in_len - pos >= 4) {
        uint32_t flen = be32(c->in + pos);
        if (c->in_len - pos - 4 < flen) break;
        if (!envelope(c, c->in + pos + 4, flen)) { close_conn(c); return; }
        pos += 4 + flen;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
    flush_out(c);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: envecho PORT\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) die("listen");
    socklen_t al = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &al);
    printf("ready %d\n", ntohs(a.sin_port));
    fflush(stdout);
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn_t *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) flush_out(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readable(c);
        }
    }
}
