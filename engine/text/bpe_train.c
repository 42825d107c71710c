/*
 * bpe_train.c - learning a byte-level BPE vocabulary (Sennrich et al. 2016, with OpenAI CLIP's
 * byte-to-unicode symbols and `</w>` word ends), written in the format of OpenAI's
 * bpe_simple_vocab_16e6.txt.gz so that clipl_tokenizer_load reads it.
 *
 * Words are the pre-tokens of the cleaned text (clipl__text_clean, then the tokenizer's regex),
 * counted. Each word is an array of symbol ids; symbols are interned strings. A step counts every
 * adjacent pair over all words (weighted by word frequency; kept up to date incrementally), takes
 * the most frequent one (ties: smaller first symbol, then smaller second symbol, in byte order),
 * and replaces its occurrences left to right in every word, as SimpleTokenizer.bpe applies it.
 * Cost per merge is linear in the number of pairs and in the symbols of the words that hold it.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* The tokenizer's pre-tokenizer (engine/text/tokenizer.c, PATTERN): keep the two identical. The
 * spec checks that the tokenizer encodes each learned word as one token, which fails if they
 * differ. */
static const char PATTERN[] = "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|"
                              "[\\p{L}]+|[\\p{N}]|[^ \\p{L}\\p{N}\\x{345}]+";

/* ---- interned strings: string -> id ------------------------------------------------------ */

typedef struct {
    char **s;
    uint32_t *len;
    int64_t *count; /* per string payload (word counts) */
    int32_t n, cap;
    int32_t *slot; /* hash table of ids, -1 empty */
    size_t mask;
} strtab;

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static void strtab_free(strtab *t)
{
    for (int32_t i = 0; i < t->n; i++)
        free(t->s[i]);
    free(t->s);
    free(t->len);
    free(t->count);
    free(t->slot);
    memset(t, 0, sizeof *t);
}

static int strtab_rehash(strtab *t, size_t nslots)
{
    int32_t *slot = malloc(nslots * sizeof *slot);
    if (!slot)
        return -1;
    for (size_t i = 0; i < nslots; i++)
        slot[i] = -1;
    for (int32_t id = 0; id < t->n; id++) {
        size_t j = hash_bytes(t->s[id], t->len[id]) & (nslots - 1);
        while (slot[j] >= 0)
            j = (j + 1) & (nslots - 1);
        slot[j] = id;
    }
    free(t->slot);
    t->slot = slot;
    t->mask = nslots - 1;
    return 0;
}

/* Id of s, adding it when absent (add != 0); -1 when absent and not added, -2 out of memory. */
static int32_t strtab_get(strtab *t, const char *s, size_t n, int add)
{
    if (!t->slot && strtab_rehash(t, 1024))
        return -2;
    size_t j = hash_bytes(s, n) & t->mask;
    while (t->slot[j] >= 0) {
        int32_t id = t->slot[j];
        if (t->len[id] == n && memcmp(t->s[id], s, n) == 0)
            return id;
        j = (j + 1) & t->mask;
    }
    if (!add)
        return -1;
    if (t->n >= INT32_MAX / 2)
        return -2;
    if (t->n == t->cap) {
        int32_t cap = t->cap ? t->cap * 2 : 256;
        char **ns = realloc(t->s, (size_t)cap * sizeof *ns);
        if (!ns)
            return -2;
        t->s = ns;
        uint32_t *nl = realloc(t->len, (size_t)cap * sizeof *nl);
        if (!nl)
            return -2;
        t->len = nl;
        int64_t *nc = realloc(t->count, (size_t)cap * sizeof *nc);
        if (!nc)
            return -2;
        t->count = nc;
        t->cap = cap;
    }
    char *copy = malloc(n + 1);
    if (!copy)
        return -2;
    memcpy(copy, s, n);
    copy[n] = 0;
    int32_t id = t->n++;
    t->s[id] = copy;
    t->len[id] = (uint32_t)n;
    t->count[id] = 0;
    t->slot[j] = id;
    if ((size_t)t->n * 2 > t->mask + 1 && strtab_rehash(t, (t->mask + 1) * 2))
        return -2;
    return id;
}

/* ---- pair counts: (a, b) -> count -------------------------------------------------------- */

typedef struct {
    uint64_t key; /* a << 32 | b; UINT64_MAX empty */
    int64_t count;
} pair_slot;

typedef struct {
    pair_slot *slot;
    size_t mask, used;
} pairmap;

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static int pairmap_init(pairmap *m, size_t nslots)
{
    m->slot = malloc(nslots * sizeof *m->slot);
    if (!m->slot)
        return -1;
    for (size_t i = 0; i < nslots; i++)
        m->slot[i].key = UINT64_MAX, m->slot[i].count = 0;
    m->mask = nslots - 1;
    m->used = 0;
    return 0;
}

/* Adds delta to the count of key. Entries are never removed (a count may drop to 0). */
static int pairmap_add(pairmap *m, uint64_t key, int64_t delta)
{
    size_t j = hash_u64(key) & m->mask;
    while (m->slot[j].key != UINT64_MAX && m->slot[j].key != key)
        j = (j + 1) & m->mask;
    if (m->slot[j].key == key) {
        m->slot[j].count += delta;
        return 0;
    }
    m->slot[j].key = key;
    m->slot[j].count = delta;
    if (++m->used * 2 > m->mask + 1) {
        pairmap old = *m;
        if (pairmap_init(m, (old.mask + 1) * 2)) {
            *m = old;
            return -1;
        }
        for (size_t i = 0; i <= old.mask; i++)
            if (old.slot[i].key != UINT64_MAX && old.slot[i].count != 0)
                pairmap_add(m, old.slot[i].key, old.slot[i].count);
        free(old.slot);
    }
    return 0;
}

/* ---- the trainer --------------------------------------------------------------------------- */

typedef struct {
    int32_t *sym;
    int32_t n;
    int64_t count;
} word;

struct clipl_bpe_trainer {
    strtab words;   /* pre-token bytes -> count */
    int64_t total;  /* words counted */
    pcre2_code *re; /* the pre-tokenizer */
    pcre2_match_data *md;
    int learned;     /* learn was called */
    strtab syms;     /* symbol strings (byte-to-unicode alphabet, "</w>" on word ends) */
    char **merge;    /* "a b" per learned merge */
    int64_t *mcount; /* pair count at the time of each merge */
    int n_merges;
    uint32_t byte_cp[256];
};

static void bytes_to_unicode(uint32_t byte_cp[256])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        if (printable)
            byte_cp[b] = (uint32_t)b;
    }
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        if (!printable)
            byte_cp[b] = (uint32_t)(256 + n++);
    }
}

clipl_bpe_trainer *clipl_bpe_trainer_new(void)
{
    clipl_bpe_trainer *b = calloc(1, sizeof *b);
    if (!b) {
        clipl__err(CLIPL_ENOMEM, "bpe_trainer: out of memory");
        return NULL;
    }
    bytes_to_unicode(b->byte_cp);
    int e;
    PCRE2_SIZE off;
    b->re = pcre2_compile((PCRE2_SPTR)PATTERN, sizeof PATTERN - 1,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &e, &off, NULL);
    if (!b->re) {
        clipl__err(CLIPL_EUNSUPPORTED, "bpe_trainer: PCRE2 cannot compile the pre-tokenizer");
        free(b);
        return NULL;
    }
    pcre2_jit_compile(b->re, PCRE2_JIT_COMPLETE);
    b->md = pcre2_match_data_create_from_pattern(b->re, NULL);
    if (!b->md) {
        pcre2_code_free(b->re);
        free(b);
        clipl__err(CLIPL_ENOMEM, "bpe_trainer: out of memory");
        return NULL;
    }
    return b;
}

void clipl_bpe_trainer_free(clipl_bpe_trainer *b)
{
    if (!b)
        return;
    strtab_free(&b->words);
    strtab_free(&b->syms);
    for (int i = 0; i < b->n_merges; i++)
        free(b->merge[i]);
    free(b->merge);
    free(b->mcount);
    pcre2_match_data_free(b->md);
    pcre2_code_free(b->re);
    free(b);
}

int clipl_bpe_trainer_add(clipl_bpe_trainer *b, const char *text, size_t len, int64_t count)
{
    if (!b)
        return clipl__err(CLIPL_EINVAL, "bpe_trainer_add: trainer is NULL");
    if (!text && len > 0)
        return clipl__err(CLIPL_EINVAL, "bpe_trainer_add: text is NULL");
    if (count < 1)
        return clipl__err(CLIPL_EINVAL, "bpe_trainer_add: count must be >= 1, got %lld",
                          (long long)count);
    if (b->learned)
        return clipl__err(CLIPL_EINVAL,
                          "bpe_trainer_add: merges were already learned; add text before learn");
    size_t bad = clipl__utf8_check(text, len);
    if (bad != len)
        return clipl__err(CLIPL_EINVAL,
                          "bpe_trainer_add: invalid UTF-8 at byte offset %zu (byte 0x%02x)", bad,
                          (unsigned char)text[bad]);
    char *clean = NULL;
    size_t clen = 0;
    if (clipl__text_clean(text ? text : "", len, &clean, &clen))
        return clipl__err_prefix("bpe_trainer_add");
    int rc = CLIPL_OK;
    size_t pos = 0;
    while (pos < clen) {
        int r = pcre2_match(b->re, (PCRE2_SPTR)clean, clen, pos, PCRE2_NO_UTF_CHECK, b->md, NULL);
        if (r == PCRE2_ERROR_NOMATCH)
            break;
        if (r < 0) {
            rc = clipl__err(CLIPL_EUNSUPPORTED, "bpe_trainer_add: PCRE2 match failed (%d)", r);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(b->md);
        size_t s = ov[0], e = ov[1];
        if (e <= s) {
            pos = s + 1;
            continue;
        }
        pos = e;
        if ((e - s == 15 && memcmp(clean + s, "<|startoftext|>", 15) == 0) ||
            (e - s == 13 && memcmp(clean + s, "<|endoftext|>", 13) == 0))
            continue; /* special tokens have their own ids */
        int32_t id = strtab_get(&b->words, clean + s, e - s, 1);
        if (id < 0) {
            rc = clipl__err(CLIPL_ENOMEM, "bpe_trainer_add: out of memory");
            break;
        }
        b->words.count[id] += count;
        b->total += count;
    }
    free(clean);
    return rc;
}

int64_t clipl_bpe_trainer_words(const clipl_bpe_trainer *b, int distinct)
{
    if (!b)
        return 0;
    return distinct ? b->words.n : b->total;
}

/* Order of two symbols: byte order, a prefix first. */
static int sym_cmp(const strtab *t, int32_t x, int32_t y)
{
    uint32_t lx = t->len[x], ly = t->len[y];
    int c = memcmp(t->s[x], t->s[y], lx < ly ? lx : ly);
    return c ? c : (lx > ly) - (lx < ly);
}

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static int add_word_pairs(pairmap *pm, const word *w, int64_t sign)
{
    for (int32_t i = 0; i + 1 < w->n; i++)
        if (pairmap_add(pm, pair_key(w->sym[i], w->sym[i + 1]), sign * w->count))
            return -1;
    return 0;
}

int clipl_bpe_trainer_learn(clipl_bpe_trainer *b, int n_merges, int64_t min_count, int *n_learned)
{
    if (n_learned)
        *n_learned = 0;
    if (!b)
        return clipl__err(CLIPL_EINVAL, "bpe_trainer_learn: trainer is NULL");
    if (n_merges < 0)
        return clipl__err(CLIPL_EINVAL, "bpe_trainer_learn: n_merges must be >= 0, got %d",
                          n_merges);
    if (b->learned)
        return clipl__err(CLIPL_EINVAL, "bpe_trainer_learn: merges were already learned");
    if (min_count < 1)
        min_count = 1;
    b->learned = 1;
    int rc = CLIPL_OK;
    int32_t nw = b->words.n;
    word *w = calloc(nw ? (size_t)nw : 1, sizeof *w);
    pairmap pm = {0};
    if (!w || pairmap_init(&pm, 4096))
        goto oom;
    if (n_merges > 0) {
        b->merge = calloc((size_t)n_merges, sizeof *b->merge);
        b->mcount = calloc((size_t)n_merges, sizeof *b->mcount);
        if (!b->merge || !b->mcount)
            goto oom;
    }
    /* initial symbols: one per byte, the last one with "</w>" */
    for (int32_t i = 0; i < nw; i++) {
        const unsigned char *s = (const unsigned char *)b->words.s[i];
        uint32_t n = b->words.len[i];
        w[i].sym = malloc((n ? n : 1) * sizeof *w[i].sym);
        if (!w[i].sym)
            goto oom;
        w[i].n = (int32_t)n;
        w[i].count = b->words.count[i];
        for (uint32_t k = 0; k < n; k++) {
            char buf[8];
            int l = clipl__utf8_put(buf, b->byte_cp[s[k]]);
            if (k + 1 == n) {
                memcpy(buf + l, "</w>", 4);
                l += 4;
            }
            int32_t id = strtab_get(&b->syms, buf, (size_t)l, 1);
            if (id < 0)
                goto oom;
            w[i].sym[k] = id;
        }
        if (add_word_pairs(&pm, &w[i], 1))
            goto oom;
    }

    while (b->n_merges < n_merges) {
        if (clipl_interrupted()) {
            rc = clipl__err(CLIPL_EINTERRUPTED, "bpe_trainer_learn: interrupted after %d merges",
                            b->n_merges);
            goto done;
        }
        int64_t best = 0;
        int32_t ba = -1, bb = -1;
        for (size_t j = 0; j <= pm.mask; j++) {
            const pair_slot *p = &pm.slot[j];
            if (p->key == UINT64_MAX || p->count < min_count || p->count < best)
                continue;
            int32_t pa = (int32_t)(p->key >> 32), pb = (int32_t)(p->key & 0xffffffffu);
            if (p->count > best) {
                best = p->count, ba = pa, bb = pb;
                continue;
            }
            int c = sym_cmp(&b->syms, pa, ba);
            if (c < 0 || (c == 0 && sym_cmp(&b->syms, pb, bb) < 0))
                ba = pa, bb = pb;
        }
        if (ba < 0)
            break;
        /* the merged symbol and the merge line */
        size_t la = b->syms.len[ba], lb = b->syms.len[bb];
        char *line = malloc(la + lb + 2);
        if (!line)
            goto oom;
        memcpy(line, b->syms.s[ba], la);
        line[la] = ' ';
        memcpy(line + la + 1, b->syms.s[bb], lb);
        line[la + 1 + lb] = 0;
        b->merge[b->n_merges] = line;
        b->mcount[b->n_merges] = best;
        b->n_merges++;
        char *joined = malloc(la + lb);
        if (!joined)
            goto oom;
        memcpy(joined, b->syms.s[ba], la);
        memcpy(joined + la, b->syms.s[bb], lb);
        int32_t m = strtab_get(&b->syms, joined, la + lb, 1);
        free(joined);
        if (m < 0)
            goto oom;
        /* replace the pair left to right in every word that holds it */
        for (int32_t i = 0; i < nw; i++) {
            word *x = &w[i];
            int has = 0;
            for (int32_t k = 0; k + 1 < x->n && !has; k++)
                has = x->sym[k] == ba && x->sym[k + 1] == bb;
            if (!has)
                continue;
            if (add_word_pairs(&pm, x, -1))
                goto oom;
            int32_t o = 0;
            for (int32_t k = 0; k < x->n;) {
                if (k + 1 < x->n && x->sym[k] == ba && x->sym[k + 1] == bb) {
                    x->sym[o++] = m;
                    k += 2;
                } else {
                    x->sym[o++] = x->sym[k++];
                }
            }
            x->n = o;
            if (add_word_pairs(&pm, x, 1))
                goto oom;
        }
    }
    goto done;
oom:
    rc = clipl__err(CLIPL_ENOMEM, "bpe_trainer_learn: out of memory");
done:
    if (w)
        for (int32_t i = 0; i < nw; i++)
            free(w[i].sym);
    free(w);
    free(pm.slot);
    if (n_learned)
        *n_learned = b->n_merges;
    return rc;
}

int clipl_bpe_trainer_merge_count(const clipl_bpe_trainer *b) { return b ? b->n_merges : 0; }

const char *clipl_bpe_trainer_merge(const clipl_bpe_trainer *b, int i, int64_t *count)
{
    if (!b || i < 0 || i >= b->n_merges)
        return NULL;
    if (count)
        *count = b->mcount[i];
    return b->merge[i];
}

int clipl_bpe_trainer_save(const clipl_bpe_trainer *b, const char *path)
{
    if (!b)
        return clipl__err(CLIPL_EINVAL, "bpe_trainer_save: trainer is NULL");
    if (!path || !*path)
        return clipl__err(CLIPL_EINVAL, "bpe_trainer_save: path is empty");
    if (!b->learned)
        return clipl__err(CLIPL_EINVAL, "bpe_trainer_save: nothing learned yet (call learn)");
    size_t plen = strlen(path);
    int gz = plen >= 3 && strcmp(path + plen - 3, ".gz") == 0;
    /* the whole file in memory, then written to a temporary name and renamed */
    size_t total = 16;
    for (int i = 0; i < b->n_merges; i++)
        total += strlen(b->merge[i]) + 1;
    char *buf = malloc(total), *tmp = malloc(plen + 16);
    if (!buf || !tmp) {
        free(buf);
        free(tmp);
        return clipl__err(CLIPL_ENOMEM, "bpe_trainer_save: out of memory");
    }
    size_t n = 0;
    memcpy(buf, "#version: 0.2", 13);
    n = 13;
    for (int i = 0; i < b->n_merges; i++) {
        size_t l = strlen(b->merge[i]);
        buf[n++] = '\n';
        memcpy(buf + n, b->merge[i], l);
        n += l;
    }
    snprintf(tmp, plen + 16, "%s.tmp%d", path, (int)getpid() % 100000);
    int rc = CLIPL_OK;
    if (gz) {
        gzFile f = gzopen(tmp, "wb9");
        if (!f) {
            rc = clipl__err(CLIPL_EIO, "bpe_trainer_save: cannot create '%s'", tmp);
        } else {
            int wr = gzwrite(f, buf, (unsigned)n);
            int cl = gzclose(f);
            if ((size_t)wr != n || cl != Z_OK)
                rc = clipl__err(CLIPL_EIO, "bpe_trainer_save: cannot write '%s'", tmp);
        }
    } else {
        FILE *f = fopen(tmp, "wb");
        if (!f) {
            rc = clipl__err(CLIPL_EIO, "bpe_trainer_save: cannot create '%s'", tmp);
        } else {
            size_t wr = fwrite(buf, 1, n, f);
            if (fclose(f) != 0 || wr != n)
                rc = clipl__err(CLIPL_EIO, "bpe_trainer_save: cannot write '%s'", tmp);
        }
    }
    if (!rc && rename(tmp, path) != 0)
        rc = clipl__err(CLIPL_EIO, "bpe_trainer_save: cannot rename '%s' to '%s'", tmp, path);
    if (rc)
        remove(tmp);
    free(buf);
    free(tmp);
    return rc;
}
