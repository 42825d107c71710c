"""Part of bench/preprocess: Pillow + torchvision doing OpenAI's _transform(224) on the files
listed in argv[1], in 1 process and in 2 worker processes (as a DataLoader with num_workers=2)."""
import resource
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


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(paths, workers):
    """Returns (wall seconds, CPU seconds) for the whole list."""
    if workers == 1:
        _init()
        t0, c0 = time.perf_counter(), time.process_time()
        torch.stack([_one(p) for p in paths])
        return time.perf_counter() - t0, time.process_time() - c0
    c0 = children_cpu()
    pool = Pool(workers, initializer=_init)
    pool.map(_one, paths[:workers])  # start the workers before timing
    t0, p0 = time.perf_counter(), time.process_time()
    torch.stack(pool.map(_one, paths, chunksize=8))
    wall = time.perf_counter() - t0
    parent = time.process_time() - p0
    pool.close()
    pool.join()
    # the workers' CPU includes their start and the warm-up images: an upper bound
    return wall, parent + children_cpu() - c0


def main():
    paths = [l.strip() for l in open(sys.argv[1]) if l.strip()]
    import PIL
    import torchvision
    for workers in (1, 2):
        runs = [run(paths, workers) for _ in range(3)]
        best = min(r[0] for r in runs)
        cpu = min(r[1] for r in runs)
        print("Pillow %s + torchvision %s, %d process%s:       %7.1f images/s  (CPU %.2f ms/image)"
              % (PIL.__version__, torchvision.__version__, workers, "es" if workers > 1 else "  ",
                 len(paths) / best, 1000 * cpu / len(paths)))


if __name__ == "__main__":
    main()
