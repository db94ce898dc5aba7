"""How far the fast decode path (big photos decoded straight to ~2x the model input) moves
embeddings from the exact one (full decode, reference resize): cosine per photo.

Photos: every colour photo scikit-image and scikit-learn ship, scaled up to ``--megapixels``
(with camera-like grain, see tests/photos.py) and saved as JPEG, plus the largest shipped
photo (retina.jpg, 1411x1411) as it is. Models: the built-in model and a CLIP ViT-B/32 with
random weights (``--clip``; any CLIP name works). For scale, two more rows: the lowest
cosine between the exact embeddings of each photo and of the same photo shifted by 2 pixels
(its top and left 2 rows and columns cut off, out of ~3,000: how much a model moves for a
change no one would see), and the highest cosine between two *different* photos (a
random-weight CLIP maps every photo close to every other, so its agreement is only telling
next to that row).

A second table measures ``Client(image_max_side=N)``: each photo shrunk on the client
(``clipserve.client.shrink``) then embedded as the server would, against the exact embedding
of the original, with the bytes that travel.

    python benchmarks/bench_decode_agreement.py [--megapixels 12] [--clip ViT-B-32::random]
        [--backend torch] [--grain 0,4] [--client-sides 1024,768,512]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipserve.client.shrink import shrink_image  # noqa: E402
from clipserve.models.registry import load_model  # noqa: E402
from tests.photos import encode, source_photos, upscaled  # noqa: E402


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def embed(model, images: list, exact: bool) -> tuple[np.ndarray, float]:  # type: ignore[no-untyped-def]
    """(embeddings, prepare CPU ms per image) through the exact or the fast path."""
    model.exact_preprocess = exact
    started = time.thread_time()
    pixels = np.stack([model.prepare_image(image) for image in images])
    prepare_ms = (time.thread_time() - started) * 1e3 / len(images)
    model.exact_preprocess = False
    return model.forward_images(pixels), prepare_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--clip", default="ViT-B-32::random")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--grain", default="0,4", help="grain levels to test (comma-separated)")
    parser.add_argument("--client-sides", default="1024,768,512")
    args = parser.parse_args()
    sides = [int(side) for side in args.client_sides.split(",") if side]
    photos: list[tuple[str, bytes]] = []
    shifted: list[np.ndarray] = []
    for grain in (float(g) for g in args.grain.split(",")):
        for name, array in source_photos():
            image = upscaled(array, args.megapixels, grain)
            photos.append((f"{name} {image.width}x{image.height} grain {grain:g}", encode(image)))
            shifted.append(np.asarray(image)[2:, 2:])
    retina = dict(source_photos())["retina"]
    photos.append(("retina 1411x1411 as shipped", encode(upscaled(retina, 1411 * 1411 / 1e6, 0))))
    files = [data for _, data in photos]
    sent = {n: [(shrink_image(f, n) or (f, ""))[0] for f in files] for n in sides}
    columns, client = {}, {}
    for label, name in (("built-in", "builtin"), (args.clip, args.clip)):
        model = load_model(name, backend=args.backend)
        exact, exact_ms = embed(model, files, exact=True)
        fast, fast_ms = embed(model, files, exact=False)
        moved, _ = embed(model, shifted, exact=True)
        agreement = [cosine(a, b) for a, b in zip(exact, fast, strict=True)]
        jitter = min(cosine(a, b) for a, b in zip(exact, moved, strict=False))
        others = max(cosine(exact[i], exact[j]) for i, j in itertools.combinations(range(8), 2))
        columns[label] = (agreement, others, exact_ms, fast_ms, jitter)
        for side in sides:
            shrunk, _ = embed(model, sent[side], exact=False)
            client[label, side] = min(cosine(a, b) for a, b in zip(exact, shrunk, strict=True))
        model.close()
    labels = list(columns)
    print(f"\ncosine(exact, fast) per photo, JPEG quality 90; {args.backend} backend\n")
    print("| photo | MB | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for index, (name, data) in enumerate(photos):
        cells = " | ".join(f"{columns[label][0][index]:.6f}" for label in labels)
        print(f"| {name} | {len(data) / 1e6:.1f} | {cells} |")
    lowest = " | ".join(f"**{min(columns[label][0]):.6f}**" for label in labels)
    print(f"| lowest | | {lowest} |")
    jitter = " | ".join(f"{columns[label][4]:.6f}" for label in labels)
    print(f"| (lowest cosine, exact path, photo vs photo shifted by 2 pixels) | | {jitter} |")
    others = " | ".join(f"{columns[label][1]:.4f}" for label in labels)
    print(f"| (highest cosine between two different photos) | | {others} |")
    costs = " | ".join(f"{columns[lb][2]:.0f} -> {columns[lb][3]:.0f}" for lb in labels)
    print(f"| prepare CPU ms per photo, exact -> fast | | {costs} |")
    if not sides:
        return
    print("\nClient(image_max_side=N): lowest cosine with the exact embedding of the original")
    print("| image_max_side | MB sent per photo (mean) | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    fast_row = " | ".join(f"{min(columns[label][0]):.6f}" for label in labels)
    mean_mb = np.mean([len(f) for f in files]) / 1e6
    print(f"| None (the original, fast path) | {mean_mb:.2f} | {fast_row} |")
    for side in sides:
        cells = " | ".join(f"{client[label, side]:.6f}" for label in labels)
        print(f"| {side} | {np.mean([len(f) for f in sent[side]]) / 1e6:.2f} | {cells} |")


if __name__ == "__main__":
    main()
