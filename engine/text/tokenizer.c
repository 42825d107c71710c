/*
 * tokenizer.c - CLIP's byte-level BPE (OpenAI's clip/simple_tokenizer.py), over a vocabulary read
 * from OpenAI's merges file (bpe_simple_vocab_16e6.txt.gz) or HuggingFace's vocab.json +
 * merges.txt.
 *
 * Symbols are kept exactly as Python keeps them: strings in the byte-to-unicode alphabet, a word's
 * last symbol carrying the literal suffix "</w>". Every symbol a word can hold is a vocabulary
 * entry, so a word is an array of ids and a merge is a lookup of (id, id) -> (rank, merged id).
 * The word cache maps a pre-token's UTF-8 bytes to its ids; a mutex guards it, so one tokenizer
 * may be used from several threads.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* OpenAI's pre-tokenizer, compiled with PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS. After cleaning,
 * the only whitespace left is " " (every White_Space run became one), so \s is written " ":
 * PCRE2's \s would also match U+180E, which is not White_Space. U+0345 is excluded from the last
 * class because under re.IGNORECASE the `regex` module matches it with neither [\p{L}] nor
 * [^\s\p{L}\p{N}] (it case folds to a letter), so Python drops it. */
const char clipl__pretokenize_pattern[] =
    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|"
    "[\\p{L}]+|[\\p{N}]|[^ \\p{L}\\p{N}\\x{345}]+";
const size_t clipl__pretokenize_pattern_len = sizeof clipl__pretokenize_pattern - 1;

enum { OPENAI_MERGES = 49152 - 256 - 2, DEFAULT_CACHE_LIMIT = 200000 };

/* ---- hash maps ------------------------------------------------------------------------------ */

/* vocabulary string -> id */
typedef struct {
    int32_t *slot; /* id or -1 */
    size_t mask;
} str_map;

/* (id, id) -> (rank, merged id) */
typedef struct {
    uint64_t key;
    int32_t rank, merged;
} pair_entry;

typedef struct {
    pair_entry *slot; /* key UINT64_MAX = empty */
    size_t mask;
} pair_map;

/* word cache */
typedef struct {
    uint64_t hash;
    uint32_t key_off, key_len, ids_off, n_ids; /* key_len UINT32_MAX = empty */
} cache_entry;

struct clipl_tokenizer {
    int32_t n_vocab;
    char **str;        /* id -> symbol string (byte-to-unicode alphabet, UTF-8); NULL if unused */
    uint32_t *str_len; /* its length */
    char **raw;        /* id -> the bytes decode produces ("</w>" kept; removed after decoding) */
    uint32_t *raw_len; /* its length; UINT32_MAX when the symbol has no byte decoding */
    str_map enc;       /* symbol string -> id */
    pair_map ranks;    /* merges */
    int32_t byte_id[256], byte_id_eow[256]; /* initial symbols of a word */
    int32_t sot, eot;
    pcre2_code *re;

    pthread_mutex_t lock; /* guards the cache */
    int lock_ok;          /* lock was initialised */
    cache_entry *cache;
    size_t cache_mask, cache_count;
    char *ckeys;
    size_t ckeys_len, ckeys_cap;
    int32_t *cids;
    size_t cids_len, cids_cap;
    int64_t cache_limit;
};

/* ---- byte <-> unicode (bytes_to_unicode in simple_tokenizer.py) ----------------------------- */

static void bytes_to_unicode(uint32_t byte_cp[256], uint8_t order[256])
{
    int k = 0, n = 0;
    int printable[256] = {0};
    for (int b = '!'; b <= '~'; b++)
        printable[b] = 1;
    for (int b = 0xA1; b <= 0xAC; b++)
        printable[b] = 1;
    for (int b = 0xAE; b <= 0xFF; b++)
        printable[b] = 1;
    for (int b = 0; b < 256; b++)
        if (printable[b]) {
            byte_cp[b] = (uint32_t)b;
            order[k++] = (uint8_t)b;
        }
    for (int b = 0; b < 256; b++)
        if (!printable[b]) {
            byte_cp[b] = (uint32_t)(256 + n++);
            order[k++] = (uint8_t)b;
        }
}

/* ---- vocabulary building -------------------------------------------------------------------- */

static int32_t enc_find(const clipl_tokenizer *t, const char *s, size_t n)
{
    if (!t->enc.slot)
        return -1;
    size_t i = clipl__hash_bytes(s, n) & t->enc.mask;
    for (;;) {
        int32_t id = t->enc.slot[i];
        if (id < 0)
            return -1;
        if (t->str_len[id] == n && memcmp(t->str[id], s, n) == 0)
            return id;
        i = (i + 1) & t->enc.mask;
    }
}

/* Sets t->str[id] (copied) and maps it to id; a string already present maps to the newer id, as
 * Python's dict(zip(vocab, range)) does. */
static int vocab_set(clipl_tokenizer *t, int32_t id, const char *s, size_t n)
{
    char *c = malloc(n + 1);
    if (!c)
        return clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory building the vocabulary");
    memcpy(c, s, n);
    c[n] = '\0';
    free(t->str[id]);
    t->str[id] = c;
    t->str_len[id] = (uint32_t)n;
    size_t i = clipl__hash_bytes(s, n) & t->enc.mask;
    for (;;) {
        int32_t old = t->enc.slot[i];
        if (old < 0) {
            t->enc.slot[i] = id;
            return CLIPL_OK;
        }
        if (t->str_len[old] == n && memcmp(t->str[old], s, n) == 0) {
            t->enc.slot[i] = id;
            return CLIPL_OK;
        }
        i = (i + 1) & t->enc.mask;
    }
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p *= 2;
    return p;
}

static int vocab_alloc(clipl_tokenizer *t, int32_t n_vocab)
{
    t->n_vocab = n_vocab;
    t->str = calloc((size_t)n_vocab, sizeof *t->str);
    t->str_len = calloc((size_t)n_vocab, sizeof *t->str_len);
    t->raw = calloc((size_t)n_vocab, sizeof *t->raw);
    t->raw_len = calloc((size_t)n_vocab, sizeof *t->raw_len);
    t->enc.mask = pow2_at_least((size_t)n_vocab * 2) - 1;
    t->enc.slot = malloc((t->enc.mask + 1) * sizeof *t->enc.slot);
    if (!t->str || !t->str_len || !t->raw || !t->raw_len || !t->enc.slot)
        return clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory for %d vocabulary entries",
                          (int)n_vocab);
    memset(t->enc.slot, 0xFF, (t->enc.mask + 1) * sizeof *t->enc.slot);
    return CLIPL_OK;
}

static int pairs_alloc(clipl_tokenizer *t, size_t n_merges)
{
    t->ranks.mask = pow2_at_least(n_merges * 2) - 1;
    t->ranks.slot = malloc((t->ranks.mask + 1) * sizeof *t->ranks.slot);
    if (!t->ranks.slot)
        return clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory for %zu merges", n_merges);
    for (size_t i = 0; i <= t->ranks.mask; i++)
        t->ranks.slot[i].key = UINT64_MAX;
    return CLIPL_OK;
}

static void pair_set(clipl_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t merged)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = clipl__hash_u64(key) & t->ranks.mask;
    while (t->ranks.slot[i].key != UINT64_MAX && t->ranks.slot[i].key != key)
        i = (i + 1) & t->ranks.mask;
    t->ranks.slot[i].key = key;
    t->ranks.slot[i].rank = rank;
    t->ranks.slot[i].merged = merged;
}

static const pair_entry *pair_get(const clipl_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = clipl__hash_u64(key) & t->ranks.mask;
    for (;;) {
        const pair_entry *e = &t->ranks.slot[i];
        if (e->key == key)
            return e;
        if (e->key == UINT64_MAX)
            return NULL;
        i = (i + 1) & t->ranks.mask;
    }
}

/* Fills raw[] (the byte decoding of every symbol), byte_id[], sot/eot and compiles the regex. */
static int finish(clipl_tokenizer *t, const char *what)
{
    uint32_t byte_cp[256];
    uint8_t order[256];
    int16_t cp_byte[512];
    bytes_to_unicode(byte_cp, order);
    for (int i = 0; i < 512; i++)
        cp_byte[i] = -1;
    for (int b = 0; b < 256; b++)
        cp_byte[byte_cp[b]] = (int16_t)b;

    for (int32_t id = 0; id < t->n_vocab; id++) {
        t->raw_len[id] = UINT32_MAX;
        if (!t->str[id])
            continue;
        const char *s = t->str[id];
        size_t n = t->str_len[id];
        char *r = malloc(n + 1);
        if (!r)
            return clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory");
        size_t k = 0, i = 0;
        int ok = 1;
        while (i < n) {
            unsigned c = (unsigned char)s[i];
            uint32_t cp;
            if (c < 0x80) {
                cp = c;
                i++;
            } else if ((c & 0xE0) == 0xC0 && i + 1 < n) {
                cp = ((c & 0x1F) << 6) | ((unsigned char)s[i + 1] & 0x3F);
                i += 2;
            } else {
                ok = 0;
                break;
            }
            if (cp >= 512 || cp_byte[cp] < 0) {
                ok = 0;
                break;
            }
            r[k++] = (char)cp_byte[cp];
        }
        if (!ok) {
            free(r);
            continue;
        }
        t->raw[id] = r;
        t->raw_len[id] = (uint32_t)k;
    }

    for (int b = 0; b < 256; b++) {
        char s[8];
        int n = clipl__utf8_put(s, byte_cp[b]);
        t->byte_id[b] = enc_find(t, s, (size_t)n);
        memcpy(s + n, "</w>", 4);
        t->byte_id_eow[b] = enc_find(t, s, (size_t)n + 4);
    }
    t->sot = enc_find(t, "<|startoftext|>", 15);
    t->eot = enc_find(t, "<|endoftext|>", 13);
    if (t->sot < 0 || t->eot < 0)
        return clipl__err(CLIPL_EFORMAT, "tokenizer: %s has no <|startoftext|> / <|endoftext|>",
                          what);

    int e;
    PCRE2_SIZE off;
    t->re =
        pcre2_compile((PCRE2_SPTR)clipl__pretokenize_pattern, sizeof clipl__pretokenize_pattern - 1,
                      PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &e, &off, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(e, msg, sizeof msg);
        return clipl__err(CLIPL_EUNSUPPORTED, "tokenizer: PCRE2 cannot compile the pattern: %s",
                          (const char *)msg);
    }
    pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter on failure */

    t->cache_limit = DEFAULT_CACHE_LIMIT;
    if (pthread_mutex_init(&t->lock, NULL) != 0)
        return clipl__err(CLIPL_ENOMEM, "tokenizer: cannot create the cache mutex");
    t->lock_ok = 1;
    return CLIPL_OK;
}

static clipl_tokenizer *tok_new(void)
{
    clipl_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory");
    return t;
}

static void tok_free_tables(clipl_tokenizer *t)
{
    for (int32_t i = 0; t->str && i < t->n_vocab; i++)
        free(t->str[i]);
    for (int32_t i = 0; t->raw && i < t->n_vocab; i++)
        free(t->raw[i]);
    free(t->str);
    free(t->str_len);
    free(t->raw);
    free(t->raw_len);
    free(t->enc.slot);
    free(t->ranks.slot);
    if (t->re)
        pcre2_code_free(t->re);
    free(t->cache);
    free(t->ckeys);
    free(t->cids);
}

void clipl_tokenizer_free(clipl_tokenizer *tok)
{
    if (!tok)
        return;
    if (tok->lock_ok)
        pthread_mutex_destroy(&tok->lock);
    tok_free_tables(tok);
    free(tok);
}

/* Reads a whole file, gunzipping when it is gzip (zlib reads plain files transparently). */
static int read_file(const char *path, const char *what, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!path)
        return clipl__err(CLIPL_EINVAL, "tokenizer: %s path is NULL", what);
    FILE *probe = fopen(path, "rb");
    if (!probe)
        return clipl__err(CLIPL_EIO, "tokenizer: cannot open %s '%s': %s", what, path,
                          strerror(errno));
    fclose(probe);
    gzFile f = gzopen(path, "rb");
    if (!f)
        return clipl__err(CLIPL_EIO, "tokenizer: cannot open %s '%s'", what, path);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        gzclose(f);
        return clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory reading '%s'", path);
    }
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                gzclose(f);
                return clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory reading '%s'", path);
            }
            buf = nb;
            cap *= 2;
        }
        int r = gzread(f, buf + n, (unsigned)(cap - n));
        if (r < 0) {
            int zerr;
            const char *m = gzerror(f, &zerr);
            free(buf);
            gzclose(f);
            return clipl__err(CLIPL_EFORMAT, "tokenizer: cannot read %s '%s': %s", what, path, m);
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    gzclose(f);
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return CLIPL_OK;
}

/* Splits a merges line into its two symbols (Python's str.split() on ASCII whitespace). Returns
 * the number of parts found (only 2 is valid). */
static int split_merge(const char *s, size_t n, const char **a, size_t *an, const char **b,
                       size_t *bn)
{
    int parts = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n &&
               (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\v' || s[i] == '\f'))
            i++;
        if (i == n)
            break;
        size_t st = i;
        while (i < n &&
               !(s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\v' || s[i] == '\f'))
            i++;
        if (parts == 0) {
            *a = s + st;
            *an = i - st;
        } else if (parts == 1) {
            *b = s + st;
            *bn = i - st;
        }
        parts++;
    }
    return parts;
}

typedef struct {
    const char *a, *b;
    size_t an, bn;
    size_t line;
} merge_line;

/* Collects up to max merges from text, skipping the first line when skip_first (OpenAI's file has
 * a version line; HuggingFace's starts with "#version"). */
static int parse_merges(const char *text, size_t len, const char *path, int skip_first, size_t max,
                        merge_line **out, size_t *n_out)
{
    merge_line *m = malloc((max ? max : 1) * sizeof *m);
    if (!m)
        return clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory");
    size_t n = 0, line = 0, i = 0;
    while (i <= len && n < max) {
        size_t e = i;
        while (e < len && text[e] != '\n')
            e++;
        line++;
        if (!(skip_first && line == 1)) {
            merge_line *ml = &m[n];
            int parts = split_merge(text + i, e - i, &ml->a, &ml->an, &ml->b, &ml->bn);
            if (parts == 0 && e >= len)
                break; /* end of file */
            if (parts != 2) {
                free(m);
                return clipl__err(CLIPL_EFORMAT,
                                  "tokenizer: '%s' line %zu: expected two symbols separated by a "
                                  "space, found %d",
                                  path, line, parts);
            }
            ml->line = line;
            n++;
        }
        i = e + 1;
    }
    *out = m;
    *n_out = n;
    return CLIPL_OK;
}

/* Registers the merges: each pair gets its rank and the id of its joined string. */
static int add_merges(clipl_tokenizer *t, const merge_line *m, size_t n, const char *path)
{
    if (pairs_alloc(t, n))
        return clipl_errcode();
    char buf[1024];
    for (size_t r = 0; r < n; r++) {
        int32_t a = enc_find(t, m[r].a, m[r].an), b = enc_find(t, m[r].b, m[r].bn);
        if (m[r].an + m[r].bn > sizeof buf)
            return clipl__err(CLIPL_EFORMAT, "tokenizer: '%s' line %zu: symbol too long", path,
                              m[r].line);
        memcpy(buf, m[r].a, m[r].an);
        memcpy(buf + m[r].an, m[r].b, m[r].bn);
        int32_t j = enc_find(t, buf, m[r].an + m[r].bn);
        if (j < 0)
            return clipl__err(CLIPL_EFORMAT,
                              "tokenizer: '%s' line %zu: merged symbol '%.*s' is not in the "
                              "vocabulary",
                              path, m[r].line, (int)(m[r].an + m[r].bn), buf);
        if (a < 0 || b < 0)
            continue; /* a pair that no word can contain */
        pair_set(t, a, b, (int32_t)r, j);
    }
    return CLIPL_OK;
}

clipl_tokenizer *clipl_tokenizer_load(const char *path)
{
    char *text = NULL;
    size_t len;
    merge_line *m = NULL;
    size_t n_merges = 0;
    clipl_tokenizer *t = NULL;
    if (read_file(path, "merges file", &text, &len))
        goto fail;
    if (clipl__utf8_check(text, len) != len) {
        clipl__err(CLIPL_EFORMAT, "tokenizer: '%s' is not UTF-8 text (bad byte at offset %zu)",
                   path, clipl__utf8_check(text, len));
        goto fail;
    }
    /* simple_tokenizer.py: merges = lines[1 : 49152 - 256 - 2 + 1]; a file with fewer merges
     * (a vocabulary learned by clipl_bpe_trainer) gives a smaller vocabulary, as in Python. */
    if (parse_merges(text, len, path, 1, OPENAI_MERGES, &m, &n_merges))
        goto fail;
    if (!(t = tok_new()))
        goto fail;
    if (vocab_alloc(t, (int32_t)(512 + n_merges + 2)))
        goto fail;
    uint32_t byte_cp[256];
    uint8_t order[256];
    bytes_to_unicode(byte_cp, order);
    int32_t id = 0;
    for (int eow = 0; eow < 2; eow++)
        for (int k = 0; k < 256; k++) {
            char s[8];
            int n = clipl__utf8_put(s, byte_cp[order[k]]);
            if (eow) {
                memcpy(s + n, "</w>", 4);
                n += 4;
            }
            if (vocab_set(t, id++, s, (size_t)n))
                goto fail;
        }
    for (size_t r = 0; r < n_merges; r++) {
        char buf[1024];
        if (m[r].an + m[r].bn > sizeof buf) {
            clipl__err(CLIPL_EFORMAT, "tokenizer: '%s' line %zu: symbol too long", path, m[r].line);
            goto fail;
        }
        memcpy(buf, m[r].a, m[r].an);
        memcpy(buf + m[r].an, m[r].b, m[r].bn);
        if (vocab_set(t, id++, buf, m[r].an + m[r].bn))
            goto fail;
    }
    if (vocab_set(t, id++, "<|startoftext|>", 15) || vocab_set(t, id++, "<|endoftext|>", 13))
        goto fail;
    if (add_merges(t, m, n_merges, path) || finish(t, path))
        goto fail;
    free(m);
    free(text);
    return t;
fail:
    free(m);
    free(text);
    clipl_tokenizer_free(t);
    return NULL;
}

clipl_tokenizer *clipl_tokenizer_load_hf(const char *vocab_json_path, const char *merges_path)
{
    char *vtext = NULL, *mtext = NULL;
    size_t vlen, mlen;
    cJSON *root = NULL;
    merge_line *m = NULL;
    size_t n_merges = 0;
    clipl_tokenizer *t = NULL;
    if (read_file(vocab_json_path, "vocab.json", &vtext, &vlen) ||
        read_file(merges_path, "merges.txt", &mtext, &mlen))
        goto fail;
    root = cJSON_ParseWithLength(vtext, vlen);
    if (!root || !cJSON_IsObject(root)) {
        clipl__err(CLIPL_EFORMAT, "tokenizer: '%s' is not a JSON object of token -> id",
                   vocab_json_path);
        goto fail;
    }
    int64_t max_id = -1;
    for (cJSON *it = root->child; it; it = it->next) {
        if (!cJSON_IsNumber(it) || !it->string || it->valuedouble < 0 || it->valuedouble > 1e7 ||
            it->valuedouble != (double)(int64_t)it->valuedouble) {
            clipl__err(CLIPL_EFORMAT, "tokenizer: '%s': entry '%.60s' is not a token id",
                       vocab_json_path, it->string ? it->string : "?");
            goto fail;
        }
        if ((int64_t)it->valuedouble > max_id)
            max_id = (int64_t)it->valuedouble;
    }
    if (max_id < 0) {
        clipl__err(CLIPL_EFORMAT, "tokenizer: '%s' has no tokens", vocab_json_path);
        goto fail;
    }
    if (!(t = tok_new()) || vocab_alloc(t, (int32_t)(max_id + 1)))
        goto fail;
    for (cJSON *it = root->child; it; it = it->next)
        if (vocab_set(t, (int32_t)it->valuedouble, it->string, strlen(it->string)))
            goto fail;
    /* HuggingFace's CLIPTokenizer: merges = lines[1 : 49152 - 256 - 2 + 1] */
    int skip = mlen >= 8 && memcmp(mtext, "#version", 8) == 0;
    if (parse_merges(mtext, mlen, merges_path, skip, OPENAI_MERGES, &m, &n_merges) ||
        add_merges(t, m, n_merges, merges_path) || finish(t, vocab_json_path))
        goto fail;
    cJSON_Delete(root);
    free(m);
    free(vtext);
    free(mtext);
    return t;
fail:
    cJSON_Delete(root);
    free(m);
    free(vtext);
    free(mtext);
    clipl_tokenizer_free(t);
    return NULL;
}

int32_t clipl_tokenizer_vocab_size(const clipl_tokenizer *tok) { return tok ? tok->n_vocab : 0; }
int32_t clipl_tokenizer_sot(const clipl_tokenizer *tok) { return tok ? tok->sot : -1; }
int32_t clipl_tokenizer_eot(const clipl_tokenizer *tok) { return tok ? tok->eot : -1; }

int32_t clipl_tokenizer_token_id(const clipl_tokenizer *tok, const char *token, size_t len)
{
    if (!tok || !token)
        return -1;
    return enc_find(tok, token, len);
}

/* ---- growable id vector --------------------------------------------------------------------- */

typedef struct {
    int32_t *p;
    size_t n, cap;
} ivec;

static int ivec_reserve(ivec *v, size_t extra)
{
    if (v->n + extra <= v->cap)
        return CLIPL_OK;
    int32_t *p = clipl__grow(v->p, &v->cap, v->n + extra, sizeof *p, 64);
    if (!p)
        return clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory (%zu ids)", v->n + extra);
    v->p = p;
    return CLIPL_OK;
}

/* ---- word cache ----------------------------------------------------------------------------- */

static void cache_reset(clipl_tokenizer *t)
{
    free(t->cache);
    t->cache = NULL;
    t->cache_mask = 0;
    t->cache_count = 0;
    t->ckeys_len = 0;
    t->cids_len = 0;
}

/* Appends the cached ids of key to out. Returns 1 when found. Caller holds the lock. */
static int cache_get(clipl_tokenizer *t, uint64_t h, const char *key, size_t n, ivec *out)
{
    if (!t->cache)
        return 0;
    size_t i = h & t->cache_mask;
    for (;;) {
        const cache_entry *e = &t->cache[i];
        if (e->key_len == UINT32_MAX)
            return 0;
        if (e->hash == h && e->key_len == n && memcmp(t->ckeys + e->key_off, key, n) == 0) {
            if (ivec_reserve(out, e->n_ids))
                return -1;
            memcpy(out->p + out->n, t->cids + e->ids_off, e->n_ids * sizeof(int32_t));
            out->n += e->n_ids;
            return 1;
        }
        i = (i + 1) & t->cache_mask;
    }
}

/* Adds key -> ids. Best effort: a failed allocation only means no caching. Caller holds the
 * lock. */
static void cache_put(clipl_tokenizer *t, uint64_t h, const char *key, size_t n, const int32_t *ids,
                      size_t n_ids)
{
    if (t->cache_limit <= 0 || n > 4096)
        return;
    if ((int64_t)t->cache_count >= t->cache_limit)
        cache_reset(t);
    if (!t->cache || (t->cache_count + 1) * 2 > t->cache_mask + 1) {
        size_t cap = t->cache ? (t->cache_mask + 1) * 2 : 1024;
        cache_entry *nc = malloc(cap * sizeof *nc);
        if (!nc)
            return;
        for (size_t i = 0; i < cap; i++)
            nc[i].key_len = UINT32_MAX;
        for (size_t i = 0; t->cache && i <= t->cache_mask; i++) {
            cache_entry e = t->cache[i];
            if (e.key_len == UINT32_MAX)
                continue;
            size_t j = e.hash & (cap - 1);
            while (nc[j].key_len != UINT32_MAX)
                j = (j + 1) & (cap - 1);
            nc[j] = e;
        }
        free(t->cache);
        t->cache = nc;
        t->cache_mask = cap - 1;
    }
    char *nk = clipl__grow(t->ckeys, &t->ckeys_cap, t->ckeys_len + n, 1, 4096);
    if (!nk)
        return;
    t->ckeys = nk;
    int32_t *ni = clipl__grow(t->cids, &t->cids_cap, t->cids_len + n_ids, sizeof(int32_t), 4096);
    if (!ni)
        return;
    t->cids = ni;
    size_t i = h & t->cache_mask;
    while (t->cache[i].key_len != UINT32_MAX)
        i = (i + 1) & t->cache_mask;
    cache_entry *e = &t->cache[i];
    e->hash = h;
    e->key_off = (uint32_t)t->ckeys_len;
    e->key_len = (uint32_t)n;
    e->ids_off = (uint32_t)t->cids_len;
    e->n_ids = (uint32_t)n_ids;
    memcpy(t->ckeys + t->ckeys_len, key, n);
    t->ckeys_len += n;
    memcpy(t->cids + t->cids_len, ids, n_ids * sizeof(int32_t));
    t->cids_len += n_ids;
    t->cache_count++;
    if (t->ckeys_len > ((size_t)1 << 31) || t->cids_len > ((size_t)1 << 29))
        cache_reset(t);
}

int64_t clipl_tokenizer_cache_size(clipl_tokenizer *tok)
{
    if (!tok)
        return 0;
    pthread_mutex_lock(&tok->lock);
    int64_t n = (int64_t)tok->cache_count;
    pthread_mutex_unlock(&tok->lock);
    return n;
}

void clipl_tokenizer_cache_clear(clipl_tokenizer *tok)
{
    if (!tok)
        return;
    pthread_mutex_lock(&tok->lock);
    cache_reset(tok);
    pthread_mutex_unlock(&tok->lock);
}

void clipl_tokenizer_cache_limit(clipl_tokenizer *tok, int64_t max_entries)
{
    if (!tok)
        return;
    pthread_mutex_lock(&tok->lock);
    tok->cache_limit = max_entries;
    if (max_entries <= 0 || (int64_t)tok->cache_count > max_entries)
        cache_reset(tok);
    pthread_mutex_unlock(&tok->lock);
}

/* ---- BPE ------------------------------------------------------------------------------------ */

/* Words up to this many bytes use the plain quadratic loop of simple_tokenizer.py; longer ones the
 * heap below, which makes the same merges in O(n log n). */
enum { BPE_HEAP_MIN = 48 }; /* measured: the heap costs more below this */

/* The quadratic loop: repeatedly merge every occurrence of the lowest-ranked adjacent pair, left
 * to right. w holds n ids; returns the new length. */
static size_t bpe_plain(const clipl_tokenizer *t, int32_t *w, size_t n)
{
    size_t m = n;
    while (m > 1) {
        int32_t best = INT32_MAX, a = -1, b = -1, merged = -1;
        for (size_t i = 0; i + 1 < m; i++) {
            const pair_entry *e = pair_get(t, w[i], w[i + 1]);
            if (e && e->rank < best) {
                best = e->rank;
                a = w[i];
                b = w[i + 1];
                merged = e->merged;
            }
        }
        if (merged < 0)
            break;
        size_t k = 0;
        for (size_t i = 0; i < m;) {
            if (i + 1 < m && w[i] == a && w[i + 1] == b) {
                w[k++] = merged;
                i += 2;
            } else {
                w[k++] = w[i++];
            }
        }
        m = k;
    }
    return m;
}

/* A heap entry: the pair (a, b) starting at symbol pos, of the given rank. */
typedef struct {
    int32_t rank, pos, a, b;
} bpe_cand;

static int cand_less(const bpe_cand *x, const bpe_cand *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(bpe_cand *h, size_t *n, bpe_cand c)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static bpe_cand heap_pop(bpe_cand *h, size_t *n)
{
    bpe_cand top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const bpe_cand *best = &last;
        if (l < *n && cand_less(&h[l], best)) {
            m = l;
            best = &h[l];
        }
        if (r < *n && cand_less(&h[r], best))
            m = r;
        if (m == i)
            break;
        h[i] = h[m];
        i = m;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

/* The same merges with a heap ordered by (rank, position) over a linked list of symbols. Python
 * merges all occurrences of the best pair in one left-to-right pass before it looks at the pairs
 * that pass created, so a round pops every candidate of one rank first and only then pushes the
 * new neighbours' pairs: this stays exact even for merge tables whose ranks are not in the order a
 * trained BPE gives. Returns the new length (ids compacted into w) or (size_t)-1 on ENOMEM. */
static size_t bpe_heap(const clipl_tokenizer *t, int32_t *w, size_t n)
{
    int32_t *next = malloc(n * sizeof *next), *prev = malloc(n * sizeof *prev);
    int32_t *done = malloc(n * sizeof *done);
    size_t hcap = 2 * n + 4, hn = 0, nd;
    bpe_cand *h = malloc(hcap * sizeof *h);
    size_t m = (size_t)-1;
    if (!next || !prev || !done || !h)
        goto out;
    for (size_t i = 0; i < n; i++) {
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        prev[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        const pair_entry *e = pair_get(t, w[i], w[i + 1]);
        if (e)
            heap_push(h, &hn, (bpe_cand){e->rank, (int32_t)i, w[i], w[i + 1]});
    }
    while (hn > 0) {
        int32_t rank = h[0].rank;
        nd = 0;
        while (hn > 0 && h[0].rank == rank) {
            bpe_cand c = heap_pop(h, &hn);
            int32_t q = next[c.pos];
            if (w[c.pos] != c.a || q < 0 || w[q] != c.b)
                continue; /* stale: a symbol changed since it was pushed */
            w[c.pos] = pair_get(t, c.a, c.b)->merged;
            next[c.pos] = next[q];
            if (next[q] >= 0)
                prev[next[q]] = c.pos;
            w[q] = -1;
            done[nd++] = c.pos;
        }
        for (size_t k = 0; k < nd; k++) {
            int32_t p = done[k];
            if (w[p] < 0)
                continue;
            if (hn + 2 > hcap) {
                bpe_cand *nh = realloc(h, 2 * hcap * sizeof *h);
                if (!nh)
                    goto out;
                h = nh;
                hcap *= 2;
            }
            if (prev[p] >= 0) {
                const pair_entry *e = pair_get(t, w[prev[p]], w[p]);
                if (e)
                    heap_push(h, &hn, (bpe_cand){e->rank, prev[p], w[prev[p]], w[p]});
            }
            if (next[p] >= 0) {
                const pair_entry *e = pair_get(t, w[p], w[next[p]]);
                if (e)
                    heap_push(h, &hn, (bpe_cand){e->rank, p, w[p], w[next[p]]});
            }
        }
    }
    m = 0;
    for (int32_t i = 0; i >= 0; i = next[i])
        w[m++] = w[i];
out:
    free(next);
    free(prev);
    free(done);
    free(h);
    return m;
}

/* SimpleTokenizer.bpe on one pre-token (its UTF-8 bytes): appends the ids to out. */
static int bpe_word(const clipl_tokenizer *t, const unsigned char *s, size_t n, ivec *out)
{
    int32_t small[64];
    int32_t *w = n <= 64 ? small : malloc(n * sizeof *w);
    if (!w)
        return clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory for a %zu-byte word", n);
    for (size_t i = 0; i < n; i++) {
        w[i] = i + 1 < n ? t->byte_id[s[i]] : t->byte_id_eow[s[i]];
        if (w[i] < 0) {
            if (w != small)
                free(w);
            return clipl__err(CLIPL_EFORMAT,
                              "tokenizer: the vocabulary has no symbol for byte 0x%02x", s[i]);
        }
    }
    size_t m = n < BPE_HEAP_MIN ? bpe_plain(t, w, n) : bpe_heap(t, w, n);
    int rc = m == (size_t)-1
                 ? clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory for a %zu-byte word", n)
                 : ivec_reserve(out, m);
    if (!rc) {
        memcpy(out->p + out->n, w, m * sizeof *w);
        out->n += m;
    }
    if (w != small)
        free(w);
    return rc;
}

/* Encodes text (appending to out). */
static int encode(clipl_tokenizer *t, const char *text, size_t len, ivec *out, const char *op)
{
    if (!t)
        return clipl__err(CLIPL_EINVAL, "%s: tokenizer is NULL", op);
    if (!text && len > 0)
        return clipl__err(CLIPL_EINVAL, "%s: text is NULL", op);
    char *clean = NULL;
    size_t clen = 0;
    pcre2_match_data *md = NULL;
    int rc = clipl__text_clean_input(op, text, len, &clean, &clen);
    if (rc)
        return rc;
    md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!md) {
        rc = clipl__err(CLIPL_ENOMEM, "%s: out of memory", op);
        goto done;
    }
    size_t pos = 0;
    while (pos < clen) {
        int r = pcre2_match(t->re, (PCRE2_SPTR)clean, clen, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (r == PCRE2_ERROR_NOMATCH)
            break;
        if (r < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(r, msg, sizeof msg);
            rc =
                clipl__err(CLIPL_EUNSUPPORTED, "%s: PCRE2 match failed: %s", op, (const char *)msg);
            goto done;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t s = ov[0], e = ov[1];
        if (e <= s) { /* the pattern cannot match empty; be safe anyway */
            pos = s + 1;
            continue;
        }
        pos = e;
        const char *tokp = clean + s;
        size_t n = e - s;
        if (n == 15 && memcmp(tokp, "<|startoftext|>", 15) == 0) {
            if ((rc = ivec_reserve(out, 1)))
                goto done;
            out->p[out->n++] = t->sot;
            continue;
        }
        if (n == 13 && memcmp(tokp, "<|endoftext|>", 13) == 0) {
            if ((rc = ivec_reserve(out, 1)))
                goto done;
            out->p[out->n++] = t->eot;
            continue;
        }
        uint64_t h = clipl__hash_bytes(tokp, n);
        pthread_mutex_lock(&t->lock);
        int hit = cache_get(t, h, tokp, n, out);
        pthread_mutex_unlock(&t->lock);
        if (hit < 0) {
            rc = clipl_errcode();
            goto done;
        }
        if (hit)
            continue;
        size_t before = out->n;
        if ((rc = bpe_word(t, (const unsigned char *)tokp, n, out)))
            goto done;
        pthread_mutex_lock(&t->lock);
        cache_put(t, h, tokp, n, out->p + before, out->n - before);
        pthread_mutex_unlock(&t->lock);
    }
done:
    if (md)
        pcre2_match_data_free(md);
    free(clean);
    return rc;
}

int clipl_tokenizer_encode(clipl_tokenizer *tok, const char *text, size_t len, int32_t *ids,
                           size_t cap, size_t *n)
{
    ivec v = {0};
    if (!n)
        return clipl__err(CLIPL_EINVAL, "tokenizer_encode: n is NULL");
    *n = 0;
    int rc = encode(tok, text, len, &v, "tokenizer_encode");
    if (!rc) {
        *n = v.n;
        if (ids && v.n && cap)
            memcpy(ids, v.p, (v.n < cap ? v.n : cap) * sizeof *ids);
    }
    free(v.p);
    return rc;
}

/* Writes min(len, cap) bytes of s to out and sets *out_len. */
static void put_out(const char *s, size_t len, char *out, size_t cap, size_t *out_len)
{
    *out_len = len;
    if (out && cap && len)
        memcpy(out, s, len < cap ? len : cap);
}

int clipl_tokenizer_decode(const clipl_tokenizer *tok, const int32_t *ids, size_t n, char *out,
                           size_t cap, size_t *len)
{
    if (!len)
        return clipl__err(CLIPL_EINVAL, "tokenizer_decode: len is NULL");
    *len = 0;
    if (!tok)
        return clipl__err(CLIPL_EINVAL, "tokenizer_decode: tokenizer is NULL");
    if (!ids && n > 0)
        return clipl__err(CLIPL_EINVAL, "tokenizer_decode: ids is NULL");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n_vocab || tok->raw_len[ids[i]] == UINT32_MAX)
            return clipl__err(CLIPL_EINDEX,
                              "tokenizer_decode: id %d (at position %zu) is not in the vocabulary "
                              "of %d ids",
                              (int)ids[i], i, (int)tok->n_vocab);
        total += tok->raw_len[ids[i]];
    }
    char *bytes = malloc(total + 1);
    if (!bytes)
        return clipl__err(CLIPL_ENOMEM, "tokenizer_decode: out of memory (%zu bytes)", total);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(bytes + k, tok->raw[ids[i]], tok->raw_len[ids[i]]);
        k += tok->raw_len[ids[i]];
    }
    char *text = NULL;
    size_t tl = 0;
    int rc = clipl__utf8_decode_replace(bytes, k, &text, &tl);
    free(bytes);
    if (rc)
        return rc;
    /* .replace('</w>', ' ') */
    size_t w = 0;
    for (size_t r = 0; r < tl;) {
        if (r + 4 <= tl && memcmp(text + r, "</w>", 4) == 0) {
            text[w++] = ' ';
            r += 4;
        } else {
            text[w++] = text[r++];
        }
    }
    put_out(text, w, out, cap, len);
    free(text);
    return CLIPL_OK;
}

int clipl_tokenizer_clean(const clipl_tokenizer *tok, const char *text, size_t len, char *out,
                          size_t cap, size_t *out_len)
{
    if (!out_len)
        return clipl__err(CLIPL_EINVAL, "tokenizer_clean: out_len is NULL");
    *out_len = 0;
    if (!text && len > 0)
        return clipl__err(CLIPL_EINVAL, "tokenizer_clean: text is NULL");
    char *clean = NULL;
    size_t clen = 0;
    int rc = clipl__text_clean_input("tokenizer_clean", text, len, &clean, &clen);
    if (rc)
        return rc;
    put_out(clean, clen, out, cap, out_len);
    free(clean);
    return CLIPL_OK;
}

/* A short, printable excerpt of a text for error messages (cut at a UTF-8 boundary). */
static void excerpt(char *buf, size_t size, const char *text, size_t len)
{
    size_t n = len < size - 4 ? len : size - 4;
    while (n > 0 && n < len && ((unsigned char)text[n] & 0xC0) == 0x80)
        n--;
    memcpy(buf, text, n);
    strcpy(buf + n, n < len ? "..." : "");
}

int clipl_tokenizer_tokenize(clipl_tokenizer *tok, int n_texts, const char *const *texts,
                             const size_t *lens, clipl_tensor **dst, int context_length,
                             int truncate)
{
    if (!dst)
        return clipl__err(CLIPL_EINVAL, "tokenize: dst is NULL");
    *dst = NULL;
    if (!tok)
        return clipl__err(CLIPL_EINVAL, "tokenize: tokenizer is NULL");
    if (n_texts < 0 || (n_texts > 0 && (!texts || !lens)))
        return clipl__err(CLIPL_EINVAL, "tokenize: bad text list (n_texts %d)", n_texts);
    if (context_length < 1)
        return clipl__err(CLIPL_EINVAL, "tokenize: context_length must be >= 1, got %d",
                          context_length);
    int64_t shape[2] = {n_texts, context_length};
    clipl_tensor *t = clipl_tensor_zeros(CLIPL_I32, 2, shape);
    if (!t)
        return clipl__err_prefix("tokenize");
    ivec v = {0};
    int rc = CLIPL_OK;
    int32_t *rows = t->ptr;
    for (int i = 0; i < n_texts; i++) {
        if (clipl__should_stop()) {
            rc = clipl__err(CLIPL_EINTERRUPTED, "tokenize: interrupted at text %d", i + 1);
            goto fail;
        }
        v.n = 0;
        if ((rc = ivec_reserve(&v, 1)))
            goto fail;
        v.p[v.n++] = tok->sot;
        char what[64];
        snprintf(what, sizeof what, "tokenize: text %d", i + 1);
        if ((rc = encode(tok, texts[i], lens[i], &v, what)))
            goto fail;
        if ((rc = ivec_reserve(&v, 1)))
            goto fail;
        v.p[v.n++] = tok->eot;
        size_t n = v.n;
        if (n > (size_t)context_length) {
            if (!truncate) {
                char ex[80];
                excerpt(ex, sizeof ex, texts[i], lens[i]);
                rc = clipl__err(CLIPL_ESHAPE,
                                "tokenize: input %d \"%s\" is too long for context length %d "
                                "(%zu tokens with start and end; set truncate to cut it)",
                                i + 1, ex, context_length, n);
                goto fail;
            }
            n = (size_t)context_length;
            v.p[n - 1] = tok->eot;
        }
        memcpy(rows + (size_t)i * (size_t)context_length, v.p, n * sizeof(int32_t));
    }
    free(v.p);
    *dst = t;
    return CLIPL_OK;
fail:
    free(v.p);
    clipl_tensor_release(t);
    return rc;
}
