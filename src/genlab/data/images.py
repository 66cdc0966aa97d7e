"""Raw image data sets: built-in ones (embedded or downloaded) and the user's own files.

`load_raw(name, root)` returns uint8 images [N, C, H, W] and int64 labels, plus the official
test split where one exists. Names:

    digits                         scikit-learn's embedded 8x8 digits (no download)
    mnist, fashion_mnist, kmnist   IDX .gz files, downloaded with checksums into root/<name>/
    cifar10                        the binary release (never the pickled one), read in memory
    idx:DIR                        your IDX files
    folder:DIR                     your images, one sub-folder per class
    npz:FILE                       your arrays (loaded with allow_pickle=False)

All readers are vectorised (np.frombuffer over whole files); nothing is unpickled.
"""

from __future__ import annotations

import gzip
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import GenlabError, warn
from .download import RemoteFile, ensure_files

__all__ = ["RawImages", "DATASETS", "load_raw", "read_idx", "dataset_status"]


@dataclass
class RawImages:
    train_images: np.ndarray  # uint8 [N, C, H, W]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray | None  # None: no official test split, the caller carves one out
    test_labels: np.ndarray | None
    classes: list[str]


DATASETS: dict[str, str] = {
    "digits": "8x8 grayscale handwritten digits, 1,797 images, 10 classes; embedded in scikit-learn "
    "(UCI optical digits, CC BY 4.0)",
    "mnist": "28x28 grayscale handwritten digits, 60k train / 10k test, 10 classes; 11.6 MB download "
    "(LeCun, Cortes & Burges; CC BY-SA 3.0)",
    "fashion_mnist": "28x28 grayscale clothing, 60k train / 10k test, 10 classes; 30 MB download "
    "(Zalando Research; MIT)",
    "kmnist": "28x28 grayscale cursive Japanese characters, 60k train / 10k test, 10 classes; 21 MB download "
    "(ROIS-DS CODH; CC BY-SA 4.0)",
    "cifar10": "32x32 colour photos, 50k train / 10k test, 10 classes; 162 MB download "
    "(Krizhevsky 2009, University of Toronto; free to use, cite the tech report)",
    "idx:DIR": "your IDX files in DIR: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "optionally t10k-images/t10k-labels",
    "folder:DIR": "your images (png, jpg, jpeg, bmp, gif, webp), one sub-folder of DIR per class; "
    "resized to data.image_size",
    "npz:FILE": "your arrays in a .npz: x_train/y_train (optional x_test/y_test) or images/labels; "
    "uint8 or floats in [0, 1]",
}

PREFIXES = ("idx:", "folder:", "npz:")
DIGIT_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
]
KMNIST_CLASSES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Train images, train labels, test images, test labels: the order every IDX loader here uses.
IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_NAMES = tuple(f"{stem}.gz" for stem in IDX_STEMS)


def _idx_remotes(mirrors: tuple[str, ...], checksums: dict[str, dict[str, str]]) -> list[RemoteFile]:
    return [RemoteFile(name, tuple(m + name for m in mirrors), **checksums[name]) for name in IDX_NAMES]


# MNIST sha256: the SHA256SUMS of the verified copy in shared/data/mnist; md5: torchvision's
# datasets/mnist.py (the published sums). Fashion-MNIST and KMNIST md5: torchvision's
# datasets/mnist.py. Mirrors in the order torchvision documents, ossci (https) first for MNIST.
REMOTE_FILES: dict[str, list[RemoteFile]] = {
    "mnist": _idx_remotes(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": {
                "sha256": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "md5": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            },
            "train-labels-idx1-ubyte.gz": {
                "sha256": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "md5": "d53e105ee54ea40749a09fcbcd1e9432",
            },
            "t10k-images-idx3-ubyte.gz": {
                "sha256": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "md5": "9fb629c4189551a2d022fa330f9573f3",
            },
            "t10k-labels-idx1-ubyte.gz": {
                "sha256": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                "md5": "ec29112dd5afa0611ce80d1b7f02629c",
            },
        },
    ),
    # The S3 website endpoint serves plain http only; the checksum guards the content.
    "fashion_mnist": _idx_remotes(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": {"md5": "8d4fb7e6c68d591d4c3dfef9ec88bf0d"},
            "train-labels-idx1-ubyte.gz": {"md5": "25c81989df183df01b3e8a0aad5dffbe"},
            "t10k-images-idx3-ubyte.gz": {"md5": "bef4ecab320f06d8554ea6380940ec79"},
            "t10k-labels-idx1-ubyte.gz": {"md5": "bb300cfdad3c16e7a12a480ee83cd310"},
        },
    ),
    "kmnist": _idx_remotes(
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        {
            "train-images-idx3-ubyte.gz": {"md5": "bdb82020997e1d708af4cf47b453dcf7"},
            "train-labels-idx1-ubyte.gz": {"md5": "e144d726b3acfaa3e44228e80efcd344"},
            "t10k-images-idx3-ubyte.gz": {"md5": "5c965bf0a639b31b8f53240b1b52f4d7"},
            "t10k-labels-idx1-ubyte.gz": {"md5": "7320c461ea6c1c855c0b718fb2a4b134"},
        },
    ),
    # md5 as published on https://www.cs.toronto.edu/~kriz/cifar.html
    "cifar10": [
        RemoteFile(
            "cifar-10-binary.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
            md5="c32a1d4ab5d03f1284b67883e8d87530",
        )
    ],
}
IDX_CLASSES = {"mnist": DIGIT_CLASSES, "fashion_mnist": FASHION_CLASSES, "kmnist": KMNIST_CLASSES}


def dataset_status(name: str, root: Path) -> str:
    """'embedded' (no download needed), 'present' (all files local), 'download', or 'local' for DIR/FILE forms."""
    if name == "digits":
        return "embedded"
    if name in REMOTE_FILES:
        folder = Path(root) / name
        return "present" if all((folder / r.filename).is_file() for r in REMOTE_FILES[name]) else "download"
    if name.startswith(PREFIXES) or name in DATASETS:
        return "local"
    raise _unknown(name)


def _unknown(name: str) -> GenlabError:
    builtin = [n for n in DATASETS if not n.startswith(PREFIXES)]
    return GenlabError(
        f"unknown data set {name!r}",
        f"use one of {', '.join(builtin)}, or your own data as idx:DIR, folder:DIR or npz:FILE "
        "(`genlab datasets` describes them)",
    )


def load_raw(name: str, root: Path, *, image_size: int | None = None, channels: int | None = None) -> RawImages:
    """Load data set `name` (built-in, or idx:/folder:/npz: with a path) into uint8 arrays."""
    if not name.startswith("folder:") and (image_size is not None or channels is not None):
        # Silently ignoring them would give a model a different input shape than asked for.
        raise GenlabError(
            f"data.image_size and data.channels apply only to folder: data sets, not {name!r}",
            "remove them from the data settings",
        )
    if channels not in (None, 1, 3):
        raise GenlabError(f"data.channels must be 1 or 3, got {channels}")
    if image_size is not None and image_size < 1:
        raise GenlabError(f"data.image_size must be a positive number of pixels, got {image_size}")
    if name == "digits":
        return _load_digits()
    if name in IDX_CLASSES:
        paths = ensure_files(name, REMOTE_FILES[name], root)
        return _idx_arrays_to_raw(*(read_idx(p) for p in paths), paths=paths, classes=IDX_CLASSES[name])
    if name == "cifar10":
        (path,) = ensure_files(name, REMOTE_FILES[name], root)
        return read_cifar10_binary(path)
    prefix, _, arg = name.partition(":")
    if prefix in ("idx", "folder", "npz") and not arg:
        raise GenlabError(f"data set {name!r} needs a path after the colon", f"for example {prefix}:/path/to/data")
    if prefix == "idx":
        return _load_idx_dir(Path(arg).expanduser())
    if prefix == "folder":
        return _load_folder(Path(arg).expanduser(), image_size, channels)
    if prefix == "npz":
        return _load_npz(Path(arg).expanduser())
    raise _unknown(name)


def _load_digits() -> RawImages:
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    d = load_digits()
    # Pixel values are counts 0..16 (4x4 blocks of a 32x32 bitmap); stretch them to 0..255.
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    return RawImages(images, d.target.astype(np.int64), None, None, list(DIGIT_CLASSES))


# ----------------------------------------------------------------------------------- IDX

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _corrupt(path: Path, what: str) -> GenlabError:
    return GenlabError(
        f"{path} is not a valid IDX file ({what})",
        f"the file is corrupted or truncated; delete {path} so it is downloaded again (or replace it)",
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not, detected from its content) into a numpy array."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut gzip raises EOFError
        raise _corrupt(path, f"cannot decompress: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise _corrupt(path, "bad magic number")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise _corrupt(path, f"unknown data type code 0x{code:02x}")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise _corrupt(path, f"header too short for {ndim} dimensions")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(data) - 4 - 4 * ndim
    if payload != expected:
        raise _corrupt(path, f"dimensions {dims} need {expected} bytes of data, found {payload}")
    array = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)
    # astype copies into native byte order and a writable array (torch.from_numpy warns on read-only ones).
    return array.astype(dtype.newbyteorder("="))


def _idx_arrays_to_raw(*arrays: np.ndarray, paths: list[Path], classes: list[str] | None) -> RawImages:
    """Check IDX arrays (train images, train labels[, test images, test labels]) and shape them."""
    splits = []
    for images, labels, image_path, label_path in zip(arrays[0::2], arrays[1::2], paths[0::2], paths[1::2]):
        if images.dtype != np.uint8 or images.ndim != 3:
            raise GenlabError(
                f"{image_path} holds {images.dtype} data of shape {images.shape}, expected uint8 images [N, H, W]"
            )
        if len(images) == 0:
            raise GenlabError(f"{image_path} holds no images")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise GenlabError(
                f"{label_path} holds {labels.dtype} data of shape {labels.shape}, expected integer labels [N]"
            )
        if len(labels) != len(images):
            raise GenlabError(
                f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels",
                "the two files must come from the same data set split",
            )
        splits.append((images[:, None, :, :], _labels(labels, label_path)))
    if len(splits) == 2 and splits[0][0].shape[1:] != splits[1][0].shape[1:]:
        raise GenlabError(f"train images are {splits[0][0].shape[2:]} but test images are {splits[1][0].shape[2:]}")
    train_x, train_y = splits[0]
    test_x, test_y = splits[1] if len(splits) == 2 else (None, None)
    if classes is None:
        classes = _numbered_classes(train_y, test_y)
    return RawImages(train_x, train_y, test_x, test_y, classes)


def _labels(labels: np.ndarray, source: Path) -> np.ndarray:
    if len(labels) and labels.min() < 0:
        raise GenlabError(f"{source} has negative labels (min {labels.min()})", "labels must be class indices 0..K-1")
    return labels.astype(np.int64)


def _numbered_classes(*label_arrays: np.ndarray | None) -> list[str]:
    top = max(int(y.max()) for y in label_arrays if y is not None and len(y))
    return [str(i) for i in range(top + 1)]


def _load_idx_dir(folder: Path) -> RawImages:
    if not folder.is_dir():
        raise GenlabError(f"idx: folder {folder} does not exist", "give the folder holding your IDX files")

    def find(stem: str) -> Path | None:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
        return None

    stems = IDX_STEMS
    found = [find(s) for s in stems]
    layout = (
        f"{folder} should hold {stems[0]}[.gz] and {stems[1]}[.gz], "
        f"and optionally {stems[2]}[.gz] and {stems[3]}[.gz]"
    )
    missing = [s for s, p in zip(stems[:2], found[:2]) if p is None]
    if (found[2] is None) != (found[3] is None):  # test files are optional, but only as a pair
        missing += [s for s, p in zip(stems[2:], found[2:]) if p is None]
    if missing:
        raise GenlabError(f"missing IDX file(s) in {folder}: {', '.join(missing)}", layout)
    paths = [p for p in found if p is not None]
    return _idx_arrays_to_raw(*(read_idx(p) for p in paths), paths=paths, classes=None)


# --------------------------------------------------------------------------------- CIFAR-10

CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue bytes
CIFAR_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
CIFAR_TEST = "test_batch.bin"


def read_cifar10_binary(path: Path) -> RawImages:
    """Read the CIFAR-10 binary tarball in memory (nothing is extracted to disk)."""
    path = Path(path)
    wanted = set(CIFAR_TRAIN) | {CIFAR_TEST}
    blobs: dict[str, bytes] = {}
    try:
        # Stream mode reads the archive front to back once instead of seeking in the gzip.
        with tarfile.open(path, "r|gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if base in wanted and member.isfile():
                    blobs[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise GenlabError(
            f"{path} is not a readable CIFAR-10 archive ({e})",
            f"the file is corrupted or truncated; delete {path} so it is downloaded again",
        ) from None
    missing = sorted(wanted - set(blobs))
    if missing:
        raise GenlabError(
            f"{path} lacks {', '.join(missing)}",
            "use the binary release cifar-10-binary.tar.gz (not the python or matlab one); "
            f"delete {path} so it is downloaded again",
        )

    def parse(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        data = b"".join(blobs[n] for n in names)
        if len(data) % CIFAR_RECORD:
            raise GenlabError(
                f"{path}: {', '.join(names)} is not a whole number of {CIFAR_RECORD}-byte records",
                f"the archive is corrupted; delete {path} so it is downloaded again",
            )
        records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
        labels = records[:, 0].astype(np.int64)
        if len(labels) and labels.max() >= len(CIFAR10_CLASSES):
            raise GenlabError(
                f"{path}: label {labels.max()} out of range 0..9", f"delete {path} so it is downloaded again"
            )
        # A contiguous copy: writable, and the label column is not carried along.
        return np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32), labels

    train_x, train_y = parse(CIFAR_TRAIN)
    test_x, test_y = parse([CIFAR_TEST])
    return RawImages(train_x, train_y, test_x, test_y, list(CIFAR10_CLASSES))


# ------------------------------------------------------------------------------------ folder

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}
FOLDER_LAYOUT = "expected DIR/<class name>/<image>.png (or jpg, jpeg, bmp, gif, webp), one sub-folder per class"


def _open_image(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise GenlabError(f"cannot read image {path} ({e})", "delete or replace the file") from None


def _load_folder(folder: Path, image_size: int | None, channels: int | None) -> RawImages:
    if not folder.is_dir():
        raise GenlabError(f"folder: {folder} does not exist or is not a folder", FOLDER_LAYOUT)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise GenlabError(f"{folder} has no class sub-folders", FOLDER_LAYOUT)

    files: list[Path] = []
    labels: list[int] = []
    skipped = sorted(str(p.relative_to(folder)) for p in folder.iterdir() if p.is_file())
    classes: list[str] = []
    empty: list[str] = []
    for class_dir in class_dirs:
        images = []
        for p in sorted(class_dir.rglob("*")):
            if not p.is_file():
                continue
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(p)
            else:
                skipped.append(str(p.relative_to(folder)))
        if not images:
            empty.append(class_dir.name)
            continue
        files += images
        labels += [len(classes)] * len(images)
        classes.append(class_dir.name)
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warn(f"skipped {len(skipped)} file(s) in {folder} that are not images in a class folder: {shown}")
    if not files:
        raise GenlabError(f"{folder} has no images in its class sub-folders", FOLDER_LAYOUT)
    if empty:
        warn(f"ignoring class folder(s) without images in {folder}: {', '.join(empty)}")

    # First pass reads only headers (cheap): modes decide the channel count, the first size the target size.
    modes = []
    for i, p in enumerate(files):
        with _open_image(p) as im:
            modes.append(im.mode)
            if i == 0:
                first_size = im.size
    if channels is None:
        channels = 1 if all(m in GRAYSCALE_MODES for m in modes) else 3
    if image_size is None:
        image_size = min(first_size)
        if first_size[0] != first_size[1]:
            warn(
                f"the first image {files[0].relative_to(folder)} is {first_size[0]}x{first_size[1]}, not square; "
                f"resizing all images to {image_size}x{image_size} (set data.image_size to choose)"
            )
    target_mode = "L" if channels == 1 else "RGB"

    out = np.empty((len(files), channels, image_size, image_size), dtype=np.uint8)
    for i, p in enumerate(files):
        with _open_image(p) as im:
            try:
                if im.mode == "P" and "transparency" in im.info:
                    im = im.convert("RGBA")  # Pillow's advice for palette images with transparency
                im = im.convert(target_mode)
                if im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.Resampling.BICUBIC)
                pixels = np.asarray(im, dtype=np.uint8)
            except (OSError, ValueError) as e:  # truncated or undecodable pixel data
                raise GenlabError(f"cannot read image {p} ({e})", "delete or replace the file") from None
        out[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return RawImages(out, np.asarray(labels, dtype=np.int64), None, None, classes)


# --------------------------------------------------------------------------------------- npz

NPZ_LAYOUT = (
    "save with np.savez(FILE, x_train=..., y_train=..., [x_test=..., y_test=...]) "
    "or np.savez(FILE, images=..., labels=...)"
)


def _load_npz(path: Path) -> RawImages:
    if not path.is_file():
        raise GenlabError(f"npz: file {path} does not exist", NPZ_LAYOUT)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise GenlabError(f"cannot read {path} as a .npz archive ({e})", NPZ_LAYOUT) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise GenlabError(f"{path} holds a single array, not a .npz archive of named arrays", NPZ_LAYOUT)
    with archive:
        keys = set(archive.files)
        if {"x_train", "y_train"} <= keys:
            names = ["x_train", "y_train"]
            if "x_test" in keys or "y_test" in keys:
                if not {"x_test", "y_test"} <= keys:
                    raise GenlabError(f"{path} has only one of x_test and y_test", "give both or neither")
                names += ["x_test", "y_test"]
        elif {"images", "labels"} <= keys:
            names = ["images", "labels"]
        else:
            raise GenlabError(f"{path} has arrays {sorted(keys)}, not x_train/y_train or images/labels", NPZ_LAYOUT)
        arrays = {}
        for key in names:
            try:
                arrays[key] = archive[key]
            except ValueError as e:  # object arrays need pickle, which is never allowed (it runs code)
                raise GenlabError(
                    f"{path}: array {key!r} cannot be loaded without pickle ({e})",
                    "store plain numeric arrays (uint8 images, integer labels), not Python objects",
                ) from None
            except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
                raise GenlabError(f"{path}: array {key!r} is damaged ({e})", "write the .npz file again") from None

    pairs = [(names[i], names[i + 1]) for i in range(0, len(names), 2)]
    splits = [(_npz_images(arrays[x], f"{path}:{x}"), _npz_labels(arrays[y], f"{path}:{y}")) for x, y in pairs]
    for (x_key, y_key), (x, y) in zip(pairs, splits):
        if len(x) != len(y):
            raise GenlabError(f"{path}: {x_key} has {len(x)} images but {y_key} has {len(y)} labels")
    if len(splits) == 2 and splits[0][0].shape[1:] != splits[1][0].shape[1:]:
        raise GenlabError(
            f"{path}: train images are {splits[0][0].shape[1:]} but test images are {splits[1][0].shape[1:]}"
        )
    train_x, train_y = splits[0]
    test_x, test_y = splits[1] if len(splits) == 2 else (None, None)
    return RawImages(train_x, train_y, test_x, test_y, _numbered_classes(train_y, test_y))


def _npz_images(x: np.ndarray, where: str) -> np.ndarray:
    """Bring [N,H,W], [N,H,W,C] or [N,C,H,W] (C in 1, 3) to uint8 [N,C,H,W]."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] in (1, 3):
        pass  # already [N, C, H, W]; preferred when the shape is ambiguous
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    else:
        raise GenlabError(
            f"{where} has shape {x.shape}",
            "images must be [N, H, W], [N, H, W, C] or [N, C, H, W] with C = 1 (grayscale) or 3 (RGB)",
        )
    if len(x) == 0:
        raise GenlabError(f"{where} holds no images")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * 255
    if np.issubdtype(x.dtype, np.floating):
        lo, hi = float(x.min()), float(x.max())
        if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
            raise GenlabError(f"{where} has float values in [{lo}, {hi}]", "store floats in [0, 1] or uint8 in 0..255")
        return np.rint(x * 255.0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise GenlabError(
                f"{where} has integer values in [{lo}, {hi}]", "store uint8 in 0..255 or floats in [0, 1]"
            )
        return x.astype(np.uint8)
    raise GenlabError(f"{where} has dtype {x.dtype}", "store uint8 in 0..255 or floats in [0, 1]")


def _npz_labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise GenlabError(
            f"{where} has dtype {y.dtype} and shape {y.shape}", "labels must be a 1-D integer array of class indices"
        )
    if len(y) and y.min() < 0:
        raise GenlabError(f"{where} has negative labels (min {y.min()})", "labels must be class indices 0..K-1")
    return y.astype(np.int64)
