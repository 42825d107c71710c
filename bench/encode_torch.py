#!/usr/bin/env python3
"""PyTorch baseline for bench/encode: OpenAI's CLIP architectures (VisionTransformer,
ModifiedResNet, causal text Transformer; written here from the published architecture, no
OpenAI code), timed the way bench/encode times clipl.

Weights: with --weights-dir DIR, the seeded weights clipl built (DIR/<model>-seed1.safetensors,
written by bench/encode; '/' in the name becomes '-'), so both sides run the same model;
otherwise torch's own seeded random weights. Inputs: --images IMGS.npy ([16, 3, R, R] f32; batch b
uses the first b) or torch.randn.

Prints one JSON object: {"torch", "threads", "blas", "blas_core", "blas_coretype_from",
"<model>/<what>/<dtype>/<variant>": {"median", "min", "max"} seconds per call, ...}.
Variants: eager and jit (torch.jit.trace + freeze), in f32 and in bf16 (Linear/Conv/attention
weights bfloat16, LayerNorm float32, as CLIP's convert_weights does for fp16). With --out-dir DIR
the f32 eager outputs are saved as DIR/torch-<model>-image16.npy and -text<N>.npy.

OpenBLAS 0.3.21 (Debian 12) does not recognise AMD Zen 4 and falls back to its Prescott (SSE3)
kernels, about 6x slower than its AVX-512 ones; unless OPENBLAS_CORETYPE is set, this module sets
it to SkylakeX on a CPU with AVX-512 (F, BW, DQ, VL) before torch is imported. The other PyTorch
baselines (zeroshot_torch.py, train_torch.py) import this module first for that reason.

usage: encode_torch.py --tokens TOKENS.npy [--repeat N] [--threads T] [--models ViT-B/32,RN50]
                       [--dtypes f32,bf16] [--batches 1,16] [--no-jit] [--weights-dir DIR]
                       [--images IMGS.npy] [--out-dir DIR]
"""
import argparse
import ctypes
import json
import os
import statistics
import struct
import time
from collections import OrderedDict


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _choose_openblas_core():
    if os.environ.get("OPENBLAS_CORETYPE"):
        return "user"
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= _cpu_flags():
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
        return "bench"
    return "default"


OPENBLAS_CORETYPE_FROM = _choose_openblas_core()  # must run before torch loads OpenBLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


def blas_info():
    """The BLAS torch calls (libblas.so.3, the same loaded instance) and the core it runs."""
    info = {"blas": "not OpenBLAS", "blas_core": "-", "blas_coretype_from": OPENBLAS_CORETYPE_FROM}
    try:
        lib = ctypes.CDLL("libblas.so.3")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        lib.openblas_get_config.restype = ctypes.c_char_p
        info["blas"] = lib.openblas_get_config().decode()
        info["blas_core"] = lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        pass
    return info


def describe_blas():
    """One line for the benchmarks' output."""
    i = blas_info()
    how = {"user": "OPENBLAS_CORETYPE set by the user",
           "bench": "OPENBLAS_CORETYPE=SkylakeX set by the bench",
           "default": "OpenBLAS' own detection"}[i["blas_coretype_from"]]
    return "PyTorch BLAS: %s, core %s (%s)" % (i["blas"], i["blas_core"], how)


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


def slug(name):
    return name.replace("/", "-")


SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """{name: float32 tensor} of a safetensors file (F32, F16, BF16, I64, I32), read with numpy."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            f.seek(base + a)
            raw = f.read(b - a)
            if info["dtype"] == "BF16":
                arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=SAFETENSORS_DTYPES[info["dtype"]])
            out[name] = torch.from_numpy(arr.reshape(info["shape"]).astype(np.float32))
        return out


def build(name, weights=None):
    """(visual, text, resolution) of model NAME in eval mode, with the weights of the safetensors
    file WEIGHTS (OpenAI's state_dict names, as clipl writes them) or torch's random ones."""
    visual, res = CONFIGS[name]()
    text = Text(*TEXT[name])
    if weights:
        sd = read_safetensors(weights)
        visual.load_state_dict({k[len("visual."):]: v for k, v in sd.items()
                                if k.startswith("visual.")})
        text.load_state_dict({k: v for k, v in sd.items()
                              if not k.startswith("visual.") and k != "logit_scale"})
    return visual.eval(), text.eval(), res


def timeit(fn, repeat):
    with torch.no_grad():
        fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def time_variants(out, key, model, x, a):
    """out[key/eager] and, unless --no-jit, out[key/jit] (trace + freeze; its error if it fails)."""
    out[key + "/eager"] = timeit(lambda: model(x), a.repeat)
    if a.no_jit:
        return
    try:
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(model, x))
        out[key + "/jit"] = timeit(lambda: traced(x), a.repeat)
    except Exception as e:  # a baseline that cannot trace is reported, not fatal
        out[key + "/jit_error"] = str(e).splitlines()[0] if str(e) else type(e).__name__


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="ViT-B/32,RN50")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--no-jit", action="store_true")
    ap.add_argument("--weights-dir")
    ap.add_argument("--images")
    ap.add_argument("--out-dir")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tokens = torch.from_numpy(np.load(a.tokens).astype(np.int64))
    images = torch.from_numpy(np.load(a.images)) if a.images else None
    out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    out.update(blas_info())
    for name in a.models.split(","):
        weights = a.weights_dir and os.path.join(a.weights_dir, slug(name) + "-seed1.safetensors")
        if weights and not os.path.exists(weights):
            weights = None
        out[name + "/weights"] = weights or "torch.manual_seed(0)"
        for dtype in a.dtypes.split(","):
            torch.manual_seed(0)
            visual, text, res = build(name, weights)
            if dtype == "bf16":
                to_bf16(visual), to_bf16(text)
            for b in (int(x) for x in a.batches.split(",")):
                ok = images is not None and images.shape[0] >= b and images.shape[-1] == res
                imgs = images[:b] if ok else torch.randn(b, 3, res, res)
                time_variants(out, f"{name}/image{b}/{dtype}", visual, imgs, a)
            time_variants(out, f"{name}/text{tokens.shape[0]}/{dtype}", text, tokens, a)
            if dtype == "f32" and a.out_dir and images is not None:
                with torch.no_grad():
                    for what, y in (("image%d" % images.shape[0], visual(images)),
                                    ("text%d" % tokens.shape[0], text(tokens))):
                        np.save(os.path.join(a.out_dir, f"torch-{slug(name)}-{what}.npy"),
                                y.float().numpy())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
