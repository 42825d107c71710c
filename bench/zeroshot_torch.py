#!/usr/bin/env python3
"""PyTorch baseline for bench/zeroshot, done the way OpenAI's ImageNet notebook and README do it:

- classifier: for each class, encode its prompts (all templates, full 77-token rows, as
  clip.tokenize gives), normalise each embedding, average, normalise again;
- embedding: decode each JPEG with PIL, preprocess with torchvision as OpenAI's _transform
  (Resize(224, bicubic), CenterCrop(224), RGB, ToTensor, Normalize with CLIP's mean/std), encode in
  batches, normalise.

The model is bench/encode_torch.py's ViT-B/32 (OpenAI's architecture, parameter names as OpenAI's
state_dict), loaded with the same seeded weights clipl used (a safetensors file written by clipl,
read here with numpy). Tokens come from clipl's tokenizer (identical to OpenAI's: the tokenizer
spec checks it against OpenAI's output), so both sides encode the same ids.

  zeroshot_torch.py make-images DIR N            write N synthetic 640x480 JPEGs (PIL)
  zeroshot_torch.py run --weights W.safetensors --tokens T.npy --templates K --images DIR
                        [--threads 2] [--batch 32] [--out-weights CLF.npy] [--out-emb EMB.npy]

`run` prints one JSON object: {"classifier_s", "classifier_cpu", "prompts", "embed_s",
"embed_cpu", "images", "load_s", "blas_line"} (wall and process CPU seconds; the BLAS torch uses
and its core: OPENBLAS_CORETYPE=SkylakeX unless set, see encode_torch.py).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# bench/encode_torch.py: the architectures; imported before torch, it picks OpenBLAS' core
import encode_torch  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def make_images(folder, n):
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640].astype(np.float32)
    for i in range(n):
        a, b, c = rng.uniform(0.005, 0.05, 3)
        r = 127 + 120 * np.sin(a * x + i)
        g = 127 + 120 * np.sin(b * y + 2 * i)
        bl = 127 + 120 * np.sin(c * (x + y))
        img = np.stack([r, g, bl], -1) + rng.normal(0, 12, (480, 640, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, "img%04d.jpg" % i), quality=90)


def load_model(weights):
    visual, text, _ = encode_torch.build("ViT-B/32", weights)
    return visual, text


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "make-images":
        make_images(sys.argv[2], int(sys.argv[3]))
        return
    p = argparse.ArgumentParser()
    p.add_argument("cmd")
    p.add_argument("--weights", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--templates", type=int, required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--out-weights")
    p.add_argument("--out-emb")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from PIL import Image
    from torchvision import transforms as T

    t0 = time.perf_counter()
    visual, text = load_model(a.weights)
    load_s = time.perf_counter() - t0
    tokens = torch.from_numpy(np.load(a.tokens).astype(np.int64))
    k = a.templates
    n_classes = tokens.shape[0] // k

    # OpenAI's zeroshot_classifier: one class (its K prompts) per call
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        rows = []
        for c in range(n_classes):
            e = text(tokens[c * k:(c + 1) * k])
            e = e / e.norm(dim=-1, keepdim=True)
            m = e.mean(dim=0)
            rows.append(m / m.norm())
        clf = torch.stack(rows)
    classifier_s = time.perf_counter() - t0
    classifier_cpu = time.process_time() - c0

    pre = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                     lambda im: im.convert("RGB"), T.ToTensor(),
                     T.Normalize((0.48145466, 0.4578275, 0.40821073),
                                 (0.26862954, 0.26130258, 0.27577711))])
    files = sorted(os.path.join(a.images, f) for f in os.listdir(a.images)
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    t0, c0 = time.perf_counter(), time.process_time()
    embs = []
    with torch.no_grad():
        for i in range(0, len(files), a.batch):
            batch = torch.stack([pre(Image.open(f)) for f in files[i:i + a.batch]])
            e = visual(batch)
            embs.append(e / e.norm(dim=-1, keepdim=True))
    embed_s = time.perf_counter() - t0
    embed_cpu = time.process_time() - c0
    if a.out_weights:
        np.save(a.out_weights, clf.numpy())
    if a.out_emb:
        np.save(a.out_emb, torch.cat(embs).numpy())
    print(json.dumps({"classifier_s": classifier_s, "classifier_cpu": classifier_cpu,
                      "prompts": int(tokens.shape[0]), "embed_s": embed_s, "embed_cpu": embed_cpu,
                      "images": len(files), "load_s": load_s,
                      "blas_line": encode_torch.describe_blas()}))


if __name__ == "__main__":
    main()
