/* tls-memory: heap bytes OpenSSL itself keeps per idle server-side TLS
 * connection: the floor under any OpenSSL-based proxy's bytes per idle
 * connection (the harness's idle_conns scenario; see README, Performance).
 *
 *   cc -O2 -o tls-memory scripts/tools/tls-memory.c -lssl -lcrypto
 *   ./tls-memory CERT KEY [N] [per-connection]
 *
 * Makes N (default 2000) server SSL objects configured like Gatehouse's
 * (TLS 1.2-1.3, SSL_MODE_RELEASE_BUFFERS, session tickets on), completes a
 * TLS 1.3 handshake with an in-memory client for each, frees the clients and
 * reports the growth of glibc's heap (mallinfo2) per server connection.
 * With "per-connection", the certificate and key are put on each SSL with
 * SSL_use_cert_and_key, as Gatehouse's SNI callback does, instead of on the
 * SSL_CTX once.
 */
#include <malloc.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>

static size_t heap(void) {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

/* Moves bytes from one side's write BIO to the other's read BIO. */
static void pump(BIO *from, BIO *to) {
    char buf[16384];
    int n;
    while ((n = BIO_read(from, buf, sizeof buf)) > 0) BIO_write(to, buf, n);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: tls-memory CERT KEY [N]\n"); return 2; }
    int n = argc > 3 ? atoi(argv[3]) : 2000;
    int per_connection = argc > 4;
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(sctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(sctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(sctx, argv[1]) != 1 ||
        SSL_CTX_use_PrivateKey_file(sctx, argv[2], SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    X509 *leaf = SSL_CTX_get0_certificate(sctx);
    EVP_PKEY *pkey = SSL_CTX_get0_privatekey(sctx);
    STACK_OF(X509) *chain = NULL;
    SSL_CTX_get0_chain_certs(sctx, &chain);
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL **servers = calloc(n, sizeof *servers);

    /* One warm-up pair so lazily created globals are not counted. */
    for (int round = 0; round < 2; round++) {
        size_t before = heap();
        int count = round == 0 ? 1 : n;
        for (int i = 0; i < count; i++) {
            SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
            if (per_connection && SSL_use_cert_and_key(s, leaf, pkey, chain, 1) != 1) {
                ERR_print_errors_fp(stderr);
                return 1;
            }
            BIO *s_in = BIO_new(BIO_s_mem()), *s_out = BIO_new(BIO_s_mem());
            BIO *c_in = BIO_new(BIO_s_mem()), *c_out = BIO_new(BIO_s_mem());
            SSL_set_bio(s, s_in, s_out);
            SSL_set_bio(c, c_in, c_out);
            SSL_set_accept_state(s);
            SSL_set_connect_state(c);
            SSL_set_tlsext_host_name(c, "localhost");
            for (int step = 0; step < 10 && !(SSL_is_init_finished(s) && SSL_is_init_finished(c)); step++) {
                SSL_do_handshake(c);
                pump(c_out, s_in);
                SSL_do_handshake(s);
                pump(s_out, c_in);
            }
            if (!SSL_is_init_finished(s)) { fprintf(stderr, "handshake failed\n"); ERR_print_errors_fp(stderr); return 1; }
            /* The client reads the tickets; the server's buffers drain. */
            char byte;
            SSL_read(c, &byte, 1);
            /* ... and the server waits for a request, as a proxy does. */
            SSL_read(s, &byte, 1);
            SSL_free(c);
            /* A socket BIO's worth instead of the memory BIOs and their buffers. */
            BIO *null = BIO_new(BIO_s_null());
            SSL_set_bio(s, null, null);
            if (round == 0) SSL_free(s); else servers[i] = s;
        }
        if (round == 1) {
            size_t grown = heap() - before;
            printf("{\"connections\":%d,\"heap_bytes_per_connection\":%zu,\"tls\":\"%s\",\"certificate_on\":\"%s\"}\n",
                   n, grown / n, SSL_get_version(servers[0]), per_connection ? "SSL" : "SSL_CTX");
        }
    }
    return 0;
}
