"""Part of bench/preprocess_check: writes synthetic test images of many modes and formats into
argv[1], and for each the reference tensor of OpenAI's _transform(224) (Pillow + torchvision) as
<name>.npy, plus list.txt: name, Pillow mode, npy file, options."""
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

out = sys.argv[1]
rng = np.random.RandomState(1234)


def transform(n_px):
    return Compose([
        Resize(n_px, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(n_px),
        lambda image: image.convert("RGB"),
        ToTensor(),
        Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])


def picture(w, h, bands):
    """Smooth gradients + blobs + noise, uint8 h x w x bands."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for b in range(bands):
        v = 127 + 60 * np.sin(x / (17 + 7 * b)) + 50 * np.cos(y / (23 + 5 * b)) \
            + rng.normal(0, 12, (h, w))
        v[(x.astype(int) // 40 + y.astype(int) // 30 + b) % 7 == 0] = 250 - 40 * b
        chans.append(np.clip(v, 0, 255))
    return np.stack(chans, -1).astype(np.uint8)


def alpha(w, h):
    y, x = np.mgrid[0:h, 0:w]
    a = np.clip(255 * (x / w) * 1.3, 0, 255)
    a[(y // 20) % 4 == 0] = 0
    a[(x // 25) % 5 == 0] = 255
    return a.astype(np.uint8)


def png16(path, arr, color_type):
    """Writes a 16-bit PNG (grey: color_type 0, RGB: 2) from a uint16 array."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[r].astype(">u2").tobytes() for r in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))


items = []


def add(name, opts=""):
    path = os.path.join(out, name)
    im = Image.open(path)
    mode = im.mode
    if "autorotate" in opts:
        im = ImageOps.exif_transpose(im)
    t = transform(224)(im)
    npy = name + ("." + opts if opts else "") + ".npy"
    np.save(os.path.join(out, npy), t.numpy().astype("<f4"))
    items.append((name, mode, npy, opts or "-"))


Image.fromarray(picture(517, 389, 3)).save(os.path.join(out, "rgb.png"))
add("rgb.png")
Image.fromarray(picture(389, 517, 3)).save(os.path.join(out, "rgb_tall.png"))
add("rgb_tall.png")
Image.fromarray(picture(100, 61, 3)).save(os.path.join(out, "rgb_up.png"))  # upscaling
add("rgb_up.png")
Image.fromarray(picture(301, 224, 3)).save(os.path.join(out, "rgb_odd.png"))  # odd crop offset
add("rgb_odd.png")
Image.fromarray(picture(640, 480, 3)).save(os.path.join(out, "rgb.jpg"), quality=90)
add("rgb.jpg")
rgba = np.dstack([picture(480, 360, 3), alpha(480, 360)])
Image.fromarray(rgba, "RGBA").save(os.path.join(out, "rgba.png"))
add("rgba.png")
la = np.dstack([picture(333, 250, 1)[..., 0], alpha(333, 250)])
Image.fromarray(la, "LA").save(os.path.join(out, "la.png"))
add("la.png")
Image.fromarray(picture(350, 300, 1)[..., 0], "L").save(os.path.join(out, "l.png"))
add("l.png")
# tRNS colour keys: Pillow keeps 'RGB' / 'L' / 'I' (libvips would add an alpha band)
Image.fromarray(picture(410, 290, 3)).save(os.path.join(out, "rgb_key.png"),
                                           transparency=(250, 210, 170))
add("rgb_key.png")
Image.fromarray(picture(290, 410, 1)[..., 0], "L").save(os.path.join(out, "l_key.png"),
                                                        transparency=250)
add("l_key.png")
Image.fromarray(picture(300, 200, 1)[..., 0] > 127).save(os.path.join(out, "bilevel.png"))
add("bilevel.png")  # mode '1': resized nearest
Image.fromarray(picture(260, 300, 1)[..., 0] // 16 * 17, "L").convert("L").save(
    os.path.join(out, "grey4.png"), bits=4)
add("grey4.png")
Image.fromarray(picture(420, 300, 3)).quantize(200).save(os.path.join(out, "p.png"))
add("p.png")
pt = Image.fromarray(picture(300, 420, 3)).quantize(100)
pt.save(os.path.join(out, "p_trns.png"), transparency=5)
add("p_trns.png")
Image.fromarray(picture(400, 300, 3)).quantize(64).save(os.path.join(out, "p.gif"))
add("p.gif")
Image.fromarray(picture(330, 260, 1)[..., 0], "L").save(os.path.join(out, "grey.gif"))
add("grey.gif")  # Pillow reopens a GIF with the identity grey palette as 'L'
Image.fromarray(picture(400, 300, 4), "CMYK").save(os.path.join(out, "cmyk.jpg"), quality=92)
add("cmyk.jpg")
png16(os.path.join(out, "grey16.png"), (rng.randint(0, 400, (280, 310))).astype(np.uint16), 0)
add("grey16.png")
png16(os.path.join(out, "rgb16.png"), picture(330, 250, 3).astype(np.uint16) * 257 + 100, 2)
add("rgb16.png")
Image.fromarray(picture(360, 270, 3)).save(os.path.join(out, "rgb.webp"), lossless=True)
add("rgb.webp")
Image.fromarray(picture(360, 270, 3)).save(os.path.join(out, "rgb.tif"))
add("rgb.tif")
exif = Image.Exif()
exif[0x0112] = 6  # orientation: rotate 90 CW to display
Image.fromarray(picture(500, 300, 3)).save(os.path.join(out, "exif6.jpg"), quality=90, exif=exif)
add("exif6.jpg")
add("exif6.jpg", "autorotate")

# HEIF and AVIF: Pillow 9.4 cannot read them, so the reference is Pillow's pipeline on the pixels
# libvips decodes (saved losslessly as PNG): this checks everything after the decoder.
if shutil.which("vips"):
    src = os.path.join(out, "rgb.jpg")
    for ext in ("avif", "heic"):
        enc = os.path.join(out, "rgb." + ext)
        dec = os.path.join(out, "rgb_" + ext + "_decoded.png")
        if subprocess.call(["vips", "copy", src, enc], stderr=subprocess.DEVNULL) == 0 and \
                subprocess.call(["vips", "copy", enc, dec], stderr=subprocess.DEVNULL) == 0:
            t = transform(224)(Image.open(dec))
            np.save(enc + ".npy", t.numpy().astype("<f4"))
            items.append(("rgb." + ext, "(vips)", "rgb." + ext + ".npy", "-"))

with open(os.path.join(out, "list.txt"), "w") as f:
    for it in items:
        f.write("\t".join(it) + "\n")
