/*
 * text.h - internals of the tokenizer shared between engine/text files.
 */
#ifndef CLIPL_TEXT_H
#define CLIPL_TEXT_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>

/* A growable array of code points. */
typedef struct clipl__cps {
    uint32_t *p;
    size_t n, cap;
} clipl__cps;

/* Hashes of the tokenizer's and the BPE trainer's tables: FNV-1a of bytes (with a final mix),
 * and a 64-bit finalizer (MurmurHash3's fmix64) of an integer key. */
static inline uint64_t clipl__hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}
static inline uint64_t clipl__hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

/* Makes room for need items of elem bytes in p (malloc'ed, room for *cap items; may be NULL):
 * the capacity starts at first and doubles. Returns the new array with *cap updated, or NULL
 * when realloc fails (p and *cap are left as they were). Records no error. */
void *clipl__grow(void *p, size_t *cap, size_t need, size_t elem, size_t first);

/* Index of the first byte of text that starts an ill-formed UTF-8 sequence (Unicode table 3-7:
 * no overlongs, no surrogates, nothing past U+10FFFF), or len when the text is well-formed. */
size_t clipl__utf8_check(const char *text, size_t len);
/* Appends the UTF-8 encoding of cp (< 0x110000, not a surrogate) to buf; returns bytes written
 * (buf needs room for 4). */
int clipl__utf8_put(char *buf, uint32_t cp);
/* Decodes bytes as Python's bytes.decode('utf-8', errors='replace'): each maximal ill-formed
 * subpart becomes U+FFFD. *out is malloc'ed (caller frees). */
int clipl__utf8_decode_replace(const char *bytes, size_t len, char **out, size_t *out_len);

/* SimpleTokenizer's text cleaning: NFC (utf8proc), html.unescape twice, str.strip, regex \s+ ->
 * " ", str.strip, str.lower. text must be well-formed UTF-8. *out is malloc'ed, NUL-terminated.
 * Returns CLIPL_OK or an error (already recorded). */
int clipl__text_clean(const char *text, size_t len, char **out, size_t *out_len);
/* clipl__text_clean of user input (text may be NULL when len is 0): ill-formed UTF-8 is an
 * EINVAL naming its byte offset; every error message starts with "op: ". */
int clipl__text_clean_input(const char *op, const char *text, size_t len, char **out,
                            size_t *out_len);

/* OpenAI's pre-tokenizer regex (tokenizer.c), for PCRE2 with PCRE2_UTF | PCRE2_UCP |
 * PCRE2_CASELESS; shared with the BPE trainer so that both split text the same way. */
extern const char clipl__pretokenize_pattern[];
extern const size_t clipl__pretokenize_pattern_len;

#endif
