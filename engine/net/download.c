/*
 * download.c - HTTP(S) downloads with libcurl on a background thread: resume with Range, SHA-256
 * check (OpenSSL EVP), rename into place only on a match. Lua polls the counters; nothing here
 * prints or calls back into the caller.
 */
#include "internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MSG_SIZE 1024

struct clipl_download {
    char *url;
    char *dest;
    char *part;   /* dest + ".part" */
    char sha[65]; /* expected hash, lowercase; "" = no check */
    pthread_t thread;
    int joined;              /* thread has been joined */
    _Atomic int64_t done;    /* bytes of the file so far (or hashed bytes when verifying) */
    _Atomic int64_t total;   /* expected size, -1 unknown */
    _Atomic int64_t resumed; /* resume offset kept */
    _Atomic int phase;       /* clipl_download_phase */
    _Atomic int finished;    /* thread stopped */
    _Atomic int cancel;      /* stop requested */
    int status;              /* final status (valid once finished) */
    char msg[MSG_SIZE];      /* final error message (valid once finished) */
    /* transfer state, used by the thread only */
    CURL *curl; /* the current request */
    int fd;
    int64_t offset;      /* bytes in the .part before this request */
    int checked;         /* response code checked at the first body byte */
    int write_err;       /* errno of a failed write */
    char range_err[256]; /* a bad 206 response */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* The thread's error: message into d->msg and status. */
static int fail(clipl_download *d, int code, const char *fmt, ...) CLIPL_PRINTF(3, 4);
static int fail(clipl_download *d, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    va_end(ap);
    d->status = code;
    return code;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* mkdir -p of the folder that holds path. */
static int make_parent_dirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n >= sizeof buf)
        return clipl__err(CLIPL_EINVAL, "download: path too long: %s", path);
    memcpy(buf, path, n + 1);
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf)
        return CLIPL_OK;
    *slash = '\0';
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return clipl__err(CLIPL_EIO, "download: cannot create folder %s: %s", buf,
                              strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return clipl__err(CLIPL_EIO, "download: cannot create folder %s: %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return clipl__err(CLIPL_EIO, "download: %s is not a folder", buf);
    return CLIPL_OK;
}

/* ---- SHA-256 ---- */

static void to_hex(const unsigned char *md, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[64] = '\0';
}

/* Hashes path into out_hex; counts hashed bytes into *progress when not NULL; stops early when
 * *stop becomes nonzero. Error text goes to msg. */
static int sha256_path(const char *path, char *out_hex, _Atomic int64_t *progress,
                       _Atomic int *stop, char *msg, size_t msg_size)
{
    int rc = CLIPL_OK;
    unsigned char *buf = NULL;
    EVP_MD_CTX *ctx = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(msg, msg_size, "sha256: cannot open %s: %s", path, strerror(errno));
        return CLIPL_EIO;
    }
    enum { CHUNK = 1 << 20 };
    buf = malloc(CHUNK);
    ctx = EVP_MD_CTX_new();
    if (!buf || !ctx) {
        snprintf(msg, msg_size, "sha256: out of memory hashing %s", path);
        rc = CLIPL_ENOMEM;
        goto done;
    }
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        snprintf(msg, msg_size, "sha256: OpenSSL could not start a SHA-256 digest");
        rc = CLIPL_EIO;
        goto done;
    }
    for (;;) {
        if ((stop && atomic_load(stop)) || clipl__should_stop()) {
            snprintf(msg, msg_size, "sha256: interrupted while hashing %s", path);
            rc = CLIPL_EINTERRUPTED;
            goto done;
        }
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(msg, msg_size, "sha256: cannot read %s: %s", path, strerror(errno));
            rc = CLIPL_EIO;
            goto done;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        if (progress)
            atomic_fetch_add(progress, (int64_t)n);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx, md, &len) != 1 || len != 32) {
        snprintf(msg, msg_size, "sha256: OpenSSL could not finish the digest of %s", path);
        rc = CLIPL_EIO;
        goto done;
    }
    to_hex(md, out_hex);
done:
    EVP_MD_CTX_free(ctx);
    free(buf);
    close(fd);
    return rc;
}

int clipl_sha256_file(const char *path, char *out_hex)
{
    if (!path || !out_hex)
        return clipl__err(CLIPL_EINVAL, "sha256_file: path and out_hex must not be NULL");
    char msg[MSG_SIZE];
    int rc = sha256_path(path, out_hex, NULL, NULL, msg, sizeof msg);
    if (rc != CLIPL_OK)
        return clipl__err(rc, "%s", msg);
    return CLIPL_OK;
}

/* ---- the transfer ---- */

/* Parses "Content-Range: bytes START-END/TOTAL" from a header line. */
static size_t on_header(char *line, size_t size, size_t nitems, void *ud)
{
    clipl_download *d = ud;
    size_t n = size * nitems;
    static const char key[] = "content-range:";
    if (n > sizeof key && strncasecmp(line, key, sizeof key - 1) == 0) {
        char tmp[256];
        size_t m = n < sizeof tmp - 1 ? n : sizeof tmp - 1;
        memcpy(tmp, line, m);
        tmp[m] = '\0';
        long long start = -1, end = -1, total = -1;
        const char *p = tmp + sizeof key - 1;
        while (*p == ' ')
            p++;
        if (sscanf(p, "bytes %lld-%lld/%lld", &start, &end, &total) >= 2) {
            if (start != d->offset)
                snprintf(d->range_err, sizeof d->range_err,
                         "server answered the Range request for bytes %lld- with bytes %lld-%lld",
                         (long long)d->offset, start, end);
            if (total > 0)
                atomic_store(&d->total, (int64_t)total);
        }
    }
    return n;
}

/* The server ignored Range (200 for a request from d->offset > 0): start over from byte 0. */
static int restart_from_zero(clipl_download *d)
{
    if (ftruncate(d->fd, 0) != 0 || lseek(d->fd, 0, SEEK_SET) != 0)
        return fail(d, CLIPL_EIO, "download: cannot truncate %s: %s", d->part, strerror(errno));
    d->offset = 0;
    d->range_err[0] = '\0';
    atomic_store(&d->done, 0);
    atomic_store(&d->resumed, 0);
    atomic_store(&d->total, -1);
    return CLIPL_OK;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    clipl_download *d = ud;
    size_t n = size * nmemb;
    if (!d->checked) {
        /* first body byte: the headers are known */
        d->checked = 1;
        long code = 0;
        curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &code);
        if (d->offset > 0 && code == 200) {
            if (restart_from_zero(d) != CLIPL_OK) {
                d->write_err = errno ? errno : EIO;
                return 0;
            }
        } else if (d->range_err[0]) {
            return 0; /* aborts the transfer: CURLE_WRITE_ERROR, reported from range_err */
        }
        curl_off_t length = -1;
        if (atomic_load(&d->total) < 0 &&
            curl_easy_getinfo(d->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) == CURLE_OK &&
            length >= 0)
            atomic_store(&d->total, d->offset + (int64_t)length);
        atomic_store(&d->phase, CLIPL_DL_TRANSFER);
    }
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(d->fd, data, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            d->write_err = w < 0 ? errno : ENOSPC;
            return 0;
        }
        data += w;
        left -= (size_t)w;
    }
    atomic_fetch_add(&d->done, (int64_t)n);
    return n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    clipl_download *d = ud;
    if (atomic_load(&d->cancel) || clipl__should_stop())
        return 1;
    /* the length is known once the response has been accepted (200 vs 206 settled) */
    if (d->checked && dltotal > 0 && atomic_load(&d->total) < 0)
        atomic_store(&d->total, d->offset + (int64_t)dltotal);
    return 0;
}

/* One request from d->offset. Returns CLIPL_OK when the body was received completely, or sets
 * the error. *http_code receives the status line's code. */
static int transfer(clipl_download *d, long *http_code)
{
    int rc = CLIPL_OK;
    char errbuf[CURL_ERROR_SIZE] = "";
    CURL *curl = curl_easy_init();
    if (!curl)
        return fail(d, CLIPL_ENOMEM, "download: curl_easy_init failed");
    char range[32];
    d->checked = 0;
    d->range_err[0] = '\0';
    d->write_err = 0;
    d->curl = curl;
    curl_easy_setopt(curl, CURLOPT_URL, d->url);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
    /* a stalled connection (under 1 byte/s for 60 s) is an error, not a hang */
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "clipl/" CLIPL_VERSION_STRING);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, d);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, d);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, d);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    if (d->offset > 0) {
        snprintf(range, sizeof range, "%lld-", (long long)d->offset);
        curl_easy_setopt(curl, CURLOPT_RANGE, range);
    }
    CURLcode cc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, http_code);
    if (cc == CURLE_OK) {
        if (!d->checked && d->offset > 0 && *http_code == 200)
            rc = restart_from_zero(d); /* an empty 200 answer to a Range request */
        goto done;
    }
    /* what stays behind for a resume (an empty .part is removed when the thread ends) */
    char kept[300] = "";
    int64_t have = atomic_load(&d->done);
    if (have > 0)
        snprintf(kept, sizeof kept, " (%lld bytes kept in %s for a resume)", (long long)have,
                 d->part);
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
        rc = fail(d, CLIPL_EINTERRUPTED, "download: %s: cancelled%s", d->url, kept);
    } else if (cc == CURLE_WRITE_ERROR && d->range_err[0]) {
        rc = fail(d, CLIPL_EIO, "download: %s: %s", d->url, d->range_err);
    } else if (cc == CURLE_WRITE_ERROR && d->write_err) {
        rc = fail(d, CLIPL_EIO, "download: cannot write %s: %s", d->part, strerror(d->write_err));
    } else if (cc == CURLE_HTTP_RETURNED_ERROR) {
        rc = fail(d, CLIPL_EIO, "download: %s: HTTP error %ld%s", d->url, *http_code, kept);
    } else {
        rc = fail(d, CLIPL_EIO, "download: %s: %s%s", d->url,
                  errbuf[0] ? errbuf : curl_easy_strerror(cc), kept);
    }
done:
    d->curl = NULL;
    curl_easy_cleanup(curl);
    return rc;
}

static void *run(void *arg)
{
    clipl_download *d = arg;
    d->status = CLIPL_OK;
    d->fd = open(d->part, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (d->fd < 0) {
        fail(d, CLIPL_EIO, "download: cannot open %s for writing: %s", d->part, strerror(errno));
        goto out;
    }
    if (flock(d->fd, LOCK_EX | LOCK_NB) != 0) {
        fail(d, CLIPL_EIO, "download: %s is in use by another download", d->part);
        close(d->fd);
        d->fd = -1;
        goto out;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        struct stat st;
        if (fstat(d->fd, &st) != 0) {
            fail(d, CLIPL_EIO, "download: cannot stat %s: %s", d->part, strerror(errno));
            goto out;
        }
        d->offset = (int64_t)st.st_size;
        atomic_store(&d->done, d->offset);
        atomic_store(&d->resumed, d->offset);
        atomic_store(&d->total, -1);
        atomic_store(&d->phase, CLIPL_DL_CONNECTING);
        long code = 0;
        int rc = transfer(d, &code);
        if (rc != CLIPL_OK && code == 416 && d->offset > 0) {
            /* nothing left to send: the .part may already be complete; verify it below */
            d->status = CLIPL_OK;
            d->msg[0] = '\0';
            atomic_store(&d->total, d->offset);
        } else if (rc != CLIPL_OK) {
            goto out;
        }
        /* verify */
        if (fstat(d->fd, &st) != 0) {
            fail(d, CLIPL_EIO, "download: cannot stat %s: %s", d->part, strerror(errno));
            goto out;
        }
        int64_t size = (int64_t)st.st_size;
        int64_t expected = atomic_load(&d->total);
        if (!d->sha[0]) {
            if (expected >= 0 && expected != size) {
                fail(d, CLIPL_EIO, "download: %s: got %lld bytes, expected %lld", d->url,
                     (long long)size, (long long)expected);
                goto out;
            }
            break;
        }
        atomic_store(&d->phase, CLIPL_DL_VERIFYING);
        atomic_store(&d->total, size);
        atomic_store(&d->done, 0);
        char actual[65];
        rc = sha256_path(d->part, actual, &d->done, &d->cancel, d->msg, sizeof d->msg);
        if (rc != CLIPL_OK) {
            d->status = rc;
            goto out;
        }
        if (strcmp(actual, d->sha) == 0)
            break;
        if (code == 416 && attempt == 0) {
            /* the kept .part was not a good prefix: start over once */
            if (ftruncate(d->fd, 0) != 0) {
                fail(d, CLIPL_EIO, "download: cannot truncate %s: %s", d->part, strerror(errno));
                goto out;
            }
            continue;
        }
        unlink(d->part);
        fail(d, CLIPL_EFORMAT,
             "download: %s: SHA-256 mismatch: expected %s, got %s (%lld bytes; the partial file "
             "was deleted)",
             d->url, d->sha, actual, (long long)size);
        goto out;
    }
    if (rename(d->part, d->dest) != 0) {
        fail(d, CLIPL_EIO, "download: cannot rename %s to %s: %s", d->part, d->dest,
             strerror(errno));
        goto out;
    }
out:
    if (d->fd >= 0) {
        struct stat st;
        /* a failure before the first byte leaves no empty .part behind */
        if (d->status != CLIPL_OK && fstat(d->fd, &st) == 0 && st.st_size == 0)
            unlink(d->part);
        close(d->fd); /* also releases the lock */
    }
    d->fd = -1;
    atomic_store(&d->phase, d->status == CLIPL_OK ? CLIPL_DL_DONE : CLIPL_DL_FAILED);
    atomic_store(&d->finished, 1);
    return NULL;
}

static bool is_hex64(const char *s)
{
    size_t n = strlen(s);
    if (n != 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

clipl_download *clipl_download_start(const char *url, const char *dest_path, const char *sha256_hex)
{
    if (!url || !url[0]) {
        clipl__err(CLIPL_EINVAL, "download: url must not be empty");
        return NULL;
    }
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) {
        clipl__err(CLIPL_EINVAL, "download: url must start with http:// or https://, got '%s'",
                   url);
        return NULL;
    }
    if (!dest_path || !dest_path[0]) {
        clipl__err(CLIPL_EINVAL, "download: dest_path must not be empty (url %s)", url);
        return NULL;
    }
    if (sha256_hex && sha256_hex[0] && !is_hex64(sha256_hex)) {
        clipl__err(CLIPL_EINVAL, "download: sha256 must be 64 hex digits, got '%s'", sha256_hex);
        return NULL;
    }
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        clipl__err(CLIPL_EIO, "download: libcurl could not initialise: %s",
                   curl_easy_strerror(curl_init_rc));
        return NULL;
    }
    if (make_parent_dirs(dest_path) != CLIPL_OK)
        return NULL;
    clipl_download *d = calloc(1, sizeof *d);
    if (!d) {
        clipl__err(CLIPL_ENOMEM, "download: out of memory");
        return NULL;
    }
    d->fd = -1;
    d->url = dup_str(url);
    d->dest = dup_str(dest_path);
    size_t n = strlen(dest_path);
    d->part = malloc(n + 6);
    if (!d->url || !d->dest || !d->part) {
        clipl__err(CLIPL_ENOMEM, "download: out of memory");
        goto fail;
    }
    memcpy(d->part, dest_path, n);
    memcpy(d->part + n, ".part", 6);
    if (sha256_hex) {
        for (int i = 0; sha256_hex[i] && i < 64; i++) {
            char c = sha256_hex[i];
            d->sha[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
        }
    }
    atomic_store(&d->total, -1);
    atomic_store(&d->phase, CLIPL_DL_CONNECTING);
    int err = pthread_create(&d->thread, NULL, run, d);
    if (err != 0) {
        clipl__err(CLIPL_EIO, "download: cannot start a thread: %s", strerror(err));
        goto fail;
    }
    return d;
fail:
    free(d->url);
    free(d->dest);
    free(d->part);
    free(d);
    return NULL;
}

static int final_status(clipl_download *d)
{
    if (d->status != CLIPL_OK)
        return clipl__err(d->status, "%s", d->msg);
    return CLIPL_OK;
}

int clipl_download_poll(clipl_download *d, int64_t *done, int64_t *total, int *finished)
{
    if (!d)
        return clipl__err(CLIPL_EINVAL, "download_poll: NULL download");
    int fin = atomic_load(&d->finished);
    if (done)
        *done = atomic_load(&d->done);
    if (total)
        *total = atomic_load(&d->total);
    if (finished)
        *finished = fin;
    return fin ? final_status(d) : CLIPL_OK;
}

int clipl_download_state(const clipl_download *d)
{
    return d ? atomic_load(&((clipl_download *)d)->phase) : CLIPL_DL_FAILED;
}

int64_t clipl_download_resumed_from(const clipl_download *d)
{
    return d ? atomic_load(&((clipl_download *)d)->resumed) : 0;
}

int clipl_download_wait(clipl_download *d)
{
    if (!d)
        return clipl__err(CLIPL_EINVAL, "download_wait: NULL download");
    if (!d->joined) {
        pthread_join(d->thread, NULL);
        d->joined = 1;
    }
    return final_status(d);
}

void clipl_download_cancel(clipl_download *d)
{
    if (d)
        atomic_store(&d->cancel, 1);
}

void clipl_download_free(clipl_download *d)
{
    if (!d)
        return;
    if (!d->joined) {
        atomic_store(&d->cancel, 1);
        pthread_join(d->thread, NULL);
        d->joined = 1;
    }
    free(d->url);
    free(d->dest);
    free(d->part);
    free(d);
}
