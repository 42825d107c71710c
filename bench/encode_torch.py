#!/usr/bin/env python3
"""PyTorch baseline for bench/encode: OpenAI's CLIP architectures (VisionTransformer,
ModifiedResNet, causal text Transformer; written here from the published architecture, no
OpenAI code) with seeded random weights, timed the way bench/encode times clipl.

Prints one JSON object: {"<model>/<what>/<dtype>/<variant>": seconds per call (median), ...}.
Variants: eager, and jit (torch.jit.trace + freeze) for f32; bf16 runs eager with Linear/Conv
weights in bfloat16 and LayerNorm in float32 (as CLIP's convert_weights does for fp16).

usage: encode_torch.py --tokens TOKENS.npy [--repeat N] [--threads T] [--models ViT-B/32,RN50]
"""
import argparse
import json
import statistics
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, w, heads, mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(w, heads)
        self.ln_1 = LayerNorm(w)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(w, 4 * w)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * w, w))]))
        self.ln_2 = LayerNorm(w)
        self.mask = mask

    def forward(self, x):
        m = self.mask.to(x.dtype) if self.mask is not None else None
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=m)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, w, layers, heads, mask=None):
        super().__init__()
        self.resblocks = nn.Sequential(*[Block(w, heads, mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class ViT(nn.Module):
    def __init__(self, res, patch, w, layers, heads, out):
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, patch, patch, bias=False)
        s = w ** -0.5
        self.class_embedding = nn.Parameter(s * torch.randn(w))
        self.positional_embedding = nn.Parameter(s * torch.randn((res // patch) ** 2 + 1, w))
        self.ln_pre = LayerNorm(w)
        self.transformer = Transformer(w, layers, heads)
        self.ln_post = LayerNorm(w)
        self.proj = nn.Parameter(s * torch.randn(w, out))

    def forward(self, x):
        x = self.conv1(x.to(self.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1],
                                                             dtype=x.dtype)
        x = torch.cat([cls, x], 1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)
        x = self.transformer(x).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class Bottleneck(nn.Module):
    def __init__(self, inp, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(inp, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride > 1 or inp != planes * 4:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inp, planes * 4, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * 4))]))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        idt = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + idt)


class AttnPool(nn.Module):
    def __init__(self, grid, dim, heads, out):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, dim) / dim ** 0.5)
        self.k_proj, self.q_proj, self.v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.c_proj = nn.Linear(dim, out)
        self.heads = heads

    def forward(self, x):
        x = x.flatten(2).permute(2, 0, 1)
        x = torch.cat([x.mean(0, keepdim=True), x], 0) + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight, in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=False, need_weights=False)
        return x.squeeze(0)


class ResNet(nn.Module):
    def __init__(self, layers, out, heads, res, w):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, w // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(w // 2)
        self.conv2, self.bn2 = nn.Conv2d(w // 2, w // 2, 3, padding=1, bias=False), nn.BatchNorm2d(w // 2)
        self.conv3, self.bn3 = nn.Conv2d(w // 2, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)
        self.avgpool = nn.AvgPool2d(2)
        inp, stages = w, []
        for i, n in enumerate(layers):
            planes = w * 2 ** i
            blocks = [Bottleneck(inp, planes, 1 if i == 0 else 2)]
            inp = planes * 4
            blocks += [Bottleneck(inp, planes, 1) for _ in range(1, n)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttnPool(res // 32, w * 32, heads, out)

    def forward(self, x):
        x = x.to(self.conv1.weight.dtype)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.avgpool(F.relu(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


class Text(nn.Module):
    def __init__(self, ctx, vocab, w, layers, heads, out):
        super().__init__()
        mask = torch.full((ctx, ctx), float("-inf")).triu_(1)
        self.transformer = Transformer(w, layers, heads, mask)
        self.token_embedding = nn.Embedding(vocab, w)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(ctx, w))
        self.ln_final = LayerNorm(w)
        self.text_projection = nn.Parameter(torch.randn(w, out) * w ** -0.5)

    def forward(self, text):
        dt = self.text_projection.dtype
        x = (self.token_embedding(text) + self.positional_embedding).to(dt).permute(1, 0, 2)
        x = self.transformer(x).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


CONFIGS = {
    "ViT-B/32": lambda: (ViT(224, 32, 768, 12, 12, 512), 224),
    "RN50": lambda: (ResNet((3, 4, 6, 3), 1024, 32, 224, 64), 224),
}
TEXT = {"ViT-B/32": (77, 49408, 512, 12, 8, 512), "RN50": (77, 49408, 512, 12, 8, 1024)}


def to_bf16(model):
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.MultiheadAttention, nn.BatchNorm2d)):
            m.to(torch.bfloat16)
    for name in ("proj", "text_projection", "class_embedding", "positional_embedding"):
        if hasattr(model, name):
            getattr(model, name).data = getattr(model, name).data.to(torch.bfloat16)
    if isinstance(model, ResNet):
        model.attnpool.to(torch.bfloat16)
    return model


def timeit(fn, repeat):
    with torch.no_grad():
        fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="ViT-B/32,RN50")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--no-jit", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tokens = torch.from_numpy(np.load(a.tokens).astype(np.int64))
    out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    for name in a.models.split(","):
        for dtype in ("f32", "bf16"):
            visual, res = CONFIGS[name]()
            text = Text(*TEXT[name])
            visual.eval(), text.eval()
            if dtype == "bf16":
                to_bf16(visual), to_bf16(text)
            for b in (int(x) for x in a.batches.split(",")):
                imgs = torch.randn(b, 3, res, res)
                out[f"{name}/image{b}/{dtype}/eager"] = timeit(lambda: visual(imgs), a.repeat)
                if dtype == "f32" and not a.no_jit:
                    with torch.no_grad():
                        traced = torch.jit.freeze(torch.jit.trace(visual, imgs))
                    out[f"{name}/image{b}/{dtype}/jit"] = timeit(lambda: traced(imgs), a.repeat)
            out[f"{name}/text{tokens.shape[0]}/{dtype}/eager"] = timeit(lambda: text(tokens), a.repeat)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
