/*
 * test_bpe_train.c - BPE learning (engine/text/bpe_train.c): Sennrich's "low lower newest widest"
 * example with the merge order worked out by hand below, the file format, byte-identical saves,
 * loading the learned file with the tokenizer (every word one token, decode round trip), UTF-8
 * words in the byte-to-unicode alphabet, and the error paths.
 */
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static clipl_bpe_trainer *sennrich(void)
{
    /* word counts of Sennrich et al. (2016), fig. 1: low 5, lower 2, newest 6, widest 3 */
    clipl_bpe_trainer *b = clipl_bpe_trainer_new();
    CHECK(b != NULL);
    CHECK_OK(clipl_bpe_trainer_add(b, "low", 3, 5));
    CHECK_OK(clipl_bpe_trainer_add(b, "Lower  LOWER", 12, 1)); /* cleaned: lowercase, spaces */
    CHECK_OK(clipl_bpe_trainer_add(b, "newest", 6, 6));
    CHECK_OK(clipl_bpe_trainer_add(b, "widest widest widest", 20, 1));
    return b;
}

static void test_sennrich(void)
{
    /* Hand computation. Words as symbols: l o w</w> (5), l o w e r</w> (2), n e w e s t</w> (6),
     * w i d e s t</w> (3). Pair counts: (e,s) 9, (s,t</w>) 9, (w,e) 8, (l,o) 7, (n,e) 6, (e,w) 6,
     * (o,w</w>) 5, (w,i) (i,d) (d,e) 3, (o,w) (e,r</w>) 2.
     *  1. e s        9  tie with (s,t</w>): "e" < "s"
     *  2. es t</w>   9
     *  3. l o        7  ((w,e) fell to 2: newest now has w es)
     *  4. e w        6  ties (n,e) and (w,est</w>): "e" < "n" < "w"
     *  5. ew est</w> 6  tie with (n,ew): "ew" < "n"
     *  6. n ewest</w> 6
     *  7. lo w</w>   5
     *  8. d est</w>  3  ties (i,d), (w,i): "d" < "i" < "w"
     *  9. i dest</w> 3  tie with (w,i): "i" < "w"
     * 10. w idest</w> 3
     * 11. e r</w>    2  ties (lo,w), (w,e): "e" < "lo" < "w"
     * 12. lo w       2  tie with (w,er</w>)
     * 13. low er</w> 2
     * then every word is one symbol and learning stops. */
    static const char *expect[] = {"e s",        "es t</w>",    "l o",      "e w",
                                   "ew est</w>", "n ewest</w>", "lo w</w>", "d est</w>",
                                   "i dest</w>", "w idest</w>", "e r</w>",  "lo w",
                                   "low er</w>"};
    static const int64_t counts[] = {9, 9, 7, 6, 6, 6, 5, 3, 3, 3, 2, 2, 2};
    clipl_bpe_trainer *b = sennrich();
    CHECK(clipl_bpe_trainer_words(b, 1) == 4);
    CHECK(clipl_bpe_trainer_words(b, 0) == 16);
    int n = -1;
    CHECK_OK(clipl_bpe_trainer_learn(b, 100, 1, &n));
    CHECK(n == 13);
    CHECK(clipl_bpe_trainer_merge_count(b) == 13);
    for (int i = 0; i < 13 && i < n; i++) {
        int64_t c = -1;
        const char *m = clipl_bpe_trainer_merge(b, i, &c);
        CHECK(m && strcmp(m, expect[i]) == 0);
        CHECK(c == counts[i]);
        if (!m || strcmp(m, expect[i]) != 0)
            fprintf(stderr, "  merge %d: got '%s', expected '%s'\n", i + 1, m ? m : "(null)",
                    expect[i]);
    }
    CHECK(clipl_bpe_trainer_merge(b, 13, NULL) == NULL);
    CHECK(clipl_bpe_trainer_merge(b, -1, NULL) == NULL);
    clipl_bpe_trainer_free(b);

    /* fewer merges asked: the first ones; min_count stops at the first pair below it */
    b = sennrich();
    CHECK_OK(clipl_bpe_trainer_learn(b, 4, 1, &n));
    CHECK(n == 4 && strcmp(clipl_bpe_trainer_merge(b, 3, NULL), "e w") == 0);
    clipl_bpe_trainer_free(b);
    b = sennrich();
    CHECK_OK(clipl_bpe_trainer_learn(b, 100, 5, &n));
    CHECK(n == 7); /* the 8th merge has count 3 */
    clipl_bpe_trainer_free(b);
}

static char *read_gz(const char *path, size_t *len)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    int r = gzread(f, buf, (unsigned)cap - 1);
    gzclose(f);
    if (r < 0) {
        free(buf);
        return NULL;
    }
    buf[r] = 0;
    *len = (size_t)r;
    return buf;
}

static char *read_raw(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(1 << 16);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

static void test_file_and_tokenizer(void)
{
    char dir[] = "/tmp/clipl_test_bpe_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char p1[128], p2[128], p3[128];
    snprintf(p1, sizeof p1, "%s/a.txt.gz", dir);
    snprintf(p2, sizeof p2, "%s/b.txt.gz", dir);
    snprintf(p3, sizeof p3, "%s/c.txt", dir);
    clipl_bpe_trainer *b = sennrich();
    CHECK_OK(clipl_bpe_trainer_learn(b, 100, 1, NULL));
    CHECK_OK(clipl_bpe_trainer_save(b, p1));
    CHECK_OK(clipl_bpe_trainer_save(b, p3));
    clipl_bpe_trainer_free(b);
    b = sennrich();
    CHECK_OK(clipl_bpe_trainer_learn(b, 100, 1, NULL));
    CHECK_OK(clipl_bpe_trainer_save(b, p2));
    clipl_bpe_trainer_free(b);

    /* byte-identical for the same input; the text is the header and the merges, no final '\n' */
    size_t n1 = 0, n2 = 0, n3 = 0, nt = 0;
    char *f1 = read_raw(p1, &n1), *f2 = read_raw(p2, &n2), *t = read_gz(p1, &nt);
    char *plain = read_raw(p3, &n3);
    CHECK(f1 && f2 && n1 == n2 && memcmp(f1, f2, n1) == 0);
    const char *want = "#version: 0.2\ne s\nes t</w>\nl o\ne w\new est</w>\nn ewest</w>\n"
                       "lo w</w>\nd est</w>\ni dest</w>\nw idest</w>\ne r</w>\nlo w\nlow er</w>";
    CHECK(t && nt == strlen(want) && memcmp(t, want, nt) == 0);
    CHECK(plain && n3 == strlen(want) && memcmp(plain, want, n3) == 0);
    free(f1), free(f2), free(t), free(plain);

    /* the tokenizer reads it: 256 bytes + 256 "</w>" forms + 13 merges + 2 specials; merge i
     * (1-based) has id 511 + i, so each word is the id of the merge that completed it */
    clipl_tokenizer *tok = clipl_tokenizer_load(p1);
    CHECK(tok != NULL);
    if (tok) {
        CHECK(clipl_tokenizer_vocab_size(tok) == 527);
        CHECK(clipl_tokenizer_sot(tok) == 525 && clipl_tokenizer_eot(tok) == 526);
        int32_t ids[16];
        size_t n = 0;
        const char *text = "low lower newest widest";
        CHECK_OK(clipl_tokenizer_encode(tok, text, strlen(text), ids, 16, &n));
        CHECK(n == 4);
        CHECK(ids[0] == 511 + 7 && ids[1] == 511 + 13 && ids[2] == 511 + 6 && ids[3] == 511 + 10);
        char out[64];
        size_t len = 0;
        CHECK_OK(clipl_tokenizer_decode(tok, ids, n, out, sizeof out, &len));
        CHECK(len == strlen(text) + 1 && memcmp(out, "low lower newest widest ", len) == 0);
        /* an unseen word: l o w e s t</w> -> (1) l o w es t</w> -> (2) l o w est</w> ->
         * (3) lo w est</w> -> (12) low est</w>, and no merge joins those two */
        CHECK_OK(clipl_tokenizer_encode(tok, "lowest", 6, ids, 16, &n));
        CHECK(n == 2 && ids[0] == 511 + 12 && ids[1] == 511 + 2);
        clipl_tokenizer_free(tok);
    }
    remove(p1), remove(p2), remove(p3);
    rmdir(dir);
}

static void test_utf8(void)
{
    /* é is bytes C3 A9, spelled U+00C3 U+00A9 in the byte-to-unicode alphabet ("Ã©" in UTF-8) */
    clipl_bpe_trainer *b = clipl_bpe_trainer_new();
    const char *text = "café café naïve";
    CHECK_OK(clipl_bpe_trainer_add(b, text, strlen(text), 1));
    CHECK(clipl_bpe_trainer_words(b, 1) == 2);
    int n = 0;
    CHECK_OK(clipl_bpe_trainer_learn(b, 1000, 1, &n));
    CHECK(n > 0);
    int found = 0;
    for (int i = 0; i < n; i++)
        found |= strstr(clipl_bpe_trainer_merge(b, i, NULL), "\xc3\x83\xc2\xa9</w>") != NULL;
    CHECK(found);
    char path[] = "/tmp/clipl_test_bpe_utf8_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_OK(clipl_bpe_trainer_save(b, path));
    clipl_tokenizer *tok = clipl_tokenizer_load(path);
    CHECK(tok != NULL);
    if (tok) {
        int32_t ids[16];
        size_t k = 0, len = 0;
        CHECK_OK(clipl_tokenizer_encode(tok, text, strlen(text), ids, 16, &k));
        CHECK(k == 3);
        char out[64];
        CHECK_OK(clipl_tokenizer_decode(tok, ids, k, out, sizeof out, &len));
        CHECK(len == strlen(text) + 1 && memcmp(out, "café café naïve ", len) == 0);
        clipl_tokenizer_free(tok);
    }
    remove(path);
    clipl_bpe_trainer_free(b);
}

/* ---- a plain reference: Sennrich's loop over words of symbol strings ------------------------ */

enum { REF_MAX_WORDS = 512, REF_MAX_LEN = 16, REF_SYM = 64 };

typedef struct {
    char text[REF_MAX_LEN + 1];
    char sym[REF_MAX_LEN][REF_SYM];
    int n;
    long count;
} ref_word;

static int ref_cmp_pair(const char *a1, const char *b1, const char *a2, const char *b2)
{
    int c = strcmp(a1, a2); /* byte order; a prefix sorts first */
    return c ? c : strcmp(b1, b2);
}

/* Learns up to max merges from distinct words (lowercase ASCII) with counts, writing "a b"
 * lines; returns the number learned. Every step recounts all pairs from scratch. */
static int ref_learn(ref_word *w, int nw, int max, char (*out)[2 * REF_SYM + 2])
{
    int learned = 0;
    while (learned < max) {
        long best = 0;
        const char *ba = NULL, *bb = NULL;
        for (int i = 0; i < nw; i++)
            for (int k = 0; k + 1 < w[i].n; k++) {
                const char *a = w[i].sym[k], *b = w[i].sym[k + 1];
                long c = 0; /* count of (a, b) over all words */
                for (int j = 0; j < nw; j++)
                    for (int q = 0; q + 1 < w[j].n; q++)
                        if (!strcmp(w[j].sym[q], a) && !strcmp(w[j].sym[q + 1], b))
                            c += w[j].count;
                if (c > best || (c == best && ref_cmp_pair(a, b, ba, bb) < 0))
                    best = c, ba = a, bb = b;
            }
        if (!best)
            break;
        char a[REF_SYM], b[REF_SYM];
        memcpy(a, ba, REF_SYM); /* ba and bb point into a word's symbols, which change below */
        memcpy(b, bb, REF_SYM);
        size_t la = strlen(a), lb = strlen(b);
        if (la + lb >= REF_SYM)
            break; /* cannot happen for words of at most REF_MAX_LEN bytes */
        memcpy(out[learned], a, la);
        out[learned][la] = ' ';
        memcpy(out[learned] + la + 1, b, lb + 1);
        learned++;
        for (int i = 0; i < nw; i++) {
            int o = 0;
            for (int k = 0; k < w[i].n;) {
                if (k + 1 < w[i].n && !strcmp(w[i].sym[k], a) && !strcmp(w[i].sym[k + 1], b)) {
                    char m[REF_SYM];
                    memcpy(m, a, la);
                    memcpy(m + la, b, lb + 1);
                    memcpy(w[i].sym[o++], m, sizeof m);
                    k += 2;
                } else {
                    if (o != k)
                        memcpy(w[i].sym[o], w[i].sym[k], REF_SYM);
                    o++, k++;
                }
            }
            w[i].n = o;
        }
    }
    return learned;
}

static void test_against_reference(void)
{
    /* random words over small alphabets (many ties) and a larger one: the trainer's incremental
     * counts, word lists and heap must pick exactly the merges of the plain loop */
    static ref_word words[REF_MAX_WORDS];
    static char expect[4096][2 * REF_SYM + 2];
    static const char *alphabets[] = {"ab", "abc", "abcdefgh"};
    uint64_t rng = 12345;
    for (int trial = 0; trial < 6; trial++) {
        const char *alpha = alphabets[trial % 3];
        int na = (int)strlen(alpha), nw = 0;
        clipl_bpe_trainer *b = clipl_bpe_trainer_new();
        char text[64];
        for (int attempt = 0; attempt < 300; attempt++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            int len = 1 + (int)((rng >> 33) % 7);
            for (int k = 0; k < len; k++) {
                rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                text[k] = alpha[(rng >> 33) % (uint64_t)na];
            }
            text[len] = 0;
            long count = 1 + (long)((rng >> 40) % 5);
            CHECK_OK(clipl_bpe_trainer_add(b, text, (size_t)len, count));
            int found = -1;
            for (int i = 0; i < nw && found < 0; i++)
                if (!strcmp(words[i].text, text))
                    found = i;
            if (found >= 0) {
                words[found].count += count;
                continue;
            }
            ref_word *x = &words[nw++];
            x->n = len;
            x->count = count;
            memcpy(x->text, text, (size_t)len + 1);
            for (int k = 0; k < len; k++)
                snprintf(x->sym[k], REF_SYM, "%c%s", text[k], k + 1 == len ? "</w>" : "");
        }
        int ne = ref_learn(words, nw, 4096, expect), n = -1;
        CHECK_OK(clipl_bpe_trainer_learn(b, 4096, 1, &n));
        CHECK(n == ne);
        int same = n == ne;
        for (int i = 0; i < n && i < ne; i++)
            same &= strcmp(clipl_bpe_trainer_merge(b, i, NULL), expect[i]) == 0;
        CHECK(same);
        if (!same)
            fprintf(stderr, "  trial %d (alphabet %s): merges differ from the reference\n", trial,
                    alpha);
        clipl_bpe_trainer_free(b);
    }
}

static void test_errors(void)
{
    clipl_bpe_trainer *b = clipl_bpe_trainer_new();
    CHECK_ERR(clipl_bpe_trainer_add(b, "ab\xff", 3, 1), CLIPL_EINVAL,
              "invalid UTF-8 at byte offset 2");
    CHECK_ERR(clipl_bpe_trainer_add(b, "ab", 2, 0), CLIPL_EINVAL, "count must be >= 1");
    CHECK_ERR(clipl_bpe_trainer_add(NULL, "ab", 2, 1), CLIPL_EINVAL, "trainer is NULL");
    CHECK_ERR(clipl_bpe_trainer_add(b, NULL, 2, 1), CLIPL_EINVAL, "text is NULL");
    CHECK_ERR(clipl_bpe_trainer_save(b, "/tmp/x.gz"), CLIPL_EINVAL, "nothing learned yet");
    CHECK_ERR(clipl_bpe_trainer_learn(b, -1, 1, NULL), CLIPL_EINVAL, "n_merges must be >= 0");
    CHECK_OK(clipl_bpe_trainer_add(b, "ab ab", 5, 1));
    CHECK_OK(clipl_bpe_trainer_learn(b, 10, 1, NULL));
    CHECK_ERR(clipl_bpe_trainer_learn(b, 10, 1, NULL), CLIPL_EINVAL, "already learned");
    CHECK_ERR(clipl_bpe_trainer_add(b, "cd", 2, 1), CLIPL_EINVAL, "add text before learn");
    CHECK_ERR(clipl_bpe_trainer_save(b, "/nonexistent/dir/v.txt.gz"), CLIPL_EIO,
              "/nonexistent/dir/v.txt.gz");
    CHECK_ERR(clipl_bpe_trainer_save(b, ""), CLIPL_EINVAL, "path is empty");
    /* empty input learns nothing and still writes a valid (header-only) file */
    clipl_bpe_trainer *e = clipl_bpe_trainer_new();
    int n = -1;
    CHECK_OK(clipl_bpe_trainer_learn(e, 10, 1, &n));
    CHECK(n == 0);
    clipl_bpe_trainer_free(e);
    clipl_bpe_trainer_free(b);
    clipl_bpe_trainer_free(NULL);
}

int main(void)
{
    test_sennrich();
    test_file_and_tokenizer();
    test_utf8();
    test_against_reference();
    test_errors();
    return check_done("bpe_train");
}
