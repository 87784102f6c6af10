/* sniload: TLS handshake-rate client that sends a different SNI name on every
 * connection, for measuring a proxy with many domains (scripts/bench-fleet).
 *
 *   sniload -p PORT -n NAMES [-k K] [-c CONC] [-d SECS] [-s SEED] [--check]
 *       Keeps CONC connections in flight for SECS seconds. Each one: TCP
 *       connect, a full TLS handshake (never resumed) with SNI = a name drawn
 *       uniformly from the first K lines of NAMES, close_notify, then read
 *       until the server closes. Prints one JSON line.
 *   sniload -p PORT -n NAMES [-k K] [-c CONC] --once
 *       Each of the first K names exactly once, in file order, CONC at a time
 *       (default 1): the latency of first (cold) handshakes, or of warm ones
 *       on a second pass.
 *
 *   --check  verify that the certificate served matches the name asked for
 *            (X509_check_host); a mismatch is counted, not fatal.
 *
 * The TLS library is the system OpenSSL; the client verifies nothing else,
 * so its own cost per handshake is one key exchange.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum phase { CONNECTING, HANDSHAKING, CLOSING };

struct conn {
    int fd;
    enum phase phase;
    SSL *ssl;
    const char *name;
    double started;
};

struct samples {
    double *v;
    size_t n, cap;
};

static SSL_CTX *ctx;
static int epfd, check;
static struct sockaddr_in server;
static char **names;
static size_t name_count;
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static long handshakes, errors, mismatches;
static struct samples latency;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t next_random(void) {   /* xorshift64* */
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dULL;
}

static void record(double seconds) {
    if (latency.n == latency.cap) {
        latency.cap = latency.cap ? latency.cap * 2 : 4096;
        latency.v = realloc(latency.v, latency.cap * sizeof *latency.v);
        if (!latency.v) { perror("realloc"); exit(1); }
    }
    latency.v[latency.n++] = seconds;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double p) {
    if (latency.n == 0) return 0;
    size_t i = (size_t)(p * (latency.n - 1) + 0.5);
    return latency.v[i] * 1000;
}

static void load_names(const char *path, size_t limit) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); exit(2); }
    size_t cap = 1024;
    names = malloc(cap * sizeof *names);
    char line[512];
    while (name_count < limit && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        if (name_count == cap) names = realloc(names, (cap *= 2) * sizeof *names);
        names[name_count++] = strdup(line);
    }
    fclose(f);
    if (name_count == 0) { fprintf(stderr, "sniload: no names in %s\n", path); exit(2); }
}

static void watch(struct conn *c, int op, unsigned events) {
    struct epoll_event e = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &e) < 0) { perror("epoll_ctl"); exit(1); }
}

static void begin(struct conn *c, const char *name) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) { perror("socket"); exit(1); }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->name = name;
    c->phase = CONNECTING;
    c->started = now();
    c->ssl = NULL;
    if (connect(c->fd, (struct sockaddr *)&server, sizeof server) < 0 && errno != EINPROGRESS) {
        perror("connect"); exit(1);
    }
    watch(c, EPOLL_CTL_ADD, EPOLLOUT);
}

static void finish(struct conn *c, int ok) {
    if (!ok) errors++;
    if (c->ssl) SSL_free(c->ssl);
    close(c->fd);   /* also removes it from the epoll set */
    c->fd = -1;
}

/* Drives one connection as far as it can go; returns 1 once it is closed. */
static int step(struct conn *c) {
    if (c->phase == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { finish(c, 0); return 1; }
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, c->name);
        SSL_set_connect_state(c->ssl);
        c->phase = HANDSHAKING;
    }
    if (c->phase == HANDSHAKING) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) { watch(c, EPOLL_CTL_MOD, EPOLLIN); return 0; }
            if (e == SSL_ERROR_WANT_WRITE) { watch(c, EPOLL_CTL_MOD, EPOLLOUT); return 0; }
            ERR_clear_error();
            finish(c, 0);
            return 1;
        }
        handshakes++;
        record(now() - c->started);
        if (check) {
            X509 *peer = SSL_get1_peer_certificate(c->ssl);
            if (!peer || X509_check_host(peer, c->name, 0, 0, NULL) != 1) mismatches++;
            X509_free(peer);
        }
        SSL_shutdown(c->ssl);
        c->phase = CLOSING;
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
        return 0;
    }
    /* CLOSING: drain (session tickets, the server's close_notify) until EOF. */
    char buf[4096];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n > 0) continue;
        if (n < 0 && errno == EAGAIN) return 0;
        finish(c, 1);
        return 1;
    }
}

static void usage(void) {
    fprintf(stderr, "usage: sniload -p PORT -n NAMES [-k K] [-c CONC] [-d SECS] [-s SEED] [--check] [--once]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int port = 0, conc = -1, once = 0;
    double seconds = 10;
    size_t limit = (size_t)-1;
    const char *names_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--check")) check = 1;
        else if (!strcmp(a, "--once")) once = 1;
        else if (!v) usage();
        else if (!strcmp(a, "-p")) port = atoi(v), i++;
        else if (!strcmp(a, "-n")) names_path = v, i++;
        else if (!strcmp(a, "-k")) limit = strtoul(v, NULL, 10), i++;
        else if (!strcmp(a, "-c")) conc = atoi(v), i++;
        else if (!strcmp(a, "-d")) seconds = atof(v), i++;
        else if (!strcmp(a, "-s")) rng ^= strtoull(v, NULL, 10) * 0x9e3779b97f4a7c15ULL, i++;
        else usage();
    }
    if (conc == -1) conc = once ? 1 : 32;
    if (!port || !names_path || conc < 1) usage();
    load_names(names_path, limit);
    if (once && (size_t)conc > name_count) conc = (int)name_count;

    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    server.sin_family = AF_INET;
    server.sin_port = htons(port);
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    epfd = epoll_create1(0);

    struct conn *conns = calloc(conc, sizeof *conns);
    size_t next_name = 0;
    double t0 = now(), deadline = t0 + seconds;
    int active = 0;
    for (int i = 0; i < conc; i++) {
        const char *name = once ? names[next_name++] : names[next_random() % name_count];
        begin(&conns[i], name);
        active++;
    }
    struct epoll_event events[256];
    while (active > 0) {
        int n = epoll_wait(epfd, events, 256, 1000);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); exit(1); }
        double t = now();
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!step(c)) continue;
            int more = once ? next_name < name_count : t < deadline;
            if (more) begin(c, once ? names[next_name++] : names[next_random() % name_count]);
            else active--;
        }
        if (!once && t > deadline + 5) break;   /* a stuck server: report what we have */
    }
    double elapsed = now() - t0;
    qsort(latency.v, latency.n, sizeof *latency.v, by_value);
    printf("{\"names\":%zu,\"concurrency\":%d,\"seconds\":%.3f,\"handshakes\":%ld,\"errors\":%ld,"
           "\"mismatches\":%ld,\"rate\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
           name_count, conc, elapsed, handshakes, errors, mismatches, handshakes / elapsed,
           percentile(0.5), percentile(0.99), percentile(1.0));
    return errors || mismatches ? 1 : 0;
}
