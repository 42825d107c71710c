/*
 * pt.c - PyTorch zip archives (torch.save state dicts and checkpoints, TorchScript archives) read
 * with a restricted unpickler.
 *
 * The unpickler never executes anything: it knows a fixed set of opcodes (protocol 2, plus the
 * protocol 3-5 ones torch emits) and an allow-list of globals. Python objects become a small tree
 * of values (dicts, lists, tuples, scalars, tensors, and "module objects" for TorchScript classes
 * `__torch__.*`, which are plain attribute dicts); the tree is then flattened to dotted names.
 * All values live in an arena freed at the end, so shared and cyclic references are harmless.
 */
#include "io_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- values ------------------------------------------------------------------------------------
 */

enum {
    V_NONE,
    V_BOOL,
    V_INT,
    V_FLOAT,
    V_STR,
    V_TUPLE,
    V_LIST,
    V_DICT,    /* items: key, value, key, value, ... */
    V_GLOBAL,  /* an allowed callable or class */
    V_OBJ,     /* a TorchScript module object; items[0] is its state dict once built */
    V_STORAGE, /* a persistent-id storage reference */
    V_TENSOR,
};

enum {
    G_ORDERED_DICT,
    G_REBUILD_TENSOR_V2,
    G_REBUILD_TENSOR,
    G_REBUILD_PARAMETER,
    G_STORAGE_TYPE, /* torch.FloatStorage etc.; dtype in the value */
    G_TORCH_CLASS,  /* __torch__.* */
};

typedef struct val {
    int kind;
    int n, cap; /* items */
    struct val **items;
    int64_t i; /* INT, BOOL; GLOBAL: G_*; STORAGE: byte size of the entry */
    double f;
    char *s;             /* STR; GLOBAL/OBJ: qualified name; STORAGE: key */
    int dtype;           /* GLOBAL storage type / STORAGE: element dtype (CLIPL__F64 allowed) */
    clipl_tensor *t;     /* TENSOR (one reference) */
    clipl_storage *heap; /* STORAGE: inflated or copied bytes, or NULL when in place */
    uint64_t file_off;   /* STORAGE in place: data offset in the file */
    int64_t numel;       /* STORAGE: element count from the persistent id */
} val;

typedef struct up {
    const char *path;
    const uint8_t *p, *end, *start;
    clipl__mfile *f;
    clipl__zip *zip;
    const char *prefix; /* archive prefix, "name/" */
    val **arena;
    size_t narena, caparena;
    val **stack;
    size_t nstack, capstack;
    val **memo;
    size_t capmemo;
    size_t memo_len;      /* distinct memo entries set */
    clipl__smap storages; /* storage key -> arena index of the V_STORAGE value */
} up;

static val mark_sentinel;
#define MARK (&mark_sentinel)

static int perr(up *u, int code, const char *what)
{
    return clipl__err(code, "%s: data.pkl at byte %lld: %s", u->path, (long long)(u->p - u->start),
                      what);
}

static val *vnew(up *u, int kind)
{
    if (u->narena == u->caparena) {
        size_t cap = u->caparena ? u->caparena * 2 : 256;
        val **a = realloc(u->arena, cap * sizeof *a);
        if (!a)
            return NULL;
        u->arena = a;
        u->caparena = cap;
    }
    val *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->kind = kind;
    u->arena[u->narena++] = v;
    return v;
}

static int vpush_item(val *c, val *x)
{
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 4;
        val **it = realloc(c->items, (size_t)cap * sizeof *it);
        if (!it)
            return CLIPL_ENOMEM;
        c->items = it;
        c->cap = cap;
    }
    c->items[c->n++] = x;
    return CLIPL_OK;
}

static void up_free(up *u)
{
    for (size_t i = 0; i < u->narena; i++) {
        val *v = u->arena[i];
        free(v->items);
        free(v->s);
        clipl_tensor_release(v->t);
        clipl_storage_release(v->heap);
        free(v);
    }
    free(u->arena);
    free(u->stack);
    free(u->memo);
    clipl__smap_free(&u->storages);
}

static int push(up *u, val *v)
{
    if (!v)
        return perr(u, CLIPL_ENOMEM, "out of memory");
    if (u->nstack == u->capstack) {
        size_t cap = u->capstack ? u->capstack * 2 : 64;
        val **s = realloc(u->stack, cap * sizeof *s);
        if (!s)
            return perr(u, CLIPL_ENOMEM, "out of memory");
        u->stack = s;
        u->capstack = cap;
    }
    u->stack[u->nstack++] = v;
    return CLIPL_OK;
}

/* Pops a value (not a mark). */
static val *pop(up *u)
{
    if (u->nstack == 0 || u->stack[u->nstack - 1] == MARK)
        return NULL;
    return u->stack[--u->nstack];
}

static val *top(up *u)
{
    if (u->nstack == 0 || u->stack[u->nstack - 1] == MARK)
        return NULL;
    return u->stack[u->nstack - 1];
}

/* Position of the topmost mark, or -1. */
static long find_mark(up *u)
{
    for (size_t i = u->nstack; i-- > 0;)
        if (u->stack[i] == MARK)
            return (long)i;
    return -1;
}

static bool need(up *u, size_t n) { return (size_t)(u->end - u->p) >= n; }

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- globals -----------------------------------------------------------------------------------
 */

static int resolve_global(up *u, const char *module, const char *name, val **out)
{
    static const struct {
        const char *module, *name;
        int g, dtype;
    } allowed[] = {
        {"collections", "OrderedDict", G_ORDERED_DICT, 0},
        {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR_V2, 0},
        {"torch._utils", "_rebuild_tensor", G_REBUILD_TENSOR, 0},
        {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER, 0},
        {"torch", "FloatStorage", G_STORAGE_TYPE, CLIPL_F32},
        {"torch", "HalfStorage", G_STORAGE_TYPE, CLIPL_F16},
        {"torch", "BFloat16Storage", G_STORAGE_TYPE, CLIPL_BF16},
        {"torch", "LongStorage", G_STORAGE_TYPE, CLIPL_I64},
        {"torch", "IntStorage", G_STORAGE_TYPE, CLIPL_I32},
        {"torch", "ByteStorage", G_STORAGE_TYPE, CLIPL_U8},
        {"torch", "BoolStorage", G_STORAGE_TYPE, CLIPL_U8},
        {"torch", "DoubleStorage", G_STORAGE_TYPE, CLIPL__F64},
    };
    int g = -1, dtype = 0;
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        if (strcmp(module, allowed[i].module) == 0 && strcmp(name, allowed[i].name) == 0) {
            g = allowed[i].g;
            dtype = allowed[i].dtype;
        }
    }
    if (g < 0 && (strcmp(module, "__torch__") == 0 || strncmp(module, "__torch__.", 10) == 0))
        g = G_TORCH_CLASS;
    if (g < 0) {
        char msg[512];
        snprintf(msg, sizeof msg,
                 "refusing global '%.200s.%.200s' (only state-dict tensors and TorchScript "
                 "modules are read; nothing is executed)",
                 module, name);
        return perr(u, CLIPL_EFORMAT, msg);
    }
    val *v = vnew(u, V_GLOBAL);
    if (!v)
        return perr(u, CLIPL_ENOMEM, "out of memory");
    size_t n = strlen(module) + strlen(name) + 2;
    v->s = malloc(n);
    if (!v->s)
        return perr(u, CLIPL_ENOMEM, "out of memory");
    snprintf(v->s, n, "%s.%s", module, name);
    v->i = g;
    v->dtype = dtype;
    *out = v;
    return CLIPL_OK;
}

/* ---- storages and tensors ----------------------------------------------------------------------
 */

/* BINPERSID: ('storage', storage_type, key, location, numel) -> a V_STORAGE value. */
static int persistent_load(up *u, val *pid, val **out)
{
    if (!pid || pid->kind != V_TUPLE || pid->n != 5 || pid->items[0]->kind != V_STR ||
        strcmp(pid->items[0]->s, "storage") != 0)
        return perr(u, CLIPL_EFORMAT,
                    "persistent id is not ('storage', type, key, location, numel)");
    val *type = pid->items[1], *key = pid->items[2], *numel = pid->items[4];
    if (type->kind != V_GLOBAL || type->i != G_STORAGE_TYPE)
        return perr(u, CLIPL_EFORMAT, "persistent id: the storage type is not a torch *Storage");
    if (key->kind != V_STR || numel->kind != V_INT || numel->i < 0)
        return perr(u, CLIPL_EFORMAT, "persistent id: bad key or element count");
    int found = clipl__smap_get(&u->storages, key->s);
    if (found >= 0) {
        val *s = u->arena[found];
        if (s->dtype != type->dtype || s->numel != numel->i)
            return perr(u, CLIPL_EFORMAT, "storage used twice with different types or sizes");
        *out = s;
        return CLIPL_OK;
    }
    char name[512];
    snprintf(name, sizeof name, "%sdata/%s", u->prefix, key->s);
    int ei = clipl__zip_find(u->zip, name);
    if (ei < 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "storage entry '%s' is missing from the archive", name);
        return perr(u, CLIPL_EFORMAT, msg);
    }
    int es = type->dtype == CLIPL__F64 ? 8 : clipl_dtype_size(type->dtype);
    const clipl__zentry *e = &u->zip->e[ei];
    if ((uint64_t)numel->i > e->usize / (uint64_t)es) {
        char msg[700];
        snprintf(msg, sizeof msg,
                 "storage '%s' claims %lld elements of %d bytes but the entry has %llu bytes", name,
                 (long long)numel->i, es, (unsigned long long)e->usize);
        return perr(u, CLIPL_EFORMAT, msg);
    }
    val *s = vnew(u, V_STORAGE);
    if (!s || !(s->s = strdup(key->s)))
        return perr(u, CLIPL_ENOMEM, "out of memory");
    s->dtype = type->dtype;
    s->numel = numel->i;
    s->i = (int64_t)e->usize;
    int rc;
    if (e->method == 0) {
        if ((rc = clipl__zip_stored_offset(u->zip, ei, &s->file_off)))
            return rc;
    } else if ((rc = clipl__zip_read(u->zip, ei, &s->heap))) {
        return rc;
    }
    if ((rc = clipl__smap_put(&u->storages, s->s, (int)(u->narena - 1))) < 0)
        return rc;
    *out = s;
    return CLIPL_OK;
}

/* An int tuple (sizes or strides) into out[]. */
static bool int_tuple(const val *v, int64_t *out, int *n)
{
    if (!v || (v->kind != V_TUPLE && v->kind != V_LIST) || v->n > CLIPL_MAX_DIMS)
        return false;
    for (int i = 0; i < v->n; i++) {
        if (v->items[i]->kind != V_INT || v->items[i]->i < 0)
            return false;
        out[i] = v->items[i]->i;
    }
    *n = v->n;
    return true;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata]) */
static int rebuild_tensor(up *u, val *args, val **out)
{
    if (!args || args->kind != V_TUPLE || args->n < 4)
        return perr(u, CLIPL_EFORMAT,
                    "_rebuild_tensor: expected (storage, offset, size, stride, ...)");
    val *st = args->items[0], *off = args->items[1];
    int64_t size[CLIPL_MAX_DIMS], stride[CLIPL_MAX_DIMS];
    int nd, nds;
    if (st->kind != V_STORAGE || off->kind != V_INT || off->i < 0 ||
        !int_tuple(args->items[2], size, &nd) || !int_tuple(args->items[3], stride, &nds) ||
        nd != nds)
        return perr(u, CLIPL_EFORMAT,
                    "_rebuild_tensor: bad arguments (storage, non-negative offset, size and "
                    "stride tuples of the same length expected)");
    /* the view must lie inside its storage */
    int64_t numel = clipl__io_numel(nd, size, INT64_MAX / 8);
    char sb[128];
    if (numel < 0)
        return perr(u, CLIPL_EFORMAT, "_rebuild_tensor: size overflows");
    if (numel > 0) {
        int64_t hi = off->i, term;
        for (int i = 0; i < nd; i++) {
            if (__builtin_mul_overflow(size[i] - 1, stride[i], &term) ||
                __builtin_add_overflow(hi, term, &hi))
                return perr(u, CLIPL_EFORMAT, "_rebuild_tensor: strides overflow");
        }
        if (hi >= st->numel) {
            char msg[400];
            snprintf(msg, sizeof msg,
                     "_rebuild_tensor: view [%s] at offset %lld needs element %lld of storage "
                     "'%s' which has %lld",
                     clipl__shape_str(sb, sizeof sb, nd, size), (long long)off->i, (long long)hi,
                     st->s, (long long)st->numel);
            return perr(u, CLIPL_EFORMAT, msg);
        }
    }
    clipl_tensor *t;
    if (st->heap)
        t = clipl__io_tensor_on(st->heap, st->dtype, nd, size, stride, off->i);
    else
        t = clipl__io_tensor(u->f, (size_t)st->file_off, st->dtype, nd, size, stride, off->i);
    if (!t) {
        char msg[300];
        snprintf(msg, sizeof msg, "storage '%s'", st->s);
        clipl__err_prefix("%s: data.pkl: %s", u->path, msg);
        return clipl_errcode();
    }
    val *v = vnew(u, V_TENSOR);
    if (!v) {
        clipl_tensor_release(t);
        return perr(u, CLIPL_ENOMEM, "out of memory");
    }
    v->t = t;
    *out = v;
    return CLIPL_OK;
}

static int call_global(up *u, val *fn, val *args, bool newobj, val **out)
{
    if (!fn || fn->kind != V_GLOBAL || !args || args->kind != V_TUPLE)
        return perr(u, CLIPL_EFORMAT,
                    newobj ? "NEWOBJ on something that is not an allowed class"
                           : "REDUCE on something that is not an allowed global");
    switch (fn->i) {
    case G_ORDERED_DICT:
        if (args->n != 0)
            return perr(u, CLIPL_EFORMAT, "OrderedDict called with arguments");
        *out = vnew(u, V_DICT);
        return *out ? CLIPL_OK : perr(u, CLIPL_ENOMEM, "out of memory");
    case G_REBUILD_TENSOR_V2:
    case G_REBUILD_TENSOR:
        if (newobj)
            break;
        return rebuild_tensor(u, args, out);
    case G_REBUILD_PARAMETER:
        if (newobj || args->n < 1 || args->items[0]->kind != V_TENSOR)
            break;
        *out = args->items[0];
        return CLIPL_OK;
    case G_TORCH_CLASS:
        if (args->n != 0)
            break;
        *out = vnew(u, V_OBJ);
        if (!*out || !((*out)->s = strdup(fn->s)))
            return perr(u, CLIPL_ENOMEM, "out of memory");
        return CLIPL_OK;
    default: break;
    }
    char msg[400];
    snprintf(msg, sizeof msg, "%s of '%.300s' with these arguments is not allowed",
             newobj ? "NEWOBJ" : "REDUCE", fn->s);
    return perr(u, CLIPL_EFORMAT, msg);
}

/* ---- the unpickler loop ------------------------------------------------------------------------
 */

/* The index argument of a memo opcode (PUT or GET): 1 byte, or 4 little-endian bytes. */
static int memo_arg(up *u, bool one_byte, const char *truncated, uint64_t *idx)
{
    size_t n = one_byte ? 1 : 4;
    if (!need(u, n))
        return perr(u, CLIPL_EFORMAT, truncated);
    *idx = one_byte ? u->p[0] : rd32(u->p);
    u->p += n;
    return CLIPL_OK;
}

static int memo_put(up *u, uint64_t idx)
{
    val *v = top(u);
    if (!v)
        return perr(u, CLIPL_EFORMAT, "memo put with an empty stack");
    /* memo indices are assigned in order, so a valid pickle never exceeds its own length */
    if (idx > (uint64_t)(u->end - u->start))
        return perr(u, CLIPL_EFORMAT, "memo index out of range");
    if (idx >= u->capmemo) {
        size_t cap = u->capmemo ? u->capmemo : 64;
        while (cap <= idx)
            cap *= 2;
        val **m = realloc(u->memo, cap * sizeof *m);
        if (!m)
            return perr(u, CLIPL_ENOMEM, "out of memory");
        memset(m + u->capmemo, 0, (cap - u->capmemo) * sizeof *m);
        u->memo = m;
        u->capmemo = cap;
    }
    if (!u->memo[idx])
        u->memo_len++;
    u->memo[idx] = v;
    return CLIPL_OK;
}

static int memo_get(up *u, uint64_t idx)
{
    if (idx >= u->capmemo || !u->memo[idx])
        return perr(u, CLIPL_EFORMAT, "memo get of an unset index");
    return push(u, u->memo[idx]);
}

/* Pops everything above the topmost mark into a new container of kind (TUPLE or LIST items). */
static int pop_to_mark(up *u, long *markpos)
{
    long m = find_mark(u);
    if (m < 0)
        return perr(u, CLIPL_EFORMAT, "no MARK on the stack");
    *markpos = m;
    return CLIPL_OK;
}

static int make_tuple(up *u, size_t n)
{
    if (u->nstack < n)
        return perr(u, CLIPL_EFORMAT, "stack underflow building a tuple");
    val *t = vnew(u, V_TUPLE);
    if (!t)
        return perr(u, CLIPL_ENOMEM, "out of memory");
    for (size_t i = u->nstack - n; i < u->nstack; i++) {
        if (u->stack[i] == MARK)
            return perr(u, CLIPL_EFORMAT, "MARK inside a tuple");
        if (vpush_item(t, u->stack[i]))
            return perr(u, CLIPL_ENOMEM, "out of memory");
    }
    u->nstack -= n;
    return push(u, t);
}

static int run(up *u, val **result)
{
    int rc;
    for (;;) {
        if (clipl__should_stop())
            return clipl__err(CLIPL_EINTERRUPTED, "%s: loading interrupted", u->path);
        if (!need(u, 1))
            return perr(u, CLIPL_EFORMAT, "truncated pickle (no STOP)");
        uint8_t op = *u->p++;
        switch (op) {
        case 0x80: /* PROTO */
            if (!need(u, 1) || *u->p > 5)
                return perr(u, CLIPL_EFORMAT, "bad pickle protocol");
            u->p++;
            break;
        case 0x95: /* FRAME */
            if (!need(u, 8))
                return perr(u, CLIPL_EFORMAT, "truncated FRAME");
            u->p += 8;
            break;
        case '.': { /* STOP */
            val *v = pop(u);
            if (!v)
                return perr(u, CLIPL_EFORMAT, "STOP with an empty stack");
            *result = v;
            return CLIPL_OK;
        }
        case '(': /* MARK */
            if ((rc = push(u, MARK)))
                return rc;
            break;
        case '}':
            if ((rc = push(u, vnew(u, V_DICT))))
                return rc;
            break;
        case ']':
            if ((rc = push(u, vnew(u, V_LIST))))
                return rc;
            break;
        case ')':
            if ((rc = push(u, vnew(u, V_TUPLE))))
                return rc;
            break;
        case 'N':
            if ((rc = push(u, vnew(u, V_NONE))))
                return rc;
            break;
        case 0x88:
        case 0x89: {
            val *v = vnew(u, V_BOOL);
            if (v)
                v->i = op == 0x88;
            if ((rc = push(u, v)))
                return rc;
            break;
        }
        case 'K':
        case 'M':
        case 'J': {
            size_t n = op == 'K' ? 1 : op == 'M' ? 2 : 4;
            if (!need(u, n))
                return perr(u, CLIPL_EFORMAT, "truncated integer");
            val *v = vnew(u, V_INT);
            if (v)
                v->i = op == 'K'   ? u->p[0]
                       : op == 'M' ? (u->p[0] | u->p[1] << 8)
                                   : (int32_t)rd32(u->p);
            u->p += n;
            if ((rc = push(u, v)))
                return rc;
            break;
        }
        case 0x8a: { /* LONG1 */
            if (!need(u, 1) || !need(u, 1 + (size_t)u->p[0]))
                return perr(u, CLIPL_EFORMAT, "truncated LONG1");
            size_t n = *u->p++;
            if (n > 8)
                return perr(u, CLIPL_EUNSUPPORTED, "integer wider than 64 bits");
            uint64_t x = 0;
            for (size_t i = 0; i < n; i++)
                x |= (uint64_t)u->p[i] << (8 * i);
            if (n > 0 && n < 8 && (u->p[n - 1] & 0x80))
                x |= ~(uint64_t)0 << (8 * n); /* sign extend */
            u->p += n;
            val *v = vnew(u, V_INT);
            if (v)
                v->i = (int64_t)x;
            if ((rc = push(u, v)))
                return rc;
            break;
        }
        case 'G': { /* BINFLOAT, big-endian double */
            if (!need(u, 8))
                return perr(u, CLIPL_EFORMAT, "truncated BINFLOAT");
            uint64_t x = 0;
            for (int i = 0; i < 8; i++)
                x = x << 8 | u->p[i];
            u->p += 8;
            val *v = vnew(u, V_FLOAT);
            if (v)
                memcpy(&v->f, &x, 8);
            if ((rc = push(u, v)))
                return rc;
            break;
        }
        case 'X':
        case 0x8c:
        case 0x8d:
        case 'B':
        case 'C': { /* BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, BINBYTES, SHORT_BINBYTES */
            size_t lw = (op == 0x8c || op == 'C') ? 1 : op == 0x8d ? 8 : 4;
            if (!need(u, lw))
                return perr(u, CLIPL_EFORMAT, "truncated string length");
            uint64_t n = 0;
            for (size_t i = lw; i-- > 0;)
                n = n << 8 | u->p[i];
            u->p += lw;
            if (n > (uint64_t)(u->end - u->p))
                return perr(u, CLIPL_EFORMAT, "string runs past the end of the pickle");
            val *v = vnew(u, V_STR);
            if (v && (v->s = malloc((size_t)n + 1))) {
                memcpy(v->s, u->p, (size_t)n);
                v->s[n] = '\0';
            } else {
                v = NULL;
            }
            u->p += n;
            if ((rc = push(u, v)))
                return rc;
            break;
        }
        case 't': { /* TUPLE */
            long m = -1;
            if ((rc = pop_to_mark(u, &m)))
                return rc;
            size_t n = u->nstack - (size_t)m - 1;
            if ((rc = make_tuple(u, n)))
                return rc;
            /* remove the mark under the new tuple */
            u->stack[m] = u->stack[u->nstack - 1];
            u->nstack = (size_t)m + 1;
            break;
        }
        case 0x85:
        case 0x86:
        case 0x87:
            if ((rc = make_tuple(u, (size_t)(op - 0x84))))
                return rc;
            break;
        case 's': { /* SETITEM */
            val *v = pop(u), *k = pop(u), *d = top(u);
            if (!v || !k || !d || d->kind != V_DICT)
                return perr(u, CLIPL_EFORMAT, "SETITEM needs a dict, a key and a value");
            if (vpush_item(d, k) || vpush_item(d, v))
                return perr(u, CLIPL_ENOMEM, "out of memory");
            break;
        }
        case 'u':   /* SETITEMS */
        case 'e': { /* APPENDS */
            long m = -1;
            if ((rc = pop_to_mark(u, &m)))
                return rc;
            if (m < 1 || u->stack[m - 1] == MARK)
                return perr(u, CLIPL_EFORMAT, "SETITEMS/APPENDS without a container");
            val *c = u->stack[m - 1];
            size_t n = u->nstack - (size_t)m - 1;
            if (op == 'u' ? (c->kind != V_DICT || n % 2) : c->kind != V_LIST)
                return perr(u, CLIPL_EFORMAT,
                            op == 'u' ? "SETITEMS on a non-dict or odd items"
                                      : "APPENDS on a non-list");
            for (size_t i = (size_t)m + 1; i < u->nstack; i++)
                if (vpush_item(c, u->stack[i]))
                    return perr(u, CLIPL_ENOMEM, "out of memory");
            u->nstack = (size_t)m;
            break;
        }
        case 'a': { /* APPEND */
            val *v = pop(u), *l = top(u);
            if (!v || !l || l->kind != V_LIST)
                return perr(u, CLIPL_EFORMAT, "APPEND needs a list and a value");
            if (vpush_item(l, v))
                return perr(u, CLIPL_ENOMEM, "out of memory");
            break;
        }
        case 'q':
        case 'r': { /* BINPUT, LONG_BINPUT */
            uint64_t idx;
            if ((rc = memo_arg(u, op == 'q', "truncated PUT", &idx)) || (rc = memo_put(u, idx)))
                return rc;
            break;
        }
        case 0x94: /* MEMOIZE: the next index is the memo's length */
            if ((rc = memo_put(u, u->memo_len)))
                return rc;
            break;
        case 'h':
        case 'j': { /* BINGET, LONG_BINGET */
            uint64_t idx;
            if ((rc = memo_arg(u, op == 'h', "truncated GET", &idx)) || (rc = memo_get(u, idx)))
                return rc;
            break;
        }
        case '0': /* POP */
            if (u->nstack == 0)
                return perr(u, CLIPL_EFORMAT, "POP on an empty stack");
            u->nstack--;
            break;
        case '1': { /* POP_MARK */
            long m = -1;
            if ((rc = pop_to_mark(u, &m)))
                return rc;
            u->nstack = (size_t)m;
            break;
        }
        case '2': /* DUP */
            if (!top(u))
                return perr(u, CLIPL_EFORMAT, "DUP on an empty stack");
            if ((rc = push(u, top(u))))
                return rc;
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const uint8_t *nl1 = memchr(u->p, '\n', (size_t)(u->end - u->p));
            const uint8_t *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(u->end - nl1 - 1)) : NULL;
            if (!nl2 || nl1 - u->p > 255 || nl2 - nl1 > 256)
                return perr(u, CLIPL_EFORMAT, "bad GLOBAL");
            char module[256], name[256];
            memcpy(module, u->p, (size_t)(nl1 - u->p));
            module[nl1 - u->p] = '\0';
            memcpy(name, nl1 + 1, (size_t)(nl2 - nl1 - 1));
            name[nl2 - nl1 - 1] = '\0';
            u->p = nl2 + 1;
            val *g;
            if ((rc = resolve_global(u, module, name, &g)) || (rc = push(u, g)))
                return rc;
            break;
        }
        case 0x93: { /* STACK_GLOBAL */
            val *name = pop(u), *module = pop(u);
            if (!name || !module || name->kind != V_STR || module->kind != V_STR)
                return perr(u, CLIPL_EFORMAT, "STACK_GLOBAL needs two strings");
            val *g;
            if ((rc = resolve_global(u, module->s, name->s, &g)) || (rc = push(u, g)))
                return rc;
            break;
        }
        case 'R':
        case 0x81: { /* REDUCE, NEWOBJ */
            val *args = pop(u), *fn = pop(u), *res = NULL;
            if ((rc = call_global(u, fn, args, op == 0x81, &res)) || (rc = push(u, res)))
                return rc;
            break;
        }
        case 'b': { /* BUILD */
            val *state = pop(u), *obj = top(u);
            if (!state || !obj)
                return perr(u, CLIPL_EFORMAT, "BUILD needs an object and a state");
            if (obj->kind == V_OBJ) {
                if (state->kind != V_DICT || obj->n)
                    return perr(u, CLIPL_EFORMAT, "BUILD of a module object needs one dict");
                if (vpush_item(obj, state))
                    return perr(u, CLIPL_ENOMEM, "out of memory");
            } else if (obj->kind == V_TENSOR || obj->kind == V_DICT) {
                /* tensor/OrderedDict state (e.g. _metadata): nothing we need */
            } else {
                return perr(u, CLIPL_EFORMAT, "BUILD on a value that is not a module object");
            }
            break;
        }
        case 'Q': { /* BINPERSID */
            val *pid = pop(u), *s = NULL;
            if ((rc = persistent_load(u, pid, &s)) || (rc = push(u, s)))
                return rc;
            break;
        }
        default: {
            char msg[96];
            snprintf(msg, sizeof msg, "unsupported pickle opcode 0x%02x", op);
            return perr(u, CLIPL_EFORMAT, msg);
        }
        }
    }
}

/* ---- flattening to a state dict ----------------------------------------------------------------
 */

typedef struct flat {
    char **names;
    clipl_tensor **ts; /* borrowed from the arena */
    int n, cap;
} flat;

static int flat_add(flat *fl, const char *prefix, const char *key, clipl_tensor *t)
{
    if (fl->n == fl->cap) {
        int cap = fl->cap ? fl->cap * 2 : 64;
        char **nm = realloc(fl->names, (size_t)cap * sizeof *nm);
        if (nm)
            fl->names = nm;
        clipl_tensor **ts = nm ? realloc(fl->ts, (size_t)cap * sizeof *ts) : NULL;
        if (!ts)
            return clipl__err(CLIPL_ENOMEM, "out of memory");
        fl->ts = ts;
        fl->cap = cap;
    }
    size_t n = strlen(prefix) + strlen(key) + 1;
    char *s = malloc(n);
    if (!s)
        return clipl__err(CLIPL_ENOMEM, "out of memory");
    snprintf(s, n, "%s%s", prefix, key);
    fl->names[fl->n] = s;
    fl->ts[fl->n] = t;
    fl->n++;
    return CLIPL_OK;
}

static const val *obj_state(const val *v) { return v->kind == V_OBJ && v->n ? v->items[0] : NULL; }

/* Walks dicts and module objects; tensors get dotted names, everything else is skipped. */
static int flatten(up *u, const val *v, const char *prefix, int depth, flat *fl)
{
    if (depth > 64)
        return clipl__err(CLIPL_EFORMAT, "%s: data.pkl: nesting deeper than 64 levels (a cycle?)",
                          u->path);
    const val *d = v->kind == V_DICT ? v : obj_state(v);
    if (!d)
        return CLIPL_OK;
    for (int i = 0; i + 1 < d->n; i += 2) {
        const val *k = d->items[i], *x = d->items[i + 1];
        char kbuf[32];
        const char *key;
        if (k->kind == V_STR)
            key = k->s;
        else if (k->kind == V_INT)
            snprintf(kbuf, sizeof kbuf, "%lld", (long long)k->i), key = kbuf;
        else
            continue;
        int rc;
        if (x->kind == V_TENSOR) {
            if ((rc = flat_add(fl, prefix, key, x->t)))
                return rc;
        } else if (x->kind == V_DICT || x->kind == V_OBJ) {
            size_t n = strlen(prefix) + strlen(key) + 2;
            char *sub = malloc(n);
            if (!sub)
                return clipl__err(CLIPL_ENOMEM, "out of memory");
            snprintf(sub, n, "%s%s.", prefix, key);
            rc = flatten(u, x, sub, depth + 1, fl);
            free(sub);
            if (rc)
                return rc;
        }
    }
    return CLIPL_OK;
}

static const val *dict_lookup(const val *d, const char *key)
{
    for (int i = 0; i + 1 < d->n; i += 2)
        if (d->items[i]->kind == V_STR && strcmp(d->items[i]->s, key) == 0)
            return d->items[i + 1];
    return NULL;
}

/* Is v a dict or module object holding at least one tensor (directly or nested)? */
static bool has_tensor(const val *v, int depth)
{
    const val *d = v->kind == V_DICT ? v : obj_state(v);
    if (!d || depth > 64)
        return false;
    for (int i = 1; i < d->n; i += 2)
        if (d->items[i]->kind == V_TENSOR || has_tensor(d->items[i], depth + 1))
            return true;
    return false;
}

static int to_tdict(up *u, const val *root, clipl_tdict *d)
{
    flat fl = {0};
    int rc = CLIPL_OK;
    const val *sd = root;
    const val *rootd = root->kind == V_DICT ? root : obj_state(root);
    if (!rootd)
        return clipl__err(CLIPL_EFORMAT,
                          "%s: data.pkl holds neither a state dict nor a module object", u->path);
    if (root->kind == V_DICT) {
        /* a training checkpoint: keep only its model state */
        static const char *const keys[] = {
            "state_dict", "model_state_dict", "model", "module", "net", "ema"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            const val *x = dict_lookup(root, keys[i]);
            if (x && has_tensor(x, 0)) {
                sd = x;
                break;
            }
        }
        /* scalar entries of a checkpoint (epoch, name, ...) become metadata */
        for (int i = 0; sd != root && i + 1 < root->n; i += 2) {
            const val *k = root->items[i], *x = root->items[i + 1];
            char num[32];
            if (k->kind != V_STR)
                continue;
            if (x->kind == V_STR)
                rc = clipl_tdict_set_meta(d, k->s, x->s);
            else if (x->kind == V_INT) {
                snprintf(num, sizeof num, "%lld", (long long)x->i);
                rc = clipl_tdict_set_meta(d, k->s, num);
            }
            if (rc)
                return rc;
        }
    } else {
        /* TorchScript: the int64 scalar buffers OpenAI adds are model facts, not weights */
        static const char *const facts[] = {"input_resolution", "context_length", "vocab_size"};
        for (size_t i = 0; i < sizeof facts / sizeof facts[0]; i++) {
            const val *x = dict_lookup(rootd, facts[i]);
            if (x && x->kind == V_TENSOR && clipl_tensor_numel(x->t) == 1 &&
                (x->t->dt == CLIPL_I64 || x->t->dt == CLIPL_I32)) {
                double v;
                char num[32];
                if ((rc = clipl_tensor_get_flat(x->t, 0, &v)))
                    return rc;
                snprintf(num, sizeof num, "%lld", (long long)v);
                if ((rc = clipl_tdict_set_meta(d, facts[i], num)))
                    return rc;
            }
        }
    }
    if ((rc = flatten(u, sd, "", 0, &fl)))
        goto done;
    /* DataParallel / DDP checkpoints prefix every key with "module." */
    bool strip = fl.n > 0;
    for (int i = 0; i < fl.n && strip; i++)
        strip = strncmp(fl.names[i], "module.", 7) == 0;
    for (int i = 0; i < fl.n; i++) {
        const char *name = fl.names[i] + (strip ? 7 : 0);
        if (root->kind == V_OBJ && sd == root &&
            (strcmp(name, "input_resolution") == 0 || strcmp(name, "context_length") == 0 ||
             strcmp(name, "vocab_size") == 0) &&
            clipl_tdict_meta_get(d, name))
            continue;
        if (clipl_tdict_find(d, name) >= 0) {
            rc = clipl__err(CLIPL_EFORMAT, "%s: tensor name '%s' appears twice", u->path, name);
            goto done;
        }
        if ((rc = clipl_tdict_add(d, name, fl.ts[i])))
            goto done;
    }
done:
    for (int i = 0; i < fl.n; i++)
        free(fl.names[i]);
    free(fl.names);
    free(fl.ts);
    return rc;
}

/* ---- entry point -------------------------------------------------------------------------------
 */

clipl_tdict *clipl_pt_load(const char *path)
{
    clipl__mfile f;
    clipl__zip z;
    up u;
    clipl_storage *pkl = NULL;
    clipl_tdict *d = NULL;
    char prefix[512];
    memset(&u, 0, sizeof u);
    memset(&z, 0, sizeof z);
    if (clipl__mfile_open(&f, path))
        return NULL;
    if (clipl__zip_open(&z, &f))
        goto fail;
    /* the archive's data.pkl is "<top folder>/data.pkl"; the folder's name is arbitrary */
    int pi = -1;
    for (int i = 0; i < z.count; i++) {
        const char *nm = z.e[i].name, *slash = strchr(nm, '/');
        if (slash && strcmp(slash + 1, "data.pkl") == 0 && (size_t)(slash - nm) < sizeof prefix) {
            if (pi >= 0) {
                clipl__err(CLIPL_EFORMAT, "%s: more than one data.pkl in the archive", path);
                goto fail;
            }
            pi = i;
        }
    }
    if (pi < 0) {
        clipl__err(CLIPL_EFORMAT, "%s: a zip archive without <folder>/data.pkl: not a PyTorch file",
                   path);
        goto fail;
    }
    size_t plen = (size_t)(strchr(z.e[pi].name, '/') - z.e[pi].name) + 1;
    memcpy(prefix, z.e[pi].name, plen);
    prefix[plen] = '\0';
    /* torch >= 1.10 records the byte order of the storages */
    char bo_name[600];
    snprintf(bo_name, sizeof bo_name, "%sbyteorder", prefix);
    int bi = clipl__zip_find(&z, bo_name);
    if (bi >= 0) {
        clipl_storage *bo = NULL;
        if (clipl__zip_read(&z, bi, &bo))
            goto fail;
        bool little =
            clipl_storage_nbytes(bo) == 6 && memcmp(clipl_storage_data(bo), "little", 6) == 0;
        clipl_storage_release(bo);
        if (!little) {
            clipl__err(CLIPL_EUNSUPPORTED, "%s: storages are not little-endian", path);
            goto fail;
        }
    }
    if (clipl__zip_read(&z, pi, &pkl))
        goto fail;
    u.path = path;
    u.f = &f;
    u.zip = &z;
    u.prefix = prefix;
    u.start = u.p = clipl_storage_data(pkl);
    u.end = u.start + clipl_storage_nbytes(pkl);
    val *root = NULL;
    if (run(&u, &root))
        goto fail;
    d = clipl_tdict_new();
    if (!d)
        goto fail;
    clipl__tdict_set_format(d, root->kind == V_OBJ ? "torchscript" : "pt");
    if (to_tdict(&u, root, d))
        goto fail;
    up_free(&u);
    clipl_storage_release(pkl);
    clipl__zip_close(&z);
    clipl__mfile_close(&f);
    return d;
fail:
    clipl_tdict_free(d);
    up_free(&u);
    clipl_storage_release(pkl);
    clipl__zip_close(&z);
    clipl__mfile_close(&f);
    return NULL;
}
