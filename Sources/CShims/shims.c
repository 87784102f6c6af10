#define _GNU_SOURCE
#include <sys/types.h>
#include <sys/time.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <errno.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <openssl/err.h>
#include <event2/event.h>
#include <event2/buffer.h>
#include "CShims.h"

int gh_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int v) { return (int)SSL_CTX_set_min_proto_version(ctx, v); }
int gh_ssl_ctx_set_max_proto_version(SSL_CTX *ctx, int v) { return (int)SSL_CTX_set_max_proto_version(ctx, v); }
int gh_ssl_set_min_proto_version(SSL *ssl, int v) { return (int)SSL_set_min_proto_version(ssl, v); }
int gh_ssl_set_max_proto_version(SSL *ssl, int v) { return (int)SSL_set_max_proto_version(ssl, v); }

long gh_ssl_ctx_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
int gh_ssl_ctx_set1_groups_list(SSL_CTX *ctx, const char *list) { return (int)SSL_CTX_set1_groups_list(ctx, list); }
long gh_ssl_ctx_set_session_cache_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_session_cache_mode(ctx, mode); }
void gh_openssl_free(void *p) { OPENSSL_free(p); }

uint64_t gh_ssl_op_all(void) { return SSL_OP_ALL; }
uint64_t gh_ssl_op_no_compression(void) { return SSL_OP_NO_COMPRESSION; }
uint64_t gh_ssl_op_no_renegotiation(void) { return SSL_OP_NO_RENEGOTIATION; }
uint64_t gh_ssl_op_cipher_server_preference(void) { return SSL_OP_CIPHER_SERVER_PREFERENCE; }
uint64_t gh_ssl_op_ignore_unexpected_eof(void) { return SSL_OP_IGNORE_UNEXPECTED_EOF; }
uint64_t gh_ssl_op_no_sslv3(void) { return SSL_OP_NO_SSLv3; }
uint64_t gh_ssl_op_single_ecdh_use(void) { return SSL_OP_SINGLE_ECDH_USE; }
uint64_t gh_ssl_op_no_ticket(void) { return SSL_OP_NO_TICKET; }
long gh_ssl_mode_release_buffers(void) { return SSL_MODE_RELEASE_BUFFERS; }
long gh_ssl_sess_cache_server(void) { return SSL_SESS_CACHE_SERVER; }

int gh_tls1_version(void) { return TLS1_VERSION; }
int gh_tls1_1_version(void) { return TLS1_1_VERSION; }
int gh_tls1_2_version(void) { return TLS1_2_VERSION; }
int gh_tls1_3_version(void) { return TLS1_3_VERSION; }

struct stack_st_X509 *gh_x509_chain_new(void) { return sk_X509_new_null(); }
int gh_x509_chain_push(struct stack_st_X509 *chain, X509 *cert) { return sk_X509_push(chain, cert); }
int gh_x509_chain_count(const struct stack_st_X509 *chain) { return sk_X509_num(chain); }
void gh_x509_chain_free(struct stack_st_X509 *chain) { sk_X509_pop_free(chain, X509_free); }

int gh_socket_error(void) { return errno; }

int gh_ticket_crypto_init(EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx,
                          const uint8_t *aes_key, const uint8_t *hmac_key, uint8_t *iv, int enc) {
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (enc) {
        if (RAND_bytes(iv, 16) != 1) return 0;
        if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, aes_key, iv) != 1) return 0;
    } else {
        if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, aes_key, iv) != 1) return 0;
    }
    return EVP_MAC_CTX_set_params(hctx, params) == 1 && EVP_MAC_init(hctx, hmac_key, 32, NULL) == 1;
}

int gh_err_reason(unsigned long code) { return ERR_GET_REASON(code); }
int gh_ssl_r_unsupported_protocol(void) { return SSL_R_UNSUPPORTED_PROTOCOL; }
int gh_ssl_r_version_too_low(void) { return SSL_R_VERSION_TOO_LOW; }
int gh_ssl_r_no_shared_cipher(void) { return SSL_R_NO_SHARED_CIPHER; }
int gh_ssl_r_inappropriate_fallback(void) { return SSL_R_INAPPROPRIATE_FALLBACK; }
int gh_ssl_r_callback_failed(void) { return SSL_R_CALLBACK_FAILED; }
int gh_ssl_r_wrong_version_number(void) { return SSL_R_WRONG_VERSION_NUMBER; }
int gh_ssl_r_http_request(void) { return SSL_R_HTTP_REQUEST; }

int gh_malloc_trim(void) { return malloc_trim(0); }
int gh_nice_this_thread(int niceness) { return setpriority(PRIO_PROCESS, (id_t)gettid(), niceness); }

int gh_malloc_keep_freed(size_t trim_threshold, size_t mmap_threshold) {
    return mallopt(M_TRIM_THRESHOLD, (int)trim_threshold) == 1 && mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold) == 1;
}
