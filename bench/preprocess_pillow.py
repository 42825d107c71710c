"""Part of bench/preprocess: Pillow + torchvision doing OpenAI's _transform(224) on the files
listed in argv[1], in 1 process and in 2 worker processes (as a DataLoader with num_workers=2)."""
import sys
import time
from multiprocessing import Pool

import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor


def transform(n_px):
    # clip.clip._transform from openai/CLIP
    return Compose([
        Resize(n_px, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(n_px),
        lambda image: image.convert("RGB"),
        ToTensor(),
        Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])


_tf = None


def _init():
    global _tf
    torch.set_num_threads(1)
    _tf = transform(224)


def _one(path):
    return _tf(Image.open(path))


def run(paths, workers):
    if workers == 1:
        _init()
        t0 = time.perf_counter()
        out = torch.stack([_one(p) for p in paths])
        return time.perf_counter() - t0, out
    with Pool(workers, initializer=_init) as pool:
        pool.map(_one, paths[:workers])  # start the workers before timing
        t0 = time.perf_counter()
        out = torch.stack(pool.map(_one, paths, chunksize=8))
        return time.perf_counter() - t0, out


def main():
    paths = [l.strip() for l in open(sys.argv[1]) if l.strip()]
    for workers in (1, 2):
        best = min(run(paths, workers)[0] for _ in range(3))
        print("Pillow %s + torchvision %s, %d process%s: %7.1f images/s" % (
            Image.__version__ if hasattr(Image, "__version__") else "?",
            __import__("torchvision").__version__, workers, "es" if workers > 1 else "  ",
            len(paths) / best))


if __name__ == "__main__":
    main()
