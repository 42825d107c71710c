/*
 * normalize.c - the text cleaning of OpenAI's SimpleTokenizer, step by step as Python does it:
 *   ftfy.fix_text (NFC here; see docs/tokenizer.md), html.unescape twice, str.strip(),
 *   regex.sub(r'\s+', ' '), str.strip(), str.lower().
 * Unicode data comes from utf8proc (NFC, simple lowercase) and PCRE2 (Cased, Case_Ignorable for
 * the final sigma rule); the HTML tables are Python's own (html_entities.inc).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

struct html_entity {
    const char *name;
    const char *value;
};
#include "html_entities.inc"

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

/* Length of the well-formed sequence starting at s[0] (1..4), or 0 when the bytes from s[0] are
 * ill-formed; *bad receives the length of the maximal ill-formed subpart (>= 1) in that case. */
static int utf8_seq(const unsigned char *s, size_t avail, uint32_t *cp, int *bad)
{
    unsigned c = s[0];
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    uint32_t v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        v = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        v = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= avail || s[k] < lo || s[k] > hi) {
            *bad = k;
            return 0;
        }
        v = (v << 6) | (s[k] & 0x3F);
        lo = 0x80;
        hi = 0xBF;
    }
    *cp = v;
    return need + 1;
}

size_t clipl__utf8_check(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        int bad;
        int k = utf8_seq(s + i, len - i, &cp, &bad);
        if (k == 0)
            return i;
        i += (size_t)k;
    }
    return len;
}

int clipl__utf8_put(char *buf, uint32_t cp)
{
    unsigned char *b = (unsigned char *)buf;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        return 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (unsigned char)(0xF0 | (cp >> 18));
    b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

int clipl__utf8_decode_replace(const char *bytes, size_t len, char **out, size_t *out_len)
{
    /* each input byte gives at most 3 output bytes (one U+FFFD per ill-formed byte) */
    char *o = malloc(len * 3 + 1);
    if (!o)
        return clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory decoding %zu bytes", len);
    const unsigned char *s = (const unsigned char *)bytes;
    size_t i = 0, n = 0;
    while (i < len) {
        uint32_t cp;
        int bad;
        int k = utf8_seq(s + i, len - i, &cp, &bad);
        if (k > 0) {
            memcpy(o + n, s + i, (size_t)k);
            n += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(o + n, "\xEF\xBF\xBD", 3);
            n += 3;
            i += (size_t)bad;
        }
    }
    o[n] = '\0';
    *out = o;
    *out_len = n;
    return CLIPL_OK;
}

/* ---- code point arrays ---------------------------------------------------------------------- */

void *clipl__grow(void *p, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap : first;
    while (c < need)
        c *= 2;
    void *np = realloc(p, c * elem);
    if (np)
        *cap = c;
    return np;
}

static int cps_reserve(clipl__cps *a, size_t extra)
{
    if (a->n + extra <= a->cap)
        return CLIPL_OK;
    uint32_t *p = clipl__grow(a->p, &a->cap, a->n + extra, sizeof *p, 64);
    if (!p)
        return clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory (%zu code points)", a->n + extra);
    a->p = p;
    return CLIPL_OK;
}

static int cps_push(clipl__cps *a, uint32_t cp)
{
    if (a->n == a->cap && cps_reserve(a, 1))
        return clipl_errcode();
    a->p[a->n++] = cp;
    return CLIPL_OK;
}

/* Appends the code points of well-formed UTF-8. */
static int cps_from_utf8(clipl__cps *a, const char *s, size_t len)
{
    if (cps_reserve(a, len))
        return clipl_errcode();
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        int bad;
        int k = utf8_seq(u + i, len - i, &cp, &bad);
        if (k == 0) { /* cannot happen on checked input; keep going safely */
            cp = 0xFFFD;
            k = bad;
        }
        a->p[a->n++] = cp;
        i += (size_t)k;
    }
    return CLIPL_OK;
}

/* ---- html.unescape -------------------------------------------------------------------------- */

static int entity_cmp(const uint32_t *s, size_t n, const char *name)
{
    size_t i = 0;
    for (; i < n && name[i]; i++) {
        uint32_t a = s[i], b = (unsigned char)name[i];
        if (a != b)
            return a < b ? -1 : 1;
    }
    if (i < n)
        return 1;
    return name[i] ? -1 : 0;
}

/* The value of the html5 entity named by s[0..n) (n code points), or NULL. */
static const char *entity_lookup(const uint32_t *s, size_t n)
{
    size_t lo = 0, hi = sizeof html_entities / sizeof html_entities[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = entity_cmp(s, n, html_entities[mid].name);
        if (c == 0)
            return html_entities[mid].value;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static int push_utf8_str(clipl__cps *a, const char *v) { return cps_from_utf8(a, v, strlen(v)); }

/* Python's html._replace_charref for a numeric reference of value num (saturated). */
static int push_numeric(clipl__cps *o, uint32_t num)
{
    size_t n_inv = sizeof html_invalid_charrefs / sizeof html_invalid_charrefs[0];
    for (size_t k = 0; k < n_inv; k++)
        if (html_invalid_charrefs[k][0] == num)
            return cps_push(o, html_invalid_charrefs[k][1]);
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF)
        return cps_push(o, 0xFFFD);
    size_t lo = 0, hi = sizeof html_invalid_codepoints / sizeof html_invalid_codepoints[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (html_invalid_codepoints[mid] == num)
            return CLIPL_OK; /* dropped */
        if (html_invalid_codepoints[mid] < num)
            lo = mid + 1;
        else
            hi = mid;
    }
    return cps_push(o, num);
}

static int is_hex(uint32_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static uint32_t hex_val(uint32_t c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }

/* One pass of html.unescape: the regex
 *   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
 * and _replace_charref, from s into o. */
static int html_unescape(const clipl__cps *s, clipl__cps *o)
{
    o->n = 0;
    if (cps_reserve(o, s->n))
        return clipl_errcode();
    const uint32_t *p = s->p;
    size_t n = s->n, i = 0;
    while (i < n) {
        if (p[i] != '&') {
            if (cps_push(o, p[i]))
                return clipl_errcode();
            i++;
            continue;
        }
        size_t j = i + 1;
        if (j < n && p[j] == '#') {
            uint32_t num = 0;
            size_t k = j + 1;
            int ok = 0;
            if (k < n && p[k] >= '0' && p[k] <= '9') {
                for (; k < n && p[k] >= '0' && p[k] <= '9'; k++)
                    num = num > 0x110000 ? num : num * 10 + (p[k] - '0');
                ok = 1;
            } else if (k + 1 < n && (p[k] == 'x' || p[k] == 'X') && is_hex(p[k + 1])) {
                for (k++; k < n && is_hex(p[k]); k++)
                    num = num > 0x110000 ? num : num * 16 + hex_val(p[k]);
                ok = 1;
            }
            if (!ok) {
                if (cps_push(o, '&'))
                    return clipl_errcode();
                i++;
                continue;
            }
            if (num > 0x110000)
                num = 0x110000;
            if (k < n && p[k] == ';')
                k++;
            if (push_numeric(o, num))
                return clipl_errcode();
            i = k;
            continue;
        }
        size_t k = j;
        while (k < n && k - j < 32 && p[k] != '\t' && p[k] != '\n' && p[k] != '\f' && p[k] != ' ' &&
               p[k] != '<' && p[k] != '&' && p[k] != '#' && p[k] != ';')
            k++;
        if (k == j) {
            if (cps_push(o, '&'))
                return clipl_errcode();
            i++;
            continue;
        }
        if (k < n && p[k] == ';')
            k++;
        size_t len = k - j;
        const char *v = entity_lookup(p + j, len);
        if (v) {
            if (push_utf8_str(o, v))
                return clipl_errcode();
        } else {
            size_t x = len - 1;
            for (; x >= 2; x--) {
                v = entity_lookup(p + j, x);
                if (v)
                    break;
            }
            if (v && x >= 2) {
                if (push_utf8_str(o, v) || cps_reserve(o, len - x))
                    return clipl_errcode();
                for (size_t q = j + x; q < k; q++)
                    o->p[o->n++] = p[q];
            } else {
                if (cps_reserve(o, len + 1))
                    return clipl_errcode();
                for (size_t q = i; q < k; q++)
                    o->p[o->n++] = p[q];
            }
        }
        i = k;
    }
    return CLIPL_OK;
}

static int has_amp(const clipl__cps *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->p[i] == '&')
            return 1;
    return 0;
}

/* ---- whitespace ----------------------------------------------------------------------------- */

/* Unicode White_Space: what the `regex` module's \s matches. */
static int is_white_space(uint32_t c)
{
    if (c <= 0x20)
        return c == 0x20 || (c >= 0x09 && c <= 0x0D);
    if (c < 0x85)
        return 0;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Python's str.isspace (what str.strip removes): White_Space plus U+001C..U+001F. */
static int is_py_space(uint32_t c) { return is_white_space(c) || (c >= 0x1C && c <= 0x1F); }

static void py_strip(clipl__cps *s)
{
    size_t b = 0, e = s->n;
    while (b < e && is_py_space(s->p[b]))
        b++;
    while (e > b && is_py_space(s->p[e - 1]))
        e--;
    if (b > 0)
        memmove(s->p, s->p + b, (e - b) * sizeof *s->p);
    s->n = e - b;
}

static void collapse_space(clipl__cps *s)
{
    size_t w = 0;
    for (size_t r = 0; r < s->n;) {
        if (is_white_space(s->p[r])) {
            while (r < s->n && is_white_space(s->p[r]))
                r++;
            s->p[w++] = ' ';
        } else {
            s->p[w++] = s->p[r++];
        }
    }
    s->n = w;
}

/* ---- str.lower ------------------------------------------------------------------------------ */

static pcre2_code *re_cased, *re_case_ignorable;
static pthread_once_t props_once = PTHREAD_ONCE_INIT;

static void props_init(void)
{
    int e;
    PCRE2_SIZE off;
    re_cased = pcre2_compile((PCRE2_SPTR) "\\p{Cased}", PCRE2_ZERO_TERMINATED,
                             PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &e, &off, NULL);
    re_case_ignorable = pcre2_compile((PCRE2_SPTR) "\\p{Case_Ignorable}", PCRE2_ZERO_TERMINATED,
                                      PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &e, &off, NULL);
}

/* 1 when cp has the binary property of re (PCRE2's Unicode tables). */
static int has_prop(pcre2_code *re, uint32_t cp)
{
    char buf[4];
    int n = clipl__utf8_put(buf, cp);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md)
        return 0;
    int rc = pcre2_match(re, (PCRE2_SPTR)buf, (PCRE2_SIZE)n, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc > 0;
}

/* Case_Ignorable from PCRE2's table (Unicode 14, as Python 3.11); PCRE2 10.42 misses U+180E
 * MONGOLIAN VOWEL SEPARATOR, a format character (Cf) since Unicode 6.3, which Python has. */
static int case_ignorable(uint32_t c) { return c == 0x180E || has_prop(re_case_ignorable, c); }

/* CPython's handle_capital_sigma: U+03A3 lowercases to final sigma U+03C2 when preceded by a cased
 * letter and not followed by one (case-ignorable characters skipped on both sides). */
static uint32_t lower_sigma(const uint32_t *p, size_t n, size_t i)
{
    pthread_once(&props_once, props_init);
    if (!re_cased || !re_case_ignorable)
        return 0x3C3;
    size_t j = i;
    uint32_t c = 0;
    int found = 0;
    while (j > 0) {
        c = p[--j];
        if (!case_ignorable(c)) {
            found = 1;
            break;
        }
    }
    int final_sigma = found && has_prop(re_cased, c);
    if (final_sigma && i + 1 < n) {
        size_t k = i + 1;
        for (; k < n; k++) {
            c = p[k];
            if (!case_ignorable(c))
                break;
        }
        final_sigma = k == n || !has_prop(re_cased, c);
    }
    return final_sigma ? 0x3C2 : 0x3C3;
}

/* Python's str.lower: full lowercase mapping. Python applies the unconditional SpecialCasing
 * entries (only U+0130 -> U+0069 U+0307 for lowercase) and the Final_Sigma rule; everything else is
 * the simple mapping, which utf8proc provides. */
static int py_lower(const clipl__cps *s, clipl__cps *o)
{
    o->n = 0;
    if (cps_reserve(o, s->n + 8))
        return clipl_errcode();
    for (size_t i = 0; i < s->n; i++) {
        uint32_t c = s->p[i];
        if (c < 0x80) {
            if (c >= 'A' && c <= 'Z')
                c += 32;
        } else if (c == 0x130) {
            if (cps_push(o, 0x69))
                return clipl_errcode();
            c = 0x307;
        } else if (c == 0x3A3) {
            c = lower_sigma(s->p, s->n, i);
        } else {
            c = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
        }
        if (cps_push(o, c))
            return clipl_errcode();
    }
    return CLIPL_OK;
}

/* ---- NFC quick check ------------------------------------------------------------------------ */

/* 1 when c is NFC_Quick_Check=Yes with canonical combining class 0, judged conservatively from
 * utf8proc's data: everything below U+0300; Hangul syllables; otherwise no decomposition, class 0,
 * not a mark (every second character of a canonical composition is a mark or a conjoining jamo,
 * which was checked against Python's unicodedata) and not a conjoining Hangul jamo. */
static int nfc_stable(uint32_t c)
{
    if (c < 0x300)
        return 1;
    if (c >= 0xAC00 && c <= 0xD7A3) /* Hangul syllables: composed algorithmically, QC=Yes */
        return 1;
    if (c >= 0x1100 && c <= 0x11FF)
        return 0;
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
    if (p->combining_class != 0 || p->decomp_seqindex != UINT16_MAX)
        return 0;
    return p->category != UTF8PROC_CATEGORY_MN && p->category != UTF8PROC_CATEGORY_MC &&
           p->category != UTF8PROC_CATEGORY_ME;
}

/* 1 when the text is certainly in NFC already, so utf8proc_map can be skipped (UAX #15 quick
 * check: every character QC=Yes and no reordering possible). */
static int nfc_quick_yes(const clipl__cps *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->p[i] >= 0x300 && !nfc_stable(s->p[i]))
            return 0;
    return 1;
}

/* ---- the whole cleaning --------------------------------------------------------------------- */

int clipl__text_clean(const char *text, size_t len, char **out, size_t *out_len)
{
    int rc = CLIPL_OK;
    utf8proc_uint8_t *nfc = NULL;
    clipl__cps a = {0}, b = {0};
    char *res = NULL;
    *out = NULL;
    *out_len = 0;

    if ((rc = cps_from_utf8(&a, text, len)))
        goto done;
    if (!nfc_quick_yes(&a)) {
        a.n = 0;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len,
                                          &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (r < 0) {
            rc = clipl__err(r == UTF8PROC_ERROR_NOMEM ? CLIPL_ENOMEM : CLIPL_EINVAL,
                            "tokenizer: NFC normalisation failed: %s", utf8proc_errmsg(r));
            goto done;
        }
        if ((rc = cps_from_utf8(&a, (const char *)nfc, (size_t)r)))
            goto done;
    }

    for (int pass = 0; pass < 2; pass++) {
        if (!has_amp(&a))
            break;
        if ((rc = html_unescape(&a, &b)))
            goto done;
        clipl__cps t = a;
        a = b;
        b = t;
    }
    py_strip(&a);
    collapse_space(&a);
    py_strip(&a);
    if ((rc = py_lower(&a, &b)))
        goto done;

    res = malloc(b.n * 4 + 1);
    if (!res) {
        rc = clipl__err(CLIPL_ENOMEM, "tokenizer: out of memory (%zu code points)", b.n);
        goto done;
    }
    size_t n = 0;
    for (size_t i = 0; i < b.n; i++)
        n += (size_t)clipl__utf8_put(res + n, b.p[i]);
    res[n] = '\0';
    *out = res;
    *out_len = n;
done:
    free(nfc);
    free(a.p);
    free(b.p);
    return rc;
}

int clipl__text_clean_input(const char *op, const char *text, size_t len, char **out,
                            size_t *out_len)
{
    size_t bad = clipl__utf8_check(text, len);
    if (bad != len)
        return clipl__err(CLIPL_EINVAL, "%s: invalid UTF-8 at byte offset %zu (byte 0x%02x)", op,
                          bad, (unsigned char)text[bad]);
    if (clipl__text_clean(text ? text : "", len, out, out_len))
        return clipl__err_prefix("%s", op);
    return CLIPL_OK;
}
