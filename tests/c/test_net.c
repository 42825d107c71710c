/*
 * test_net.c - SHA-256 of files (FIPS 180-2 vectors, the vocabulary's published hash) and the
 * download API's error paths that need no server (bad arguments, a refused port, cancelling a
 * request that gets no answer). Transfers against a local server are in
 * tests/spec/download_spec.lua.
 */
#include "check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[256];

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* A listening socket on 127.0.0.1 (never accepted from) and its port. */
static int listen_socket(int *port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 4) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0) {
        if (s >= 0)
            close(s);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return s;
}

static void test_sha256(void)
{
    char path[300], hex[65];
    snprintf(path, sizeof path, "%s/v.bin", tmpdir);
    /* FIPS 180-2 appendix B vectors */
    write_file(path, "", 0);
    CHECK_OK(clipl_sha256_file(path, hex));
    CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    write_file(path, "abc", 3);
    CHECK_OK(clipl_sha256_file(path, hex));
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    /* one million 'a' */
    size_t n = 1000000;
    char *a = malloc(n);
    CHECK(a != NULL);
    if (a) {
        memset(a, 'a', n);
        write_file(path, a, n);
        free(a);
        CHECK_OK(clipl_sha256_file(path, hex));
        CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
    }
    /* the vocabulary against the hash published in ../shared/clip/models.tsv */
    char line[512], expected[65] = "";
    FILE *f = fopen("../../shared/clip/models.tsv", "r");
    CHECK(f != NULL);
    while (f && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "(sha256 ");
        if (p && strlen(p + 8) >= 64) {
            memcpy(expected, p + 8, 64);
            expected[64] = '\0';
        }
    }
    if (f)
        fclose(f);
    CHECK(strlen(expected) == 64);
    CHECK_OK(clipl_sha256_file("../../shared/clip/bpe_simple_vocab_16e6.txt.gz", hex));
    CHECK(strcmp(hex, expected) == 0);

    CHECK_ERR(clipl_sha256_file("/nonexistent/x.pt", hex), CLIPL_EIO,
              "cannot open /nonexistent/x.pt");
    CHECK_ERR(clipl_sha256_file(NULL, hex), CLIPL_EINVAL, "must not be NULL");
    unlink(path);
}

static void test_bad_arguments(void)
{
    char dest[300];
    snprintf(dest, sizeof dest, "%s/d/x.pt", tmpdir);
    CHECK(clipl_download_start(NULL, dest, NULL) == NULL);
    CHECK(strstr(clipl_errmsg(), "url must not be empty") != NULL);
    CHECK(clipl_download_start("file:///etc/passwd", dest, NULL) == NULL);
    CHECK(strstr(clipl_errmsg(), "must start with http:// or https://, got 'file:///etc/passwd'"));
    CHECK(clipl_download_start("http://127.0.0.1:1/x", "", NULL) == NULL);
    CHECK(strstr(clipl_errmsg(), "dest_path must not be empty") != NULL);
    CHECK(clipl_download_start("http://127.0.0.1:1/x", dest, "12ab") == NULL);
    CHECK(strstr(clipl_errmsg(), "sha256 must be 64 hex digits, got '12ab'") != NULL);
    CHECK(clipl_errcode() == CLIPL_EINVAL);
    CHECK_ERR(clipl_download_poll(NULL, NULL, NULL, NULL), CLIPL_EINVAL, "NULL download");
    CHECK_ERR(clipl_download_wait(NULL), CLIPL_EINVAL, "NULL download");
    clipl_download_free(NULL);
    clipl_download_cancel(NULL);
    CHECK(!exists(dest)); /* nothing was started */
}

static void test_refused(void)
{
    int port = 0;
    int s = listen_socket(&port);
    CHECK(s >= 0);
    if (s < 0)
        return;
    close(s); /* nobody listens there now */
    char url[128], dest[300], part[310];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/clip/x.pt", port);
    snprintf(dest, sizeof dest, "%s/refused/x.pt", tmpdir);
    snprintf(part, sizeof part, "%s.part", dest);
    clipl_download *d = clipl_download_start(url, dest, NULL);
    CHECK(d != NULL);
    if (!d)
        return;
    int rc = clipl_download_wait(d);
    CHECK(rc == CLIPL_EIO);
    CHECK(strstr(clipl_errmsg(), url) != NULL);
    CHECK(strstr(clipl_errmsg(), "onnect") != NULL); /* curl: "Failed to connect ..." */
    clipl_errclear();
    int64_t done = -1, total = 0;
    int finished = 0;
    CHECK(clipl_download_poll(d, &done, &total, &finished) == CLIPL_EIO);
    CHECK(finished == 1 && done == 0 && total == -1);
    CHECK(clipl_download_state(d) == CLIPL_DL_FAILED);
    CHECK(!exists(dest) && !exists(part)); /* nothing received: no empty .part */
    clipl_download_free(d);
}

static void test_cancel(void)
{
    /* a server that accepts the connection (backlog) but never answers */
    int port = 0;
    int s = listen_socket(&port);
    CHECK(s >= 0);
    if (s < 0)
        return;
    char url[128], dest[300];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x.pt", port);
    snprintf(dest, sizeof dest, "%s/cancel/x.pt", tmpdir);
    clipl_download *d = clipl_download_start(url, dest, NULL);
    CHECK(d != NULL);
    if (!d) {
        close(s);
        return;
    }
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    int finished = 1;
    CHECK_OK(clipl_download_poll(d, NULL, NULL, &finished));
    CHECK(finished == 0);
    CHECK(clipl_download_state(d) == CLIPL_DL_CONNECTING);
    clipl_download_cancel(d);
    CHECK_ERR(clipl_download_wait(d), CLIPL_EINTERRUPTED, "cancelled");
    CHECK(!exists(dest));
    clipl_download_free(d);
    /* free without wait on a running download cancels and joins */
    d = clipl_download_start(url, dest, NULL);
    CHECK(d != NULL);
    clipl_download_free(d);
    close(s);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/clipl_test_net_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_sha256();
    test_bad_arguments();
    test_refused();
    test_cancel();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_done("net");
}
