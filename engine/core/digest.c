/*
 * digest.c - streaming SHA-256 over OpenSSL's libcrypto (EVP), for cache keys of tensors and files.
 */
#include "internal.h"

#include <openssl/evp.h>
#include <stdlib.h>

struct clipl_sha256 {
    EVP_MD_CTX *ctx;
};

clipl_sha256 *clipl_sha256_new(void)
{
    clipl_sha256 *h = calloc(1, sizeof *h);
    if (!h) {
        clipl__err(CLIPL_ENOMEM, "sha256: out of memory");
        return NULL;
    }
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        clipl__err(CLIPL_ENOMEM, "sha256: libcrypto could not start a digest");
        clipl_sha256_free(h);
        return NULL;
    }
    return h;
}

void clipl_sha256_free(clipl_sha256 *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

int clipl_sha256_update(clipl_sha256 *h, const void *data, size_t n)
{
    if (n && EVP_DigestUpdate(h->ctx, data, n) != 1)
        return clipl__err(CLIPL_EINVAL, "sha256: update failed");
    return CLIPL_OK;
}

int clipl_sha256_update_tensor(clipl_sha256 *h, const clipl_tensor *t)
{
    int32_t head[2] = {t->dt, t->ndim};
    int rc = clipl_sha256_update(h, head, sizeof head);
    if (!rc)
        rc = clipl_sha256_update(h, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    if (rc)
        return rc;
    clipl_tensor *c = NULL;
    rc = clipl_tensor_contiguous(t, &c);
    if (rc)
        return rc;
    rc = clipl_sha256_update(h, c->ptr,
                             (size_t)clipl_tensor_numel(c) * (size_t)clipl_dtype_size(c->dt));
    clipl_tensor_release(c);
    return rc;
}

int clipl_sha256_final(clipl_sha256 *h, char *out_hex)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(h->ctx, md, &len) != 1 ||
        EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
        return clipl__err(CLIPL_EINVAL, "sha256: final failed");
    static const char hex[] = "0123456789abcdef";
    for (unsigned int i = 0; i < len; i++) {
        out_hex[2 * i] = hex[md[i] >> 4];
        out_hex[2 * i + 1] = hex[md[i] & 15];
    }
    out_hex[2 * len] = '\0';
    return CLIPL_OK;
}
