#!/usr/bin/python3
"""PyTorch side of bench/train: training steps of a CLIP model (OpenAI's architecture, written
here from the same description as tests/data/train_parity/make_train_parity.py) with clip_loss and
AdamW, on random images and tokens. Prints one JSON line: images/s over the timed steps and the
peak resident memory (ru_maxrss), and the OpenBLAS core torch ran (blas_core; SkylakeX
unless OPENBLAS_CORETYPE is set, see encode_torch.py).

usage: /usr/bin/python3 bench/train_torch.py CONFIG.json BATCH STEPS THREADS [f32|bf16]
"""
import json
import math
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# bench/encode_torch.py, imported before torch: it sets OPENBLAS_CORETYPE=SkylakeX unless set
# (OpenBLAS 0.3.21 mistakes AMD Zen 4 for Prescott and runs SSE3 kernels, about 6x slower)
import encode_torch  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def init(shape, std):
    return (torch.randn(*shape) * std).requires_grad_(True)


def build(cfg):
    v, t, e = cfg["vision_cfg"], cfg["text_cfg"], cfg["embed_dim"]
    P = {}
    w, p, r = v["width"], v["patch_size"], v["image_size"]
    P["visual.conv1.weight"] = init((w, 3, p, p), w ** -0.5)
    P["visual.class_embedding"] = init((w,), w ** -0.5)
    P["visual.positional_embedding"] = init(((r // p) ** 2 + 1, w), w ** -0.5)
    P["visual.proj"] = init((w, e), w ** -0.5)
    tw = t["width"]
    P["token_embedding.weight"] = init((t["vocab_size"], tw), 0.02)
    P["positional_embedding"] = init((t["context_length"], tw), 0.01)
    P["text_projection"] = init((tw, e), tw ** -0.5)
    P["logit_scale"] = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    for prefix, width, layers in (("visual.", w, v["layers"]), ("", tw, t["layers"])):
        for n in ("ln_pre", "ln_post") if prefix else ("ln_final",):
            P[prefix + n + ".weight"] = torch.ones(width, requires_grad=True)
            P[prefix + n + ".bias"] = torch.zeros(width, requires_grad=True)
        for i in range(layers):
            b = "%stransformer.resblocks.%d." % (prefix, i)
            for n, shape in (("attn.in_proj_weight", (3 * width, width)),
                             ("attn.out_proj.weight", (width, width)),
                             ("mlp.c_fc.weight", (4 * width, width)),
                             ("mlp.c_proj.weight", (width, 4 * width))):
                P[b + n] = init(shape, width ** -0.5)
            for n, size in (("attn.in_proj_bias", 3 * width), ("attn.out_proj.bias", width),
                            ("mlp.c_fc.bias", 4 * width), ("mlp.c_proj.bias", width)):
                P[b + n] = torch.zeros(size, requires_grad=True)
            for n in ("ln_1", "ln_2"):
                P[b + n + ".weight"] = torch.ones(width, requires_grad=True)
                P[b + n + ".bias"] = torch.zeros(width, requires_grad=True)
    return P


def ln(x, P, n):
    return F.layer_norm(x, x.shape[-1:], P[n + ".weight"], P[n + ".bias"], 1e-5)


def blocks(x, P, prefix, layers, heads, mask):
    for i in range(layers):
        b = "%stransformer.resblocks.%d." % (prefix, i)
        h = ln(x, P, b + "ln_1")
        n, t, w = h.shape
        q, k, v = F.linear(h, P[b + "attn.in_proj_weight"], P[b + "attn.in_proj_bias"]).split(w, -1)
        sp = lambda z: z.reshape(n, t, heads, w // heads).transpose(1, 2)
        s = sp(q) @ sp(k).transpose(-1, -2) / math.sqrt(w // heads)
        if mask is not None:
            s = s + mask
        o = (s.softmax(-1) @ sp(v)).transpose(1, 2).reshape(n, t, w)
        x = x + F.linear(o, P[b + "attn.out_proj.weight"], P[b + "attn.out_proj.bias"])
        h = F.linear(ln(x, P, b + "ln_2"), P[b + "mlp.c_fc.weight"], P[b + "mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)
        x = x + F.linear(h, P[b + "mlp.c_proj.weight"], P[b + "mlp.c_proj.bias"])
    return x


def encode_image(P, cfg, img):
    v = cfg["vision_cfg"]
    x = F.conv2d(img, P["visual.conv1.weight"], stride=v["patch_size"])
    n, c = x.shape[:2]
    x = x.reshape(n, c, -1).permute(0, 2, 1)
    x = torch.cat([P["visual.class_embedding"].expand(n, 1, c), x], 1)
    x = ln(x + P["visual.positional_embedding"], P, "visual.ln_pre")
    x = blocks(x, P, "visual.", v["layers"], v["width"] // v.get("head_width", 64), None)
    return ln(x[:, 0], P, "visual.ln_post") @ P["visual.proj"]


def encode_text(P, cfg, tok):
    t = cfg["text_cfg"]
    x = P["token_embedding.weight"][tok] + P["positional_embedding"]
    n = tok.shape[1]
    mask = torch.full((n, n), float("-inf")).triu(1)
    x = ln(blocks(x, P, "", t["layers"], t["heads"], mask), P, "ln_final")
    return x[torch.arange(x.shape[0]), tok.argmax(-1)] @ P["text_projection"]


def main():
    cfg = json.load(open(sys.argv[1]))
    batch, steps, threads = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    dtype = sys.argv[5] if len(sys.argv) > 5 else "f32"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    P = build(cfg)
    r = cfg["vision_cfg"]["image_size"]
    img = torch.randn(batch, 3, r, r)
    tok = torch.zeros(batch, cfg["text_cfg"]["context_length"], dtype=torch.long)
    tok[:, 0] = cfg["text_cfg"]["vocab_size"] - 2
    tok[:, 1:12] = torch.randint(1, 1000, (batch, 11))
    tok[:, 12] = cfg["text_cfg"]["vocab_size"] - 1
    decay = [p for p in P.values() if p.ndim >= 2]
    rest = [p for p in P.values() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
    times = []
    for s in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=(dtype == "bf16")):
            fi = encode_image(P, cfg, img)
            ft = encode_text(P, cfg, tok)
        fi, ft = F.normalize(fi.float(), dim=-1), F.normalize(ft.float(), dim=-1)
        logits = P["logit_scale"].exp() * fi @ ft.t()
        lab = torch.arange(batch)
        loss = (F.cross_entropy(logits, lab) + F.cross_entropy(logits.t(), lab)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    timed = times[1:]  # the first step allocates the optimizer state
    print(json.dumps({"impl": "torch " + torch.__version__, "dtype": dtype, "batch": batch,
                      "steps": steps, "threads": threads,
                      "images_per_s": batch * len(timed) / sum(timed),
                      "step_s": sum(timed) / len(timed),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "loss": loss.item(), "blas_core": encode_torch.blas_info()["blas_core"],
                      "blas_coretype_from": encode_torch.OPENBLAS_CORETYPE_FROM}))


if __name__ == "__main__":
    main()
