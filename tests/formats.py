"""Tiny fixtures in the exact on-disk formats of the real downloads (no network needed).

Each builder writes a few random images in the layout the converter expects and returns what a
test needs to check the conversion (labels, attributes, which half is which).
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
ATTRIBUTE_LINE = (  # the names line of list_attr_celeba.txt
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
)
CELEBA_ATTRIBUTES = ATTRIBUTE_LINE.split()
PLACES = ["/a/airfield 0", "/b/bakery/shop 1", "/c/canyon 2"]


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random but photo-like (smooth) RGB image: upsampled noise."""
    small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    return np.asarray(big)


def jpeg(array: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def cifar10(root: Path, per_batch: int = 10, seed: int = 0) -> tuple[Path, dict[str, tuple]]:
    """``cifar-10-python.tar.gz``: 5 training batches + a test batch + ``batches.meta``, pickled
    with protocol 2 and byte-string keys as the Python-2 original. Returns the archive and
    ``{batch name: (uint8 N×3072 data, labels)}``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for number, name in enumerate(names):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        labels[0] = 7  # every batch has a horse
        files = [f"{CIFAR_CLASSES[v]}_s_{number:02d}{i:04d}.png" for i, v in enumerate(labels)]
        batch = {
            b"batch_label": f"batch {name}".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f.encode() for f in files],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = (data, labels)
    meta = {
        b"num_cases_per_batch": per_batch,
        b"label_names": [c.encode() for c in CIFAR_CLASSES],
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    (folder / "readme.html").write_text("<html>CIFAR-10</html>")
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive, batches


def celeba(root: Path, n: int = 12, seed: int = 0) -> tuple[Path, dict[str, list[int]], dict]:
    """``img_align_celeba.zip`` (178×218 JPEGs) + ``list_attr_celeba.txt`` (count line, names
    line, ``FILE  ±1 …``) + ``list_eval_partition.txt``. Returns the folder, the attributes as
    0/1 per file and the partition per file."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    files = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    attrs = {f: [int(v) for v in rng.integers(0, 2, len(CELEBA_ATTRIBUTES))] for f in files}
    partition = {f: str(0 if i < n - 4 else 1 if i < n - 2 else 2) for i, f in enumerate(files)}
    with zipfile.ZipFile(root / "img_align_celeba.zip", "w") as archive:
        for f in files:
            archive.writestr(f"img_align_celeba/{f}", jpeg(smooth_image(rng, 218, 178)))
    rows = [f"{f} " + " ".join(f"{1 if v else -1:2d}" for v in attrs[f]) for f in files]
    (root / "list_attr_celeba.txt").write_text(
        f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + "\n".join(rows) + "\n"
    )
    (root / "list_eval_partition.txt").write_text("".join(f"{f} {partition[f]}\n" for f in files))
    return root, attrs, partition


def places365(root: Path, per_class: int = 3, seed: int = 0) -> tuple[Path, dict[str, int]]:
    """Small-image layout: ``train_256/a/airfield/00000001.jpg`` …, ``val_256/`` with
    ``places365_val.txt``, ``categories_places365.txt``. Returns labels per key."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "categories_places365.txt").write_text("\n".join(PLACES) + "\n")
    labels = {}
    for line in PLACES:
        category, index = line.split()
        folder = root / "train_256" / category.lstrip("/")
        folder.mkdir(parents=True)
        for i in range(1, per_class + 1):
            (folder / f"{i:08d}.jpg").write_bytes(jpeg(smooth_image(rng, 256, 256)))
            labels[f"train-{category.lstrip('/').replace('/', '_')}_{i:08d}"] = int(index)
    (root / "val_256").mkdir()
    val_lines = []
    for i in range(1, 4):
        name = f"Places365_val_{i:08d}.jpg"
        (root / "val_256" / name).write_bytes(jpeg(smooth_image(rng, 256, 256)))
        val_lines.append(f"{name} {i % 3}")
        labels[f"val-Places365_val_{i:08d}"] = i % 3
    (root / "places365_val.txt").write_text("\n".join(val_lines) + "\n")
    return root, labels


def places365_easyformat(root: Path, seed: int = 0) -> Path:
    """``places365standard_easyformat.tar`` holding ``places365_standard/{train,val}.txt`` and
    ``train/<category>/…jpg`` (labels from the folder names)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "categories_places365.txt").write_text("\n".join(PLACES) + "\n")
    with tarfile.open(root / "places365standard_easyformat.tar", "w") as tar:
        for split in ("train", "val"):
            listed = []
            for folder in ("airfield", "bakery-shop", "canyon"):
                path = f"{split}/{folder}/00000001.jpg"
                listed.append(path)
                _add(tar, f"places365_standard/{path}", jpeg(smooth_image(rng, 256, 256)))
            _add(tar, f"places365_standard/{split}.txt", ("\n".join(listed) + "\n").encode())
    return root


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def facades(root: Path, n: int = 4) -> Path:
    """pix2pix side-by-side ``train/1.jpg`` …: 512×256, A (left) reddish, B (right) bluish."""
    folder = root / "train"
    folder.mkdir(parents=True)
    for i in range(1, n + 1):
        image = np.zeros((256, 512, 3), np.uint8)
        image[:, :256] = (200, 30, 30)
        image[:, 256:] = (30, 30, 200)
        (folder / f"{i}.jpg").write_bytes(jpeg(image))
    return root


def cyclegan(root: Path, n: int = 3, seed: int = 0) -> Path:
    """``trainA/ trainB/ testA/ testB/`` of 256×256 JPEGs."""
    rng = np.random.default_rng(seed)
    for folder in ("trainA", "trainB", "testA", "testB"):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            (root / folder / f"{folder}_{i}.jpg").write_bytes(jpeg(smooth_image(rng, 256, 256)))
    return root
