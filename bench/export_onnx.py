#!/usr/bin/python3
"""Export bench/encode_torch.py's CLIP towers to ONNX for the ONNX Runtime baseline
(bench/ort/run.js), with the same weights the PyTorch baseline and clipl use.

For each model NAME it reads WEIGHTS_DIR/<NAME>-seed1.safetensors ('/' in NAME becomes '-';
bench/encode writes it from clip.build_model(NAME, {seed = 1})) and writes, with
torch.onnx.export (opset 14, f32, constant folding):

  OUT_DIR/<NAME>-image.onnx   input "image" [batch, 3, R, R] float32 -> "embedding" [batch, D]
  OUT_DIR/<NAME>-text.onnx    input "tokens" [batch, 77] int64 -> "embedding" [batch, D]

Both with a dynamic batch axis. A file newer than its weights is kept (the export takes a while).
Prints one JSON object: {"<NAME>/image": path, "<NAME>/text": path, ...}.

usage: /usr/bin/python3 bench/export_onnx.py --weights-dir DIR [--out-dir DIR]
                                             [--models ViT-B/32,RN50]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import encode_torch  # noqa: E402  (the architectures; imports torch)
import torch  # noqa: E402


def export(model, example, path, input_name):
    tmp = path + ".tmp"
    with torch.no_grad():
        torch.onnx.export(model, (example,), tmp, opset_version=14, do_constant_folding=True,
                          input_names=[input_name], output_names=["embedding"],
                          dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}})
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights-dir", required=True)
    ap.add_argument("--out-dir")
    ap.add_argument("--models", default="ViT-B/32,RN50")
    a = ap.parse_args()
    out_dir = a.out_dir or a.weights_dir
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(2)
    made = {}
    for name in a.models.split(","):
        slug = encode_torch.slug(name)
        weights = os.path.join(a.weights_dir, slug + "-seed1.safetensors")
        if not os.path.exists(weights):
            sys.exit("export_onnx.py: no weights " + weights)
        paths = {w: os.path.join(out_dir, "%s-%s.onnx" % (slug, w)) for w in ("image", "text")}
        made.update({name + "/" + w: p for w, p in paths.items()})
        if all(os.path.exists(p) and os.path.getmtime(p) > os.path.getmtime(weights)
               for p in paths.values()):
            continue
        visual, text, res = encode_torch.build(name, weights)
        export(visual, torch.randn(2, 3, res, res), paths["image"], "image")
        tokens = torch.zeros(2, 77, dtype=torch.int64)
        tokens[:, 0], tokens[:, 1:4], tokens[:, 4] = 49406, 320, 49407
        export(text, tokens, paths["text"], "tokens")
    print(json.dumps(made))


if __name__ == "__main__":
    main()
