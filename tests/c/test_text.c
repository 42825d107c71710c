/*
 * test_text.c - the tokenizer against OpenAI's own outputs (../shared/clip/tokenizer_cases.jsonl
 * and tokenizer_decode_cases.jsonl, made by clip/simple_tokenizer.py). Token ids are integers:
 * the only tolerance is exact equality.
 */
#include "check.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN "../../shared/clip/"

/* ---- a minimal JSON reader for the golden lines (objects of strings, int arrays, bools) ----- */

typedef struct {
    const char *p;
} jp;

static void ws(jp *j)
{
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')
        j->p++;
}

static int put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static unsigned hex4(const char *s)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

/* Parses a JSON string at j->p into a malloc'ed buffer; *len gets its byte length. NULL for
 * `null`. */
static char *jstring(jp *j, size_t *len)
{
    ws(j);
    if (strncmp(j->p, "null", 4) == 0) {
        j->p += 4;
        *len = 0;
        return NULL;
    }
    if (*j->p != '"')
        return NULL;
    j->p++;
    char *o = malloc(strlen(j->p) + 1);
    size_t n = 0;
    while (*j->p && *j->p != '"') {
        if (*j->p != '\\') {
            o[n++] = *j->p++;
            continue;
        }
        j->p++;
        char c = *j->p++;
        switch (c) {
        case 'n': o[n++] = '\n'; break;
        case 't': o[n++] = '\t'; break;
        case 'r': o[n++] = '\r'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'u': {
            unsigned cp = hex4(j->p);
            j->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && j->p[0] == '\\' && j->p[1] == 'u') {
                unsigned lo = hex4(j->p + 2);
                j->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            n += (size_t)put_utf8(o + n, cp);
            break;
        }
        default: o[n++] = c; break;
        }
    }
    if (*j->p == '"')
        j->p++;
    o[n] = '\0';
    *len = n;
    return o;
}

/* Parses an array of ints into out (cap entries); returns the count. */
static int jints(jp *j, int32_t *out, int cap)
{
    ws(j);
    if (*j->p != '[')
        return -1;
    j->p++;
    int n = 0;
    for (;;) {
        ws(j);
        if (*j->p == ']') {
            j->p++;
            return n;
        }
        char *end;
        long v = strtol(j->p, &end, 10);
        if (end == j->p)
            return -1;
        if (n < cap)
            out[n] = (int32_t)v;
        n++;
        j->p = end;
        ws(j);
        if (*j->p == ',')
            j->p++;
    }
}

/* Moves j to the value of "key" in the object line (top-level keys only; the goldens have no
 * nested objects). */
static int jfind(jp *j, const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = line;
    /* keys follow '{' or ',' outside strings: scan with string awareness */
    int in_str = 0;
    for (; *p; p++) {
        if (in_str) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                in_str = 0;
            continue;
        }
        if (*p == '"') {
            if ((p[-1] == '{' || p[-1] == ',') && strncmp(p, pat, strlen(pat)) == 0) {
                j->p = p + strlen(pat);
                return 1;
            }
            in_str = 1;
        }
    }
    return 0;
}

static char *read_line(FILE *f)
{
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    int c;
    while ((c = fgetc(f)) != EOF && c != '\n') {
        if (n + 1 >= cap)
            b = realloc(b, cap *= 2);
        b[n++] = (char)c;
    }
    if (c == EOF && n == 0) {
        free(b);
        return NULL;
    }
    b[n] = '\0';
    return b;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void print_ids(const char *label, const int32_t *ids, size_t n)
{
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* One golden case, a line of a .jsonl file: 1 when it matches, 0 when not, -1 when the line is
 * malformed (a failed check, not a case). */
typedef int (*case_fn)(clipl_tokenizer *tok, const char *line);

/* Runs fn over the non-empty lines of the golden file name; returns the number of cases. */
static int run_cases(clipl_tokenizer *tok, const char *name, case_fn fn)
{
    char path[256];
    snprintf(path, sizeof path, GOLDEN "%s", name);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f)
        return 0;
    int cases = 0, ok = 0;
    char *line;
    while ((line = read_line(f))) {
        int r = *line ? fn(tok, line) : -1;
        cases += r >= 0;
        ok += r > 0;
        free(line);
    }
    fclose(f);
    printf("%s: %d/%d cases exact\n", name, ok, cases);
    return cases;
}

static int encode_case(clipl_tokenizer *tok, const char *line)
{
    jp j;
    size_t tlen = 0;
    char *text = NULL;
    int32_t want[512], want77[77], got[512];
    int nw = -1, n77 = -1;
    if (jfind(&j, line, "text"))
        text = jstring(&j, &tlen);
    if (jfind(&j, line, "ids"))
        nw = jints(&j, want, 512);
    if (jfind(&j, line, "tokens77"))
        n77 = jints(&j, want77, 77);
    int truncated = jfind(&j, line, "truncated") && strncmp(j.p, "true", 4) == 0;
    CHECK(text != NULL && nw >= 0 && nw <= 512 && n77 == 77);
    if (!text || nw < 0 || nw > 512 || n77 != 77) {
        free(text);
        return -1;
    }
    size_t n = 0;
    int rc = clipl_tokenizer_encode(tok, text, tlen, got, 512, &n);
    int good = rc == CLIPL_OK && n == (size_t)nw && memcmp(got, want, n * 4) == 0;

    clipl_tensor *row = NULL;
    const char *texts[1] = {text};
    size_t lens[1] = {tlen};
    rc = clipl_tokenizer_tokenize(tok, 1, texts, lens, &row, 77, truncated);
    int good77 = rc == CLIPL_OK && row && memcmp(row->ptr, want77, sizeof want77) == 0;
    if (!good || !good77) {
        fprintf(stderr, "encode mismatch for \"%s\" (%s)\n", text, clipl_errmsg());
        print_ids("want", want, (size_t)nw);
        print_ids("got ", got, n < 512 ? n : 512);
    }
    CHECK(good);
    CHECK(good77);
    clipl_tensor_release(row);
    free(text);
    return good && good77;
}

static void test_encode_cases(clipl_tokenizer *tok)
{
    CHECK(run_cases(tok, "tokenizer_cases.jsonl", encode_case) == 247);
}

static int decode_case(clipl_tokenizer *tok, const char *line)
{
    jp j;
    int32_t ids[1024];
    int n = -1;
    size_t dlen = 0;
    char *want = NULL;
    if (jfind(&j, line, "ids"))
        n = jints(&j, ids, 1024);
    if (jfind(&j, line, "decoded"))
        want = jstring(&j, &dlen);
    CHECK(n >= 0 && n <= 1024 && want);
    if (n < 0 || n > 1024 || !want) {
        free(want);
        return -1;
    }
    size_t len = 0;
    int rc = clipl_tokenizer_decode(tok, ids, (size_t)n, NULL, 0, &len);
    char *got = malloc(len + 1);
    size_t len2 = 0;
    if (rc == CLIPL_OK)
        rc = clipl_tokenizer_decode(tok, ids, (size_t)n, got, len, &len2);
    int good = rc == CLIPL_OK && len2 == len && len == dlen && memcmp(got, want, len) == 0;
    if (!good)
        fprintf(stderr, "decode mismatch: want \"%s\" got \"%.*s\" (%s)\n", want, (int)len, got,
                clipl_errmsg());
    CHECK(good);

    /* from_text round trip: encode(from_text) == ids */
    size_t flen;
    char *from = jfind(&j, line, "from_text") ? jstring(&j, &flen) : NULL;
    if (from) {
        int32_t again[1024];
        size_t m = 0;
        CHECK_OK(clipl_tokenizer_encode(tok, from, flen, again, 1024, &m));
        CHECK(m == (size_t)n && memcmp(again, ids, m * 4) == 0);
    }
    free(from);
    free(got);
    free(want);
    return good;
}

static void test_decode_cases(clipl_tokenizer *tok)
{
    CHECK(run_cases(tok, "tokenizer_decode_cases.jsonl", decode_case) == 74);
}

static void test_api(clipl_tokenizer *tok)
{
    CHECK(clipl_tokenizer_vocab_size(tok) == 49408);
    CHECK(clipl_tokenizer_sot(tok) == 49406);
    CHECK(clipl_tokenizer_eot(tok) == 49407);
    /* vocabulary construction of simple_tokenizer.py: ids 0..255 are bytes_to_unicode's values
     * ('!' first), 256..511 the same with "</w>" */
    CHECK(clipl_tokenizer_token_id(tok, "!", 1) == 0);
    CHECK(clipl_tokenizer_token_id(tok, "!</w>", 5) == 256);
    CHECK(clipl_tokenizer_token_id(tok, "<|endoftext|>", 13) == 49407);
    CHECK(clipl_tokenizer_token_id(tok, "no such token", 13) == -1);

    /* size query, then a short buffer: *n is the full count, only cap ids written */
    const char *s = "a photo of a dog";
    size_t n = 0;
    CHECK_OK(clipl_tokenizer_encode(tok, s, strlen(s), NULL, 0, &n));
    CHECK(n == 5);
    int32_t two[3] = {-7, -7, -7};
    CHECK_OK(clipl_tokenizer_encode(tok, s, strlen(s), two, 2, &n));
    CHECK(n == 5 && two[0] == 320 && two[1] == 1125 && two[2] == -7);
    /* the empty text */
    CHECK_OK(clipl_tokenizer_encode(tok, "", 0, NULL, 0, &n));
    CHECK(n == 0);

    /* invalid UTF-8: an error naming the byte offset */
    CHECK_ERR(clipl_tokenizer_encode(tok, "ab\xC3(", 4, NULL, 0, &n), CLIPL_EINVAL,
              "byte offset 2");
    CHECK_ERR(clipl_tokenizer_encode(tok, "\xED\xA0\x80", 3, NULL, 0, &n), CLIPL_EINVAL,
              "byte offset 0");
    CHECK_ERR(clipl_tokenizer_encode(tok, "ok \xF4\x90\x80\x80", 7, NULL, 0, &n), CLIPL_EINVAL,
              "byte offset 3");
    /* decode: bad id */
    int32_t bad[2] = {320, 49408};
    CHECK_ERR(clipl_tokenizer_decode(tok, bad, 2, NULL, 0, &n), CLIPL_EINDEX, "id 49408");

    /* decode of lone bytes: errors='replace' gives one U+FFFD per maximal ill-formed subpart.
     * Byte 0xE2 is id 188 + ... : find ids through the vocabulary instead. */
    int32_t e2 = clipl_tokenizer_token_id(tok, "\xC3\xA2", 2);  /* byte 0xE2 -> 'â' */
    int32_t x82 = clipl_tokenizer_token_id(tok, "\xC4\xA4", 2); /* byte 0x82 -> U+0124 */
    int32_t a = clipl_tokenizer_token_id(tok, "a</w>", 5);
    CHECK(e2 >= 0 && x82 >= 0 && a >= 0);
    int32_t trunc[3] = {e2, x82, a}; /* E2 82 'a' -> U+FFFD "a " (E2 82 is one maximal subpart) */
    char out[32];
    size_t len = 0;
    CHECK_OK(clipl_tokenizer_decode(tok, trunc, 3, out, sizeof out, &len));
    CHECK(len == 5 && memcmp(out,
                             "\xEF\xBF\xBD"
                             "a ",
                             5) == 0);

    /* tokenize: too long is an error naming the text; truncate ends with eot */
    char longtext[2000];
    size_t k = 0;
    for (int i = 0; i < 200; i++)
        k += (size_t)snprintf(longtext + k, sizeof longtext - k, "dog ");
    const char *texts[2] = {"a cat", longtext};
    size_t lens[2] = {5, k};
    clipl_tensor *t = NULL;
    CHECK_ERR(clipl_tokenizer_tokenize(tok, 2, texts, lens, &t, 77, 0), CLIPL_ESHAPE,
              "input 2 \"dog dog");
    CHECK(t == NULL);
    CHECK_OK(clipl_tokenizer_tokenize(tok, 2, texts, lens, &t, 77, 1));
    if (t) {
        const int32_t *r = t->ptr;
        CHECK(t->dt == CLIPL_I32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 77);
        CHECK(r[0] == 49406 && r[3] == 49407 && r[4] == 0 && r[76] == 0);
        CHECK(r[77] == 49406 && r[78] == 1929 && r[153] == 49407);
        clipl_tensor_release(t);
    }
    t = NULL;
    CHECK_ERR(clipl_tokenizer_tokenize(tok, 1, texts, lens, &t, 0, 0), CLIPL_EINVAL,
              "context_length");
    const char *badtexts[2] = {"fine", "bad \xFF here"};
    size_t badlens[2] = {4, 10};
    CHECK_ERR(clipl_tokenizer_tokenize(tok, 2, badtexts, badlens, &t, 77, 0), CLIPL_EINVAL,
              "text 2: invalid UTF-8 at byte offset 4");
    CHECK_OK(clipl_tokenizer_tokenize(tok, 0, NULL, NULL, &t, 77, 0));
    CHECK(t && t->shape[0] == 0 && t->shape[1] == 77);
    clipl_tensor_release(t);

    /* cleaning steps that the goldens do not reach */
    struct {
        const char *in, *want;
    } clean[] = {
        {"\x1c\x1f  A\x1c"
         "B \xC2\x85 C\x1f",
         "a\x1c"
         "b c"},                    /* strip vs \s (U+001C..1F) */
        {"&amp;lt;", "<"},          /* unescaped twice */
        {"&amp;amp;amp;", "&amp;"}, /* ... and only twice */
        {"&#0;&#x110000;&#xD800;", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"a&#1;b&#x80;c", "ab\xE2\x82\xAC"
                          "c"}, /* dropped; windows-1252 remap */
        {"&notit; &notin; &amp", "\xC2\xACit; \xE2\x88\x89 &"},
        {"&#", "&#"},
        {"\xCE\xA3\xCE\x91\xCE\xA3", "\xCF\x83\xCE\xB1\xCF\x82"}, /* ΣΑΣ -> σας */
        {"\xC4\xB0", "i\xCC\x87"},                                /* İ -> i + U+0307 */
        {"e\xCC\x81", "\xC3\xA9"},                                /* NFC */
        {"\xE1\x84\x80\xE1\x85\xA1", "\xEA\xB0\x80"},             /* jamo -> U+AC00 */
        {"\xE2\x84\xAB", "\xC3\xA5"}, /* U+212B ANGSTROM SIGN -> U+00C5 -> U+00E5 */
    };
    for (size_t i = 0; i < sizeof clean / sizeof clean[0]; i++) {
        char buf[64];
        size_t bl = 0;
        CHECK_OK(
            clipl_tokenizer_clean(tok, clean[i].in, strlen(clean[i].in), buf, sizeof buf, &bl));
        int good = bl == strlen(clean[i].want) && memcmp(buf, clean[i].want, bl) == 0;
        if (!good)
            fprintf(stderr, "clean #%zu: got \"%.*s\" want \"%s\"\n", i, (int)bl, buf,
                    clean[i].want);
        CHECK(good);
    }

    /* cache: filled by encoding, cleared on request; results the same without it */
    CHECK(clipl_tokenizer_cache_size(tok) > 0);
    clipl_tokenizer_cache_clear(tok);
    CHECK(clipl_tokenizer_cache_size(tok) == 0);
}

static void test_load_errors(void)
{
    clipl_tokenizer *t = clipl_tokenizer_load("no/such/file.txt.gz");
    CHECK(t == NULL);
    CHECK(strstr(clipl_errmsg(), "no/such/file.txt.gz") != NULL);
    CHECK(clipl_errcode() == CLIPL_EIO);
    t = clipl_tokenizer_load(GOLDEN "README.md");
    CHECK(t == NULL);
    CHECK(clipl_errcode() == CLIPL_EFORMAT);
    CHECK(strstr(clipl_errmsg(), "README.md") != NULL);
    t = clipl_tokenizer_load_hf("no/vocab.json", "no/merges.txt");
    CHECK(t == NULL && strstr(clipl_errmsg(), "no/vocab.json") != NULL);
    clipl_errclear();
}

/* Several threads share one tokenizer (and its word cache, kept small so it is emptied often):
 * every thread must get the ids a single thread gets. */
enum { N_THREAD_TEXTS = 6, N_THREADS = 4 };
static const char *thread_texts[N_THREAD_TEXTS] = {
    "a photo of a dog",   "Übermensch Straße", "東京タワーの写真",
    "it's a cat&amp;dog", "ΟΔΟΣ ψυχή",         "the quick brown fox jumps over the lazy dog 12345"};
static int32_t thread_want[N_THREAD_TEXTS][64];
static size_t thread_want_n[N_THREAD_TEXTS];

static void *thread_main(void *arg)
{
    clipl_tokenizer *tok = arg;
    long bad = 0;
    for (int rep = 0; rep < 300; rep++)
        for (int i = 0; i < N_THREAD_TEXTS; i++) {
            int32_t ids[64];
            size_t n = 0;
            if (clipl_tokenizer_encode(tok, thread_texts[i], strlen(thread_texts[i]), ids, 64,
                                       &n) != CLIPL_OK ||
                n != thread_want_n[i] || memcmp(ids, thread_want[i], n * 4) != 0)
                bad++;
        }
    return (void *)bad;
}

static void test_threads(clipl_tokenizer *tok)
{
    clipl_tokenizer_cache_clear(tok);
    for (int i = 0; i < N_THREAD_TEXTS; i++)
        CHECK_OK(clipl_tokenizer_encode(tok, thread_texts[i], strlen(thread_texts[i]),
                                        thread_want[i], 64, &thread_want_n[i]));
    clipl_tokenizer_cache_limit(tok, 5);
    pthread_t th[N_THREADS];
    for (int k = 0; k < N_THREADS; k++)
        CHECK(pthread_create(&th[k], NULL, thread_main, tok) == 0);
    for (int k = 0; k < N_THREADS; k++) {
        void *r = NULL;
        pthread_join(th[k], &r);
        CHECK(r == NULL);
    }
    clipl_tokenizer_cache_limit(tok, 200000);
}

int main(void)
{
    clipl_tokenizer *tok = clipl_tokenizer_load(GOLDEN "bpe_simple_vocab_16e6.txt.gz");
    CHECK(tok != NULL);
    if (!tok) {
        fprintf(stderr, "load: %s\n", clipl_errmsg());
        return check_done("text");
    }
    test_encode_cases(tok);
    test_decode_cases(tok);
    test_api(tok);
    test_threads(tok);
    /* the goldens again with the word cache off: the cache must not change any result */
    clipl_tokenizer_cache_limit(tok, 0);
    test_encode_cases(tok);
    CHECK(clipl_tokenizer_cache_size(tok) == 0);
    clipl_tokenizer_free(tok);
    test_load_errors();
    return check_done("text");
}
