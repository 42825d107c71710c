#!/usr/bin/python3
"""Golden values for tests/spec/autograd_spec.lua and optim_spec.lua, computed with PyTorch
(Debian's python3-torch) in float64 from float32 inputs:

  cross_entropy  F.cross_entropy (with and without label_smoothing): loss and d loss / d logits
  clip_loss      open_clip's ClipLoss (normalize, exp(logit_scale) * img @ txt.T, mean of the two
                 cross entropies): loss and the gradients of both feature sets and logit_scale
  adamw          torch.optim.AdamW on a tiny two-tower problem trained with clip_loss for 8 steps,
                 lr from open_clip's cosine_lr (warm-up 3, 8 steps), weight decay only on tensors
                 of 2 or more dims, logit_scale clamped to [0, ln 100] after each step: the loss
                 of each step and the final parameters

Run: /usr/bin/python3 tests/data/make_autograd_golden.py > tests/data/autograd_golden.json
"""
import json
import math

import torch
import torch.nn.functional as F

torch.manual_seed(0)


def f32(shape, scale=1.0):
    return (torch.randn(*shape) * scale).float().double()


def lst(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


out = {}

# cross entropy
logits = f32((4, 5)).requires_grad_(True)
labels = torch.tensor([2, 0, 4, 1])
ce = {"logits": lst(logits), "shape": [4, 5], "labels": [int(v) + 1 for v in labels]}
for name, eps in (("plain", 0.0), ("smooth", 0.1)):
    logits.grad = None
    loss = F.cross_entropy(logits, labels, label_smoothing=eps)
    loss.backward()
    ce[name] = {"label_smoothing": eps, "loss": loss.item(), "grad": lst(logits.grad)}
out["cross_entropy"] = ce


def clip_loss(img, txt, logit_scale):
    img = F.normalize(img, dim=-1)
    txt = F.normalize(txt, dim=-1)
    li = logit_scale.exp() * img @ txt.T
    lab = torch.arange(img.shape[0])
    return (F.cross_entropy(li, lab) + F.cross_entropy(li.T, lab)) / 2


img = f32((4, 6)).requires_grad_(True)
txt = f32((4, 6)).requires_grad_(True)
ls = torch.tensor(math.log(1 / 0.07), dtype=torch.float64).float().double().requires_grad_(True)
loss = clip_loss(img, txt, ls)
loss.backward()
out["clip_loss"] = {"img": lst(img), "txt": lst(txt), "shape": [4, 6], "logit_scale": ls.item(),
                    "loss": loss.item(), "grad_img": lst(img.grad), "grad_txt": lst(txt.grad),
                    "grad_logit_scale": ls.grad.item()}

# AdamW on a tiny two-tower problem
x = f32((4, 3))
t = f32((4, 2))
W1 = f32((3, 5), 0.5).requires_grad_(True)
W2 = f32((2, 5), 0.5).requires_grad_(True)
b2 = f32((5,), 0.1).requires_grad_(True)
lsc = torch.tensor(math.log(1 / 0.07), dtype=torch.float64).float().double().requires_grad_(True)
init = {"x": lst(x), "t": lst(t), "W1": lst(W1), "W2": lst(W2), "b2": lst(b2),
        "logit_scale": lsc.item()}
base_lr, warmup, steps = 1e-2, 3, 8
opt = torch.optim.AdamW([{"params": [W1, W2], "weight_decay": 0.2},
                         {"params": [b2, lsc], "weight_decay": 0.0}],
                        lr=base_lr, betas=(0.9, 0.98), eps=1e-6)


def cosine_lr(step):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e, es = step - warmup, steps - warmup
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base_lr


losses, lrs = [], []
for step in range(steps):
    lr = cosine_lr(step)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad()
    loss = clip_loss(x @ W1, t @ W2 + b2, lsc)
    loss.backward()
    opt.step()
    with torch.no_grad():
        lsc.clamp_(0, math.log(100))
    losses.append(loss.item())
    lrs.append(lr)
out["adamw"] = {"init": init, "lr": base_lr, "betas": [0.9, 0.98], "eps": 1e-6,
                "weight_decay": 0.2, "warmup": warmup, "steps": steps, "losses": losses,
                "lrs": lrs, "final": {"W1": lst(W1), "W2": lst(W2), "b2": lst(b2),
                                      "logit_scale": lsc.item()}}

print(json.dumps(out, indent=1))
