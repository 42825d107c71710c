#!/usr/bin/python3
"""Golden for tests/spec/train_spec.lua: 20 AdamW steps of CLIP training on the tiny ViT model of
../shared/clip/parity, computed with PyTorch (Debian's python3-torch) in float64 from the float32
weights, so the golden carries no float32 rounding of its own.

The forward is written here from the architecture in ../shared/clip/parity/README.md (OpenAI's
clip/model.py is not in this repository); the script first checks that it reproduces
expected_encode_image.npy / expected_encode_text.npy (max |diff| <= 1e-5 x max |expected|).

Batch: images_64.npy (4 images) paired with rows 0, 1, 2, 5 of tokens_v1024.npy (row 5 ends at
position 76, so every text position is used). Loss: open_clip's ClipLoss. Optimizer:
torch.optim.AdamW(lr 1e-4, betas (0.9, 0.98), eps 1e-6, weight_decay 0.2) with no decay on tensors
of fewer than 2 dims; open_clip's cosine_lr (warm-up 5, 20 steps); logit_scale clamped to
[0, ln 100] after each step.

Writes tests/data/train_parity/golden.json (the loss and lr of each step) and
tests/data/train_parity/final.safetensors (every parameter after the 20 steps, float32).

Run from the checkout: /usr/bin/python3 tests/data/train_parity/make_train_parity.py
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
PARITY = os.path.join(HERE, "..", "..", "..", "..", "shared", "clip", "parity")
STEPS, WARMUP, LR, WD = 20, 5, 1e-4, 0.2
TEXT_ROWS = [0, 1, 2, 5]
torch.set_num_threads(1)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64}[v["dtype"]]
        out[k] = np.frombuffer(data[a:b], dtype=dt).reshape(v["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for k in sorted(tensors):
        b = np.ascontiguousarray(tensors[k], dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(tensors[k].shape),
                     "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def layer_norm(x, P, name):
    return F.layer_norm(x, x.shape[-1:], P[name + ".weight"], P[name + ".bias"], 1e-5)


def attention(x, P, name, heads, mask):
    n, t, w = x.shape
    qkv = x @ P[name + ".in_proj_weight"].t() + P[name + ".in_proj_bias"]
    q, k, v = qkv.split(w, dim=-1)
    hd = w // heads

    def split(z):
        return z.reshape(n, t, heads, hd).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    if mask is not None:
        s = s + mask
    o = (s.softmax(-1) @ v).transpose(1, 2).reshape(n, t, w)
    return o @ P[name + ".out_proj.weight"].t() + P[name + ".out_proj.bias"]


def transformer(x, P, prefix, layers, heads, mask):
    for i in range(layers):
        b = "%s.resblocks.%d." % (prefix, i)
        x = x + attention(layer_norm(x, P, b + "ln_1"), P, b + "attn", heads, mask)
        h = layer_norm(x, P, b + "ln_2") @ P[b + "mlp.c_fc.weight"].t() + P[b + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ P[b + "mlp.c_proj.weight"].t() + P[b + "mlp.c_proj.bias"]
    return x


def encode_image(P, images):
    w = P["visual.conv1.weight"]
    x = F.conv2d(images, w, stride=w.shape[-1])
    n, c = x.shape[0], x.shape[1]
    x = x.reshape(n, c, -1).permute(0, 2, 1)
    cls = P["visual.class_embedding"].reshape(1, 1, c).expand(n, 1, c)
    x = torch.cat([cls, x], dim=1) + P["visual.positional_embedding"]
    x = layer_norm(x, P, "visual.ln_pre")
    x = transformer(x, P, "visual.transformer", 2, c // 64, None)
    return layer_norm(x[:, 0, :], P, "visual.ln_post") @ P["visual.proj"]


def encode_text(P, tokens):
    x = P["token_embedding.weight"][tokens] + P["positional_embedding"]
    t, w = tokens.shape[1], x.shape[-1]
    mask = torch.full((t, t), float("-inf"), dtype=x.dtype).triu(1)
    x = transformer(x, P, "transformer", 2, w // 64, mask)
    x = layer_norm(x, P, "ln_final")
    return x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ P["text_projection"]


def clip_loss(img, txt, logit_scale):
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = logit_scale.exp() * img @ txt.t()
    labels = torch.arange(img.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def cosine_lr(step):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    e, es = step - WARMUP, STEPS - WARMUP
    return 0.5 * (1 + math.cos(math.pi * e / es)) * LR


def main():
    sd = read_safetensors(os.path.join(PARITY, "tiny_vit", "tiny_vit.safetensors"))
    names = [k for k in sd if sd[k].dtype == np.float32]
    P = {k: torch.tensor(sd[k], dtype=torch.float64, requires_grad=True) for k in names}
    images = torch.tensor(np.load(os.path.join(PARITY, "inputs", "images_64.npy")),
                          dtype=torch.float64)
    all_tokens = torch.tensor(np.load(os.path.join(PARITY, "inputs", "tokens_v1024.npy")),
                              dtype=torch.int64)

    with torch.no_grad():
        for what, got in (("encode_image", encode_image(P, images)),
                          ("encode_text", encode_text(P, all_tokens))):
            exp = np.load(os.path.join(PARITY, "tiny_vit", "expected_%s.npy" % what))
            err = np.abs(got.numpy() - exp).max() / np.abs(exp).max()
            assert err <= 1e-5, (what, err)

    tokens = all_tokens[TEXT_ROWS]
    decay = [P[k] for k in names if P[k].ndim >= 2]
    no_decay = [P[k] for k in names if P[k].ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.98), eps=1e-6)
    losses, lrs = [], []
    for step in range(STEPS):
        lr = cosine_lr(step)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = clip_loss(encode_image(P, images), encode_text(P, tokens), P["logit_scale"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            P["logit_scale"].clamp_(0, math.log(100))
        losses.append(loss.item())
        lrs.append(lr)

    with open(os.path.join(HERE, "golden.json"), "w") as f:
        json.dump({"source": "make_train_parity.py (torch %s, float64)" % torch.__version__,
                   "steps": STEPS, "warmup": WARMUP, "lr": LR, "weight_decay": WD,
                   "betas": [0.9, 0.98], "eps": 1e-6, "text_rows": [r + 1 for r in TEXT_ROWS],
                   "loss": losses, "step_lr": lrs}, f, indent=1)
    write_safetensors(os.path.join(HERE, "final.safetensors"),
                      {k: P[k].detach().float().numpy() for k in names})


if __name__ == "__main__":
    main()
