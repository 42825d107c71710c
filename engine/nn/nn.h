/*
 * nn.h - internals of the CLIP model (engine/nn): the state_dict layout that an architecture
 * implies, the model object and its prepared weights. Not part of the public API.
 */
#ifndef CLIPL_NN_H
#define CLIPL_NN_H

#include "internal.h"

/* How a seeded build fills an entry. */
enum { NN_INIT_NORMAL, NN_INIT_ZEROS, NN_INIT_ONES, NN_INIT_VAR, NN_INIT_LOGIT_SCALE };

/* One state_dict entry implied by an architecture. */
typedef struct nn_entry {
    char name[96];
    int ndim;
    int64_t shape[4];
    int buffer; /* BatchNorm running_mean / running_var: not a parameter */
    int init;   /* NN_INIT_* */
    float std;  /* for NN_INIT_NORMAL */
} nn_entry;

/* The entries of a model of some architecture, in OpenAI's state_dict order. */
typedef struct nn_spec {
    int n, cap;
    nn_entry *e;
} nn_spec;

int clipl__nn_spec_build(const clipl_model_config *cfg, nn_spec *spec);
void clipl__nn_spec_free(nn_spec *spec);

/* A linear layer prepared for oneDNN. */
typedef struct nn_linear {
    clipl_linear_weights *w;
} nn_linear;

/* A convolution with its BatchNorm folded in and ReLU fused, prepared for oneDNN in the compute
 * dtype. */
typedef struct nn_conv {
    clipl_conv2d_weights *w;
} nn_conv;

/* A residual attention block: indices of its LayerNorm parameters and prepared linears. */
typedef struct nn_block {
    int ln1_w, ln1_b, ln2_w, ln2_b;
    nn_linear in_proj, out_proj, c_fc, c_proj;
} nn_block;

/* A ModifiedResNet bottleneck. */
typedef struct nn_bottleneck {
    nn_conv c1, c2, c3, ds;
    int stride;
    int has_ds;
} nn_bottleneck;

/* A state_dict entry held by the model. */
typedef struct nn_param {
    char *name;
    clipl_tensor *t; /* f32, contiguous */
    int buffer;
} nn_param;

struct clipl_model {
    clipl_model_config cfg;
    int dtype;      /* compute dtype of prepared weights */
    int batch_hint; /* images per call for layouts */
    char format[16];
    int np;
    nn_param *p;
    int prepared;
    /* vision, ViT */
    int class_emb, vis_pos, ln_pre_w, ln_pre_b, ln_post_w, ln_post_b;
    nn_linear patch, vis_proj;
    nn_block *vblocks; /* vision_layers[0] */
    /* vision, ResNet */
    nn_conv stem[3];
    nn_bottleneck *rblocks; /* sum of vision_layers */
    int nrblocks;
    int ap_pos;
    nn_linear ap_q, ap_k, ap_v, ap_c;
    /* text */
    int tok_emb, txt_pos, ln_final_w, ln_final_b, logit_scale;
    nn_block *tblocks;
    nn_linear txt_proj;
};

/* Multi-head attention of a packed qkv [N, T, 3W] (contiguous, f32 or bf16: q, k, v side by side,
 * each W = heads x Dh) with scale 1/sqrt(Dh), causal (row i sees columns <= i) or not. dst: new
 * [N, T, W] in qkv's dtype, the heads merged. Inference only (no autograd). engine/ops/attention.c.
 */
int clipl__attention_qkv(const clipl_tensor *qkv, int heads, int causal, clipl_tensor **dst);

/* Layer norm of the rows of x [..., W] (contiguous f32) with weight and bias [W] (contiguous
 * f32), written in dtype (f32 or bf16) in the same pass. dst: new reference. engine/ops/norm.c. */
int clipl__layer_norm_rows(const clipl_tensor *x, const clipl_tensor *weight,
                           const clipl_tensor *bias, double eps, int dtype, clipl_tensor **dst);

/* Parameter i of the model (borrowed). */
static inline clipl_tensor *nn_p(const clipl_model *m, int i) { return m->p[i].t; }

/* Index of name in the model (-1 when absent). */
int clipl__nn_find(const clipl_model *m, const char *name);
/* Builds (or rebuilds) every prepared weight. */
int clipl__nn_prepare(clipl_model *m);
/* Frees the prepared weights. */
void clipl__nn_unprepare(clipl_model *m);

#endif
