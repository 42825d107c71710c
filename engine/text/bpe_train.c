/*
 * bpe_train.c - learning a byte-level BPE vocabulary (Sennrich et al. 2016, with OpenAI CLIP's
 * byte-to-unicode symbols and `</w>` word ends), written in the format of OpenAI's
 * bpe_simple_vocab_16e6.txt.gz so that clipl_tokenizer_load reads it.
 *
 * Words are the pre-tokens of the cleaned text (clipl__text_clean, then the tokenizer's regex
 * clipl__pretokenize_pattern), counted. Each word is an array of symbol ids; symbols are interned
 * strings. A step counts every
 * adjacent pair over all words (weighted by word frequency; kept up to date incrementally), takes
 * the most frequent one (ties: smaller first symbol, then smaller second symbol, in byte order),
 * and replaces its occurrences left to right in every word, as SimpleTokenizer.bpe applies it.
 * Each pair keeps the list of words that hold it and the best pair comes from a max-heap with
 * lazy invalidation, so a merge costs time in the words it touches, not in the whole corpus.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* ---- interned strings: string -> id ------------------------------------------------------ */

typedef struct {
    char **s;
    uint32_t *len;
    int64_t *count; /* per string payload (word counts) */
    int32_t n, cap;
    int32_t *slot; /* hash table of ids, -1 empty */
    size_t mask;
} strtab;

/* A new open-addressing table of nslots (a power of two) empty (-1) slots, or NULL. */
static int32_t *slots_new(size_t nslots)
{
    int32_t *slot = malloc(nslots * sizeof *slot);
    if (slot)
        for (size_t i = 0; i < nslots; i++)
            slot[i] = -1;
    return slot;
}

/* Puts id into the first free slot from hash h on (linear probing). */
static void slots_put(int32_t *slot, size_t nslots, uint64_t h, int32_t id)
{
    size_t j = h & (nslots - 1);
    while (slot[j] >= 0)
        j = (j + 1) & (nslots - 1);
    slot[j] = id;
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
    int32_t *slot = slots_new(nslots);
    if (!slot)
        return -1;
    for (int32_t id = 0; id < t->n; id++)
        slots_put(slot, nslots, clipl__hash_bytes(t->s[id], t->len[id]), id);
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
    size_t j = clipl__hash_bytes(s, n) & t->mask;
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

/* ---- pairs: (a, b) -> count and the words that hold it ----------------------------------- */

typedef struct {
    uint64_t key;   /* a << 32 | b */
    int64_t count;  /* occurrences, weighted by word counts */
    int32_t *words; /* words that held the pair since it was last merged (may repeat) */
    int32_t nw, cw;
    int32_t step; /* merge step at which it was last queued for the heap */
} pair_info;

typedef struct {
    int32_t *slot; /* index into info, -1 empty */
    size_t mask;
    pair_info *info; /* stable indices: entries are never removed */
    int32_t n, cap;
    int32_t *dirty; /* pairs whose count changed during this step */
    int32_t ndirty, cdirty;
} pairs;

static void pairs_free(pairs *p)
{
    for (int32_t i = 0; i < p->n; i++)
        free(p->info[i].words);
    free(p->info);
    free(p->slot);
    free(p->dirty);
    memset(p, 0, sizeof *p);
}

static int pairs_rehash(pairs *p, size_t nslots)
{
    int32_t *slot = slots_new(nslots);
    if (!slot)
        return -1;
    for (int32_t k = 0; k < p->n; k++)
        slots_put(slot, nslots, clipl__hash_u64(p->info[k].key), k);
    free(p->slot);
    p->slot = slot;
    p->mask = nslots - 1;
    return 0;
}

/* Index of key's entry, created when absent and add != 0; -1 when absent, -2 out of memory. */
static int32_t pairs_find(pairs *p, uint64_t key, int add)
{
    if (!p->slot && pairs_rehash(p, 4096))
        return -2;
    size_t j = clipl__hash_u64(key) & p->mask;
    while (p->slot[j] >= 0) {
        if (p->info[p->slot[j]].key == key)
            return p->slot[j];
        j = (j + 1) & p->mask;
    }
    if (!add)
        return -1;
    if (p->n == p->cap) {
        int32_t cap = p->cap ? p->cap * 2 : 1024;
        pair_info *ni = realloc(p->info, (size_t)cap * sizeof *ni);
        if (!ni)
            return -2;
        p->info = ni;
        p->cap = cap;
    }
    int32_t k = p->n++;
    memset(&p->info[k], 0, sizeof p->info[k]);
    p->info[k].key = key;
    p->info[k].step = -1;
    p->slot[j] = k;
    if ((size_t)p->n * 2 > p->mask + 1 && pairs_rehash(p, (p->mask + 1) * 2))
        return -2;
    return k;
}

static int push_i32(int32_t **v, int32_t *n, int32_t *cap, int32_t x)
{
    if (*n == *cap) {
        int32_t c = *cap ? *cap * 2 : 4;
        int32_t *nv = realloc(*v, (size_t)c * sizeof *nv);
        if (!nv)
            return -1;
        *v = nv;
        *cap = c;
    }
    (*v)[(*n)++] = x;
    return 0;
}

/* ---- a max-heap of (count, a, b) with lazy invalidation ------------------------------------ */

typedef struct {
    int64_t count;
    int32_t a, b;
} heap_entry;

typedef struct {
    heap_entry *e;
    size_t n, cap;
    const strtab *syms;
} heap;

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
    b->re = pcre2_compile((PCRE2_SPTR)clipl__pretokenize_pattern, clipl__pretokenize_pattern_len,
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
    char *clean = NULL;
    size_t clen = 0;
    int rc = clipl__text_clean_input("bpe_trainer_add", text, len, &clean, &clen);
    if (rc)
        return rc;
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

/* x before y in the heap: more frequent first, then the smaller first symbol, then the smaller
 * second symbol (byte order). */
static int heap_before(const heap *h, const heap_entry *x, const heap_entry *y)
{
    if (x->count != y->count)
        return x->count > y->count;
    int c = sym_cmp(h->syms, x->a, y->a);
    if (c)
        return c < 0;
    return sym_cmp(h->syms, x->b, y->b) < 0;
}

static int heap_push(heap *h, heap_entry x)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 1024;
        heap_entry *ne = realloc(h->e, cap * sizeof *ne);
        if (!ne)
            return -1;
        h->e = ne;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_before(h, &x, &h->e[parent]))
            break;
        h->e[i] = h->e[parent];
        i = parent;
    }
    h->e[i] = x;
    return 0;
}

static void heap_pop(heap *h)
{
    heap_entry last = h->e[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        const heap_entry *bx = &last;
        if (l < h->n && heap_before(h, &h->e[l], bx))
            best = l, bx = &h->e[l];
        if (r < h->n && heap_before(h, &h->e[r], bx))
            best = r;
        if (best == i)
            break;
        h->e[i] = h->e[best];
        i = best;
    }
    if (h->n)
        h->e[i] = last;
}

/* Adds (sign 1) or removes (sign -1) the pairs of word wi to the counts; marks the pairs whose
 * count changed for re-queueing at this step, and records the word in the lists of its pairs. */
static int update_word_pairs(pairs *p, const word *w, int32_t wi, int64_t sign, int32_t step)
{
    for (int32_t i = 0; i + 1 < w->n; i++) {
        int32_t k = pairs_find(p, pair_key(w->sym[i], w->sym[i + 1]), 1);
        if (k < 0)
            return -1;
        pair_info *pi = &p->info[k];
        pi->count += sign * w->count;
        if (sign > 0 && (pi->nw == 0 || pi->words[pi->nw - 1] != wi) &&
            push_i32(&pi->words, &pi->nw, &pi->cw, wi))
            return -1;
        if (pi->step != step) {
            pi->step = step;
            if (push_i32(&p->dirty, &p->ndirty, &p->cdirty, k))
                return -1;
        }
    }
    return 0;
}

/* Queues the pairs whose count changed (with their new count) and clears the list. */
static int requeue(pairs *p, heap *h)
{
    for (int32_t i = 0; i < p->ndirty; i++) {
        const pair_info *pi = &p->info[p->dirty[i]];
        if (pi->count > 0) {
            heap_entry e = {pi->count, (int32_t)(pi->key >> 32), (int32_t)(pi->key & 0xffffffffu)};
            if (heap_push(h, e))
                return -1;
        }
    }
    p->ndirty = 0;
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
    int32_t nw = b->words.n, step = 0, *todo = NULL, *stamp = NULL;
    word *w = calloc(nw ? (size_t)nw : 1, sizeof *w);
    stamp = calloc(nw ? (size_t)nw : 1, sizeof *stamp);
    pairs pr = {0};
    heap hp = {NULL, 0, 0, &b->syms};
    if (!w || !stamp)
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
        if (update_word_pairs(&pr, &w[i], i, 1, 0))
            goto oom;
    }
    if (requeue(&pr, &hp))
        goto oom;

    while (b->n_merges < n_merges) {
        if (clipl_interrupted()) {
            rc = clipl__err(CLIPL_EINTERRUPTED, "bpe_trainer_learn: interrupted after %d merges",
                            b->n_merges);
            goto done;
        }
        /* the best pair: the top entry whose count is still current */
        int32_t k = -1;
        while (hp.n > 0) {
            heap_entry top = hp.e[0];
            k = pairs_find(&pr, pair_key(top.a, top.b), 0);
            if (k >= 0 && pr.info[k].count == top.count)
                break;
            heap_pop(&hp);
            k = -1;
        }
        if (k < 0 || pr.info[k].count < min_count)
            break;
        heap_pop(&hp);
        int32_t ba = (int32_t)(pr.info[k].key >> 32), bb = (int32_t)(pr.info[k].key & 0xffffffffu);
        int64_t best = pr.info[k].count;
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
        /* replace the pair left to right in the words that hold it (the list is taken over:
         * the words that still hold the pair afterwards, if any, add themselves back) */
        step++;
        pair_info *pi = &pr.info[k];
        int32_t ntodo = pi->nw;
        free(todo);
        todo = pi->words;
        pi->words = NULL;
        pi->nw = pi->cw = 0;
        for (int32_t t = 0; t < ntodo; t++) {
            int32_t i = todo[t];
            if (stamp[i] == step)
                continue;
            stamp[i] = step;
            word *x = &w[i];
            int has = 0;
            for (int32_t q = 0; q + 1 < x->n && !has; q++)
                has = x->sym[q] == ba && x->sym[q + 1] == bb;
            if (!has)
                continue;
            if (update_word_pairs(&pr, x, i, -1, step))
                goto oom;
            int32_t o = 0;
            for (int32_t q = 0; q < x->n;) {
                if (q + 1 < x->n && x->sym[q] == ba && x->sym[q + 1] == bb) {
                    x->sym[o++] = m;
                    q += 2;
                } else {
                    x->sym[o++] = x->sym[q++];
                }
            }
            x->n = o;
            if (update_word_pairs(&pr, x, i, 1, step))
                goto oom;
        }
        if (requeue(&pr, &hp))
            goto oom;
    }
    goto done;
oom:
    rc = clipl__err(CLIPL_ENOMEM, "bpe_trainer_learn: out of memory");
done:
    if (w)
        for (int32_t i = 0; i < nw; i++)
            free(w[i].sym);
    free(w);
    free(stamp);
    free(todo);
    pairs_free(&pr);
    free(hp.e);
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
