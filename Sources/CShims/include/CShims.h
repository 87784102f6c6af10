#ifndef GATEHOUSE_CSHIMS_H
#define GATEHOUSE_CSHIMS_H
// Wrappers for the OpenSSL and libevent macros Swift cannot import.
// Forward declarations only, so this header pulls in no second copy of libc or
// OpenSSL headers; the pointers import into Swift as OpaquePointer.
#include <stdint.h>
#include <stddef.h>

struct ssl_st;
struct ssl_ctx_st;
struct x509_st;
struct stack_st_X509;
struct evp_cipher_ctx_st;
struct evp_mac_ctx_st;

// Protocol version bounds (macros over SSL_ctrl).
int gh_ssl_ctx_set_min_proto_version(struct ssl_ctx_st *ctx, int version);
int gh_ssl_ctx_set_max_proto_version(struct ssl_ctx_st *ctx, int version);
int gh_ssl_set_min_proto_version(struct ssl_st *ssl, int version);
int gh_ssl_set_max_proto_version(struct ssl_st *ssl, int version);

long gh_ssl_ctx_set_mode(struct ssl_ctx_st *ctx, long mode);
int gh_ssl_ctx_set1_groups_list(struct ssl_ctx_st *ctx, const char *list);
long gh_ssl_ctx_set_session_cache_mode(struct ssl_ctx_st *ctx, long mode);
void gh_openssl_free(void *p);

// SSL_OP_* and SSL_MODE_* are built from macros.
uint64_t gh_ssl_op_all(void);
uint64_t gh_ssl_op_no_compression(void);
uint64_t gh_ssl_op_no_renegotiation(void);
uint64_t gh_ssl_op_cipher_server_preference(void);
uint64_t gh_ssl_op_ignore_unexpected_eof(void);
uint64_t gh_ssl_op_no_sslv3(void);
uint64_t gh_ssl_op_single_ecdh_use(void);
uint64_t gh_ssl_op_no_ticket(void);
long gh_ssl_mode_release_buffers(void);
long gh_ssl_sess_cache_server(void);

int gh_tls1_version(void);
int gh_tls1_1_version(void);
int gh_tls1_2_version(void);
int gh_tls1_3_version(void);

// Certificate chains (STACK_OF(X509) is a family of inline macros).
struct stack_st_X509 *gh_x509_chain_new(void);
int gh_x509_chain_push(struct stack_st_X509 *chain, struct x509_st *cert);
int gh_x509_chain_count(const struct stack_st_X509 *chain);
void gh_x509_chain_free(struct stack_st_X509 *chain);

// Session ticket crypto for SSL_CTX_set_tlsext_ticket_key_evp_cb: AES-256-CBC
// with the given 32-byte key and HMAC-SHA256 with the given 32-byte key
// (OSSL_PARAM arrays are macros and stack structs). With enc != 0 a random IV is
// written to iv; otherwise iv is the ticket's. Returns 1 on success.
int gh_ticket_crypto_init(struct evp_cipher_ctx_st *cctx, struct evp_mac_ctx_st *hctx,
                          const uint8_t *aes_key, const uint8_t *hmac_key, uint8_t *iv, int enc);

// Library and reason of an OpenSSL error code (ERR_GET_* are inline functions
// over bit fields whose layout is OpenSSL's business).
int gh_err_reason(unsigned long code);
int gh_ssl_r_unsupported_protocol(void);
int gh_ssl_r_version_too_low(void);
int gh_ssl_r_no_shared_cipher(void);
int gh_ssl_r_inappropriate_fallback(void);
int gh_ssl_r_callback_failed(void);
int gh_ssl_r_wrong_version_number(void);
int gh_ssl_r_http_request(void);

// glibc's malloc_trim(0): returns freed heap to the system after a big load.
int gh_malloc_trim(void);

// setpriority for the calling thread alone (Linux: a thread's id as the
// PRIO_PROCESS target); background threads yield the CPU to the event loops.
int gh_nice_this_thread(int niceness);

// mallopt(M_TRIM_THRESHOLD) and mallopt(M_MMAP_THRESHOLD): how much freed heap
// glibc keeps instead of returning it (and faulting it back in on the next
// allocation). Returns 1 on success.
int gh_malloc_keep_freed(size_t trim_threshold, size_t mmap_threshold);

// libevent's EVUTIL_SOCKET_ERROR().
int gh_socket_error(void);

#endif
