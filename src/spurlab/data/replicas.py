"""Write small replicas of the on-disk dataset layouts spurlab reads.

Each writer puts a few hundred synthetic images, in the exact file formats of
the real dataset, under a data dir, so the loaders can be tried (and tested)
without the real files:

* CIFAR-10 / CIFAR-100, binary layout (``.bin`` records) and Python layout
  (Python 2 protocol-2 pickles, written opcode by opcode like the originals);
* Waterbirds (WILDS ``waterbirds_v1.0/metadata.csv`` + JPEGs);
* CelebA (``celeba/list_attr_celeba.txt``, ``list_eval_partition.txt``,
  ``img_align_celeba/*.jpg``).

Images carry a learnable class signal and a visible spurious one (background
for Waterbirds, hair colour for CelebA). Every file is written atomically.
From a shell: ``python -m spurlab.data.replicas DIR``.
"""
from __future__ import annotations

import argparse
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spurlab.data.cifar import FOLDERS, CifarSplit
from spurlab.data.cifar_names import CIFAR10_CLASSES, CIFAR100_COARSE, CIFAR100_FINE, cifar100_coarse_of_fine
from spurlab.errors import SpurlabError
from spurlab.params import Options, check_param, check_params, positive_int
from spurlab.utils import atomic_write_bytes, atomic_write_csv, atomic_write_text

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
# Examples per (y, place) group in the order (land,land) (land,water) (water,land) (water,water):
# Waterbirds' skew (3498 / 184 / 56 / 1057 in train) scaled down; val and test balanced by place.
WATERBIRDS_COUNTS = {"train": (36, 4, 3, 12), "val": (6, 6, 3, 3), "test": (10, 10, 5, 5)}
WATERBIRDS_SPECIES = (("019.Gray_Catbird", "Gray_Catbird"), ("001.Black_footed_Albatross", "Black_Footed_Albatross"))
WATERBIRDS_PLACES = ("/b/bamboo_forest", "/o/ocean")
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass
class Replica:
    """What a writer produced: pass ``data_dir`` to the loaders (``--data-dir`` / ``SPURLAB_DATA``)."""

    data_dir: Path
    folders: list[Path]
    arrays: dict[str, CifarSplit] = field(default_factory=dict)  # CIFAR: the records written per split
    table: pd.DataFrame | None = None  # Waterbirds / CelebA: one row per image written


# ------------------------------------------------------------------ Python 2 pickles
def py2_pickle(obj: object) -> bytes:
    """Protocol-2 pickle of dicts, lists, tuples, ints, bools, None, byte strings and numpy arrays,
    with the opcodes Python 2's cPickle used for the CIFAR archives (``str`` is written as a Python 2 str)."""
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    out += b"."
    return bytes(out)


def _emit(obj: object, out: bytearray) -> None:
    if obj is None:
        out += b"N"
    elif isinstance(obj, bool):
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, (int, np.integer)):
        _emit_int(int(obj), out)
    elif isinstance(obj, (str, bytes)):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        out += (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + len(data).to_bytes(4, "little")) + data
    elif isinstance(obj, tuple):
        _emit_tuple(obj, out)
    elif isinstance(obj, list):
        out += b"]"
        for start in range(0, len(obj), 1000):  # cPickle appends in batches of 1000
            out += b"("
            for item in obj[start:start + 1000]:
                _emit(item, out)
            out += b"e"
    elif isinstance(obj, dict):
        out += b"}("
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out += b"u"
    elif isinstance(obj, np.ndarray):
        _emit_array(obj, out)
    else:
        raise SpurlabError(f"py2_pickle cannot write a {type(obj).__name__}")


def _emit_int(value: int, out: bytearray) -> None:
    if 0 <= value < 256:
        out += b"K" + bytes([value])
    elif 0 <= value < 65536:
        out += b"M" + value.to_bytes(2, "little")
    elif -2**31 <= value < 2**31:
        out += b"J" + value.to_bytes(4, "little", signed=True)
    else:
        raise SpurlabError(f"py2_pickle writes 32-bit ints only, got {value}")


def _emit_tuple(items: tuple, out: bytearray) -> None:
    if not items:
        out += b")"
        return
    if len(items) > 3:
        out += b"("
    for item in items:
        _emit(item, out)
    out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(items), b"t")


def _emit_array(array: np.ndarray, out: bytearray) -> None:
    if array.dtype.kind not in "biuf":
        raise SpurlabError(f"py2_pickle writes numeric arrays only, got dtype {array.dtype}")
    # numpy's reduce: _reconstruct(ndarray, (0,), 'b'), then BUILD with (1, shape, dtype, fortran, bytes)
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    _emit_tuple((0,), out)
    _emit(b"b", out)
    out += b"\x87R("
    _emit(1, out)
    _emit_tuple(tuple(int(n) for n in array.shape), out)
    order = array.dtype.str[0]
    out += b"cnumpy\ndtype\n"
    _emit_tuple((array.dtype.str[1:], 0, 1), out)
    out += b"R"
    _emit_tuple((3, order, None, None, None, -1, -1, 0), out)
    out += b"b"
    _emit(False, out)
    _emit(np.ascontiguousarray(array).tobytes(), out)
    out += b"tb"


# ------------------------------------------------------------------ CIFAR
def cifar_replica_arrays(variant: str = "cifar10", n_train: int = 250, n_test: int = 100,
                         seed: int = 0) -> dict[str, CifarSplit]:
    """Balanced labels and images of a per-class colour plus uniform noise, as the archives store them."""
    variant, n_train, n_test = check_params(
        "cifar_replica_arrays", {"variant": Options(*FOLDERS), "n_train": positive_int(), "n_test": positive_int()},
        {"variant": variant, "n_train": n_train, "n_test": n_test}).values()
    rng = np.random.default_rng(seed)
    names = CIFAR10_CLASSES if variant == "cifar10" else CIFAR100_FINE
    colours = rng.integers(40, 216, size=(len(names), 3), dtype=np.int16)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.resize(np.arange(len(names)), n)).astype(np.int64)
        noise = rng.integers(-40, 41, size=(n, 3, 32, 32), dtype=np.int16)
        images = np.clip(colours[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
        coarse = np.asarray(cifar100_coarse_of_fine())[labels] if variant == "cifar100" else None
        files = [f"{names[c]}_s_{i:06d}.png" for i, c in enumerate(labels)]
        out[split] = CifarSplit(images, labels, coarse, files)
    return out


def write_cifar_replica(data_dir: str | Path, variant: str = "cifar10", layout: str = "both", n_train: int = 250,
                        n_test: int = 100, seed: int = 0) -> Replica:
    """Write a CIFAR-10 or CIFAR-100 replica in the binary and/or Python layout under ``data_dir``."""
    layout = check_param("write_cifar_replica", "layout", Options("binary", "python", "both"), layout)
    data_dir = Path(data_dir)
    arrays = cifar_replica_arrays(variant, n_train, n_test, seed)
    kinds = ("binary", "python") if layout == "both" else (layout,)
    folders = []
    for kind in kinds:
        folder = data_dir / FOLDERS[variant][kind]
        writer = {("cifar10", "binary"): _cifar10_binary, ("cifar10", "python"): _cifar10_python,
                  ("cifar100", "binary"): _cifar100_binary, ("cifar100", "python"): _cifar100_python}
        writer[(variant, kind)](folder, arrays)
        folders.append(folder)
    return Replica(data_dir, folders, arrays=arrays)


def _records(part: CifarSplit, label_columns: list[np.ndarray]) -> bytes:
    labels = np.stack(label_columns, axis=1).astype(np.uint8)
    return np.concatenate([labels, part.images.reshape(len(part), -1)], axis=1).tobytes()


def _batches(part: CifarSplit, n: int) -> list[CifarSplit]:
    chunks = np.array_split(np.arange(len(part)), n)
    return [CifarSplit(part.images[c], part.labels[c], None, [part.filenames[i] for i in c]) for c in chunks]


def _cifar10_binary(folder: Path, arrays: dict[str, CifarSplit]) -> None:
    for i, batch in enumerate(_batches(arrays["train"], 5), start=1):
        atomic_write_bytes(folder / f"data_batch_{i}.bin", _records(batch, [batch.labels]))
    atomic_write_bytes(folder / "test_batch.bin", _records(arrays["test"], [arrays["test"].labels]))
    atomic_write_text(folder / "batches.meta.txt", "\n".join(CIFAR10_CLASSES) + "\n\n")


def _cifar10_python(folder: Path, arrays: dict[str, CifarSplit]) -> None:
    named = [(f"data_batch_{i}", f"training batch {i} of 5", b) for i, b in enumerate(_batches(arrays["train"], 5), 1)]
    named.append(("test_batch", "testing batch 1 of 1", arrays["test"]))
    for name, label, batch in named:
        record = {"data": batch.images.reshape(len(batch), -1), "labels": [int(v) for v in batch.labels],
                  "batch_label": label, "filenames": list(batch.filenames)}
        atomic_write_bytes(folder / name, py2_pickle(record))
    meta = {"num_cases_per_batch": len(named[0][2]), "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
    atomic_write_bytes(folder / "batches.meta", py2_pickle(meta))


def _cifar100_binary(folder: Path, arrays: dict[str, CifarSplit]) -> None:
    for split, name in (("train", "train.bin"), ("test", "test.bin")):
        part = arrays[split]
        atomic_write_bytes(folder / name, _records(part, [part.coarse, part.labels]))
    atomic_write_text(folder / "coarse_label_names.txt", "\n".join(CIFAR100_COARSE) + "\n")
    atomic_write_text(folder / "fine_label_names.txt", "\n".join(CIFAR100_FINE) + "\n")


def _cifar100_python(folder: Path, arrays: dict[str, CifarSplit]) -> None:
    for split, label in (("train", "training batch 1 of 1"), ("test", "testing batch 1 of 1")):
        part = arrays[split]
        record = {"filenames": list(part.filenames), "batch_label": label,
                  "fine_labels": [int(v) for v in part.labels], "coarse_labels": [int(v) for v in part.coarse],
                  "data": part.images.reshape(len(part), -1)}
        atomic_write_bytes(folder / split, py2_pickle(record))
    meta = {"fine_label_names": list(CIFAR100_FINE), "coarse_label_names": list(CIFAR100_COARSE)}
    atomic_write_bytes(folder / "meta", py2_pickle(meta))


# ------------------------------------------------------------------ Waterbirds and CelebA
def _jpeg(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _scene(rng: np.random.Generator, height: int, width: int, background, blob) -> np.ndarray:
    """An (H, W, 3) uint8 picture: a noisy background with an ellipse of another colour in the middle."""
    r, c = np.mgrid[0:height, 0:width]
    inside = ((r - height / 2) / (height / 4)) ** 2 + ((c - width / 2) / (width / 5)) ** 2 <= 1
    picture = np.where(inside[..., None], np.asarray(blob, float), np.asarray(background, float))
    return np.clip(picture + rng.normal(0, 12, size=picture.shape), 0, 255).astype(np.uint8)


def write_waterbirds_replica(data_dir: str | Path, counts: dict[str, tuple[int, int, int, int]] | None = None,
                             image_size: tuple[int, int] = (80, 60), seed: int = 0,
                             folder: str = "waterbirds_v1.0") -> Replica:
    """WILDS-layout Waterbirds: ``metadata.csv`` (img_id, img_filename, y, split, place, place_filename)
    and one JPEG per row; ``counts[split]`` = examples per (y, place) group, (0,0) (0,1) (1,0) (1,1)."""
    counts = WATERBIRDS_COUNTS if counts is None else counts
    rng = np.random.default_rng(seed)
    root = Path(data_dir) / folder
    rows = []
    for split, sizes in counts.items():
        if split not in SPLIT_CODES or len(sizes) != 4:
            raise SpurlabError(f"counts[{split!r}] must be a split name with 4 group sizes")
        for group, n in enumerate(sizes):
            y, place = divmod(group, 2)
            for _ in range(int(n)):
                idx = len(rows) + 1
                species_dir, species = WATERBIRDS_SPECIES[y]
                rows.append({"img_id": idx, "img_filename": f"{species_dir}/{species}_{idx:04d}.jpg", "y": y,
                             "split": SPLIT_CODES[split], "place": place,
                             "place_filename": f"{WATERBIRDS_PLACES[place]}/{idx:08d}.jpg"})
    table = pd.DataFrame(rows)
    width, height = image_size
    backgrounds, birds = ((70, 120, 40), (40, 90, 200)), ((150, 110, 60), (235, 235, 225))
    for row in table.itertuples():
        picture = _scene(rng, height, width, backgrounds[row.place], birds[row.y])
        atomic_write_bytes(root / row.img_filename, _jpeg(picture))
    atomic_write_csv(root / "metadata.csv", table)
    return Replica(Path(data_dir), [root], table=table)


def write_celeba_replica(data_dir: str | Path, n_images: int = 150, image_size: tuple[int, int] = (178, 218),
                         split_fractions: tuple[float, float] = (0.6, 0.2), seed: int = 0,
                         distinct_images: int | None = None) -> Replica:
    """CelebA's ``celeba/`` folder: the 40-attribute table (+1/-1), the partition file (0 train, 1 val,
    2 test, contiguous like the real one) and 178x218 JPEGs; Blond_Hair is rarer among Male.

    ``distinct_images`` (e.g. 16) encodes only that many pictures per (blond, male) pair and writes
    their bytes again for every other file: a full-size replica (202,599 files) in a minute or two.
    """
    if n_images < 3:
        raise SpurlabError("a CelebA replica needs at least 3 images")
    rng = np.random.default_rng(seed)
    root = Path(data_dir) / "celeba"
    values = rng.random((n_images, len(CELEBA_ATTRIBUTES))) < 0.5
    male = values[:, CELEBA_ATTRIBUTES.index("Male")]
    values[:, CELEBA_ATTRIBUTES.index("Blond_Hair")] = rng.random(n_images) < np.where(male, 0.1, 0.4)
    files = [f"{i:06d}.jpg" for i in range(1, n_images + 1)]
    n_train, n_val = (int(round(f * n_images)) for f in split_fractions)
    partition = np.repeat([0, 1, 2], [n_train, n_val, n_images - n_train - n_val])
    signs = np.where(values, 1, -1)
    lines = [str(n_images), " ".join(CELEBA_ATTRIBUTES)]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(files, signs)]
    width, height = image_size
    hair = {True: (230, 200, 90), False: (60, 40, 30)}
    pool: dict[tuple[bool, bool], list[bytes]] = {}
    for name, row in zip(files, values):
        blond, is_male = bool(row[CELEBA_ATTRIBUTES.index("Blond_Hair")]), bool(row[CELEBA_ATTRIBUTES.index("Male")])
        encoded = pool.setdefault((blond, is_male), [])
        if distinct_images is None or len(encoded) < distinct_images:
            picture = _scene(rng, height, width, hair[blond], (200, 160, 140) if is_male else (235, 190, 170))
            encoded.append(_jpeg(picture))
            data = encoded[-1]
        else:
            data = encoded[int(rng.integers(len(encoded)))]
        atomic_write_bytes(root / "img_align_celeba" / name, data)
    atomic_write_text(root / "list_attr_celeba.txt", "\n".join(lines) + "\n")
    atomic_write_text(root / "list_eval_partition.txt", "".join(f"{f} {s}\n" for f, s in zip(files, partition)))
    table = pd.DataFrame(signs.clip(0, 1), columns=list(CELEBA_ATTRIBUTES))
    table.insert(0, "file", files)
    table["split"] = partition
    return Replica(Path(data_dir), [root], table=table)


# ------------------------------------------------------------------ command line
WRITERS = {
    "cifar10": lambda d, s: write_cifar_replica(d, "cifar10", seed=s),
    "cifar100": lambda d, s: write_cifar_replica(d, "cifar100", n_train=600, n_test=200, seed=s),
    "waterbirds": lambda d, s: write_waterbirds_replica(d, seed=s),
    "celeba": lambda d, s: write_celeba_replica(d, seed=s),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spurlab.data.replicas",
                                     description="Write small replicas of the CIFAR, Waterbirds and CelebA layouts.")
    parser.add_argument("data_dir", type=Path, help="folder to write into (then: --data-dir DATA_DIR)")
    parser.add_argument("--only", default=",".join(WRITERS), help=f"comma-separated subset of {', '.join(WRITERS)}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(WRITERS))
    if unknown:
        parser.error(f"unknown replica(s) {', '.join(unknown)}; choose from {', '.join(WRITERS)}")
    for name in chosen:
        replica = WRITERS[name](args.data_dir, args.seed)
        print(f"{name}: wrote {', '.join(str(f) for f in replica.folders)}")
    print(f"try: spurlab datasets show {chosen[0]} --data-dir {args.data_dir}")


if __name__ == "__main__":
    main()
