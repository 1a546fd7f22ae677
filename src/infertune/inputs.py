"""Inputs: the timed example batch, the verification set and the calibration set, from one source.

Sources (``InputSource.kind``):

- ``photos`` (the default): real photographs shipped inside scikit-image (``infertune.photos``);
  the verification and calibration photos are different photos.
- ``folder``: a folder of images (``verify.images``): the first ``verify.samples`` images verify,
  the rest calibrate.
- ``dataset``: a labelled ImageFolder tree (``verify.dataset``, accuracy mode): every image verifies
  and carries a label; calibration comes from ``verify.calibration_images`` or the shipped photos.
- ``synthetic``: seeded data of each input's dtype and range (``InputSpec``): standard normal noise
  for a float input without a range, uniform values in ``[low, high)`` otherwise (token ids in
  ``[0, vocab)``, a mask of ones in ``[1, 2)``); calibration uses a different seed.

A model has one or several inputs (``InputSpec``: name, the shape of one sample, dtype, value range).
A batch (``Batch``) is one array for a single-input model, as it always was, and a ``{name: array}``
mapping, in the model's input order, when there are several. The image sources need a single image
input (1 or 3 channels); any other model verifies on synthetic data, and every row says which.

Images get the standard ImageNet preprocessing: resize the short side to 256/224 of the input size
(bilinear), centre-crop, scale to [0, 1], normalise with the model's mean/std (ImageNet's unless the
model or ``verify.mean``/``verify.std`` say otherwise). Calibration never sees a verification image:
``calibration_images`` is checked against the verification files by content. Each set describes
itself (``describe_verification``, ``describe_calibration``) so every result row can say which inputs
were used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from infertune.errors import ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
#: added to the seed for calibration data so it never repeats verification data.
CALIBRATION_SEED_OFFSET = 1_000_003
TIMED_SEED_OFFSET = 2_000_003
KINDS = ("photos", "folder", "dataset", "synthetic")
#: dtypes an input may have (numpy names).
DTYPES = ("float32", "float16", "int64", "int32", "bool")
FLOAT_DTYPES = ("float32", "float16")
#: a batch of inputs: one array (a single-input model) or {input name: array} in the model's input order.
Batch = np.ndarray | dict[str, np.ndarray]
#: the name a single input gets when nothing names it (a torch model's one argument).
DEFAULT_INPUT_NAME = "input"


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, the shape of one sample (no batch dimension), its dtype, and the
    range synthetic values are drawn from.

    ``low``/``high`` bound synthetic values to ``[low, high)`` (integers: ``low`` .. ``high - 1``);
    without them a float input gets standard normal noise and an integer or bool input ``0`` or ``1``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"input {self.name!r}: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if any(int(d) < 1 for d in self.shape):
            raise ConfigError(f"input {self.name!r}: every dimension must be >= 1, got {list(self.shape)}")
        if (self.low is None) != (self.high is None):
            raise ConfigError(f"input {self.name!r}: give both ends of the range [low, high) or neither")
        if self.low is not None and self.high is not None and not self.high > self.low:
            raise ConfigError(f"input {self.name!r}: range [{self.low}, {self.high}) is empty: high must exceed low")
        if self.dtype == "bool" and self.low is not None and (self.low < 0 or self.high > 2):  # type: ignore[operator]
            raise ConfigError(f"input {self.name!r}: a bool input's range lies within [0, 2), got "
                              f"[{self.low}, {self.high})")

    @property
    def is_image(self) -> bool:
        """A float (C, H, W) input with 1 or 3 channels: images can feed it."""
        return self.dtype in FLOAT_DTYPES and len(self.shape) == 3 and self.shape[0] in (1, 3)

    @property
    def bytes_per_sample(self) -> int:
        count = 1
        for d in self.shape:
            count *= int(d)
        return count * np.dtype(self.dtype).itemsize

    def synthetic(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples of this input's dtype and range, drawn from ``rng``."""
        shape = (n, *self.shape)
        if self.dtype in FLOAT_DTYPES:
            if self.low is None:
                values = rng.standard_normal(shape)
            else:
                values = rng.uniform(self.low, self.high, shape)
            return values.astype(self.dtype)
        low, high = (0, 2) if self.low is None else (int(np.ceil(self.low)), int(np.ceil(self.high)))  # type: ignore[arg-type]
        return rng.integers(low, high, shape).astype(self.dtype)

    def describe(self) -> str:
        """``input_ids int64[128] in [0, 30522)``: what a row says this input was fed."""
        dims = ",".join(str(d) for d in self.shape)
        if self.low is None:
            values = "~ N(0,1)" if self.dtype in FLOAT_DTYPES else "in {0, 1}"
        elif self.dtype not in FLOAT_DTYPES and int(np.ceil(self.high)) - int(np.ceil(self.low)) == 1:  # type: ignore[arg-type]
            values = f"= {int(np.ceil(self.low))}"
        else:
            values = f"in [{_number(self.low)}, {_number(self.high)})"
        return f"{self.name} {self.dtype}[{dims}] {values}"


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def batch_size(batch: Batch) -> int:
    """How many samples ``batch`` holds."""
    if isinstance(batch, dict):
        return len(next(iter(batch.values())))
    return len(batch)


def take(batch: Batch, index: Any) -> Batch:
    """The samples at ``index`` (a slice or a list of positions) of every input."""
    if isinstance(batch, dict):
        return {name: arr[index] for name, arr in batch.items()}
    return batch[index]


def concat(batches: Sequence[Batch]) -> Batch:
    """Batches joined along the batch dimension."""
    if isinstance(batches[0], dict):
        return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}  # type: ignore[index]
    return np.concatenate(batches)  # type: ignore[arg-type]


def named(batch: Batch, name: str = DEFAULT_INPUT_NAME) -> dict[str, np.ndarray]:
    """The batch as {input name: array}; a single array is the one input ``name``."""
    return dict(batch) if isinstance(batch, dict) else {name: batch}


def synthetic_batch(specs: Sequence[InputSpec], n: int, seed: int) -> Batch:
    """``n`` seeded samples of every input; one input gives one array (the same draw as always)."""
    rng = np.random.default_rng(seed)
    arrays = {spec.name: spec.synthetic(n, rng) for spec in specs}
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays


def describe_specs(specs: Sequence[InputSpec]) -> str:
    return "; ".join(spec.describe() for spec in specs)


@dataclass(frozen=True)
class InputSource:
    """Where samples come from, for the model's inputs (``specs``). Picklable: it travels to workers.

    Attributes:
        specs: the model's inputs; empty means one float32 input of ``shape``.
        shape: one sample of a single-input model, without the batch (filled from ``specs`` when they give it).
        kind: one of ``KINDS``; empty means ``folder`` when ``images`` is set, else ``synthetic``.
        images: the folder (``folder``) or the ImageFolder root (``dataset``).
        verify_count: how many images of a ``folder`` verify; calibration images start after them.
        calibration_images: a folder of calibration images (any kind but synthetic).
        mean, std: per-channel normalisation of images scaled to [0, 1].
        num_classes: the model's number of outputs, to map a dataset's class folders.
    """

    shape: tuple[int, ...] = ()
    seed: int = 0
    images: str | None = None
    verify_count: int = 0
    kind: str = ""
    calibration_images: str | None = None
    mean: tuple[float, ...] = tuple(float(v) for v in IMAGENET_MEAN)
    std: tuple[float, ...] = tuple(float(v) for v in IMAGENET_STD)
    num_classes: int | None = None
    specs: tuple[InputSpec, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.specs:
            object.__setattr__(self, "specs", (InputSpec(DEFAULT_INPUT_NAME, tuple(self.shape)),))
        elif len(self.specs) == 1:
            object.__setattr__(self, "shape", tuple(self.specs[0].shape))

    @property
    def source_kind(self) -> str:
        return self.kind or ("folder" if self.images else "synthetic")

    # ------------------------------------------------------------------ verification

    def verification(self, n: int) -> Batch:
        """The samples every variant is compared on (a ``dataset`` gives all its images, whatever ``n``)."""
        kind = self.source_kind
        if kind == "photos":
            from infertune import photos

            files = photos.verification_files()
            return self._load([(files[i % len(files)], _photo_view(i, len(files))) for i in range(n)],
                              seed=self.seed)
        if kind == "folder":
            files = self._folder_files()
            if len(files) < n:
                raise ConfigError(f"verification needs {n} images but {self.images} has {len(files)}: "
                                  "add images or lower verify.samples")
            return self._load([(f, "plain") for f in files[:n]], seed=self.seed)
        if kind == "dataset":
            return self._load([(f, "plain") for f in self.dataset.files], seed=self.seed)
        return synthetic_batch(self.specs, n, self.seed)

    def labels(self) -> np.ndarray | None:
        """Class indices of the verification samples (``dataset`` only), else None."""
        return np.asarray(self.dataset.labels, dtype=np.int64) if self.source_kind == "dataset" else None

    @cached_property
    def dataset(self) -> Any:
        from infertune.labelled import read_labelled_folder

        return read_labelled_folder(self.images or "", self.num_classes)

    def describe_verification(self, n: int) -> str:
        kind = self.source_kind
        if kind == "photos":
            from infertune import photos

            names = [name.split(".")[0] for name, _, _ in photos.VERIFICATION_PHOTOS]
            extra = n - min(n, len(names))
            more = (f" + {extra} mirrored" if extra <= len(names) else f" + {extra} mirrored/cropped") if extra else ""
            return f"photos: {', '.join(names[:n])}{more} (scikit-image {photos.skimage_version()})"
        if kind == "folder":
            return f"folder {self.images}: first {n} of {len(self._folder_files())} images"
        if kind == "dataset":
            return self.dataset.description
        return f"synthetic, seed {self.seed}: {describe_specs(self.specs)}"

    # ------------------------------------------------------------------ calibration

    def calibration(self, n: int) -> Batch:
        """``n`` calibration samples, never drawn from a verification image."""
        files = self._calibration_files()
        if files is None:
            return synthetic_batch(self.specs, n, self.seed + CALIBRATION_SEED_OFFSET)
        # first pass over the files as they are, then seeded random crops/flips of them
        views = [(files[i % len(files)], "plain" if i < len(files) else "augment") for i in range(n)]
        return self._load(views, seed=self.seed + CALIBRATION_SEED_OFFSET)

    def describe_calibration(self, n: int) -> str:
        files = self._calibration_files()
        if files is None:
            return f"synthetic, seed {self.seed + CALIBRATION_SEED_OFFSET}: {describe_specs(self.specs)}"
        augmented = f", {n} samples (crops/flips beyond the first {len(files)})" if n > len(files) else ""
        if self.calibration_images:
            where = f"folder {self.calibration_images}: {len(files)} images"
        elif self.source_kind == "folder":
            where = f"folder {self.images}: the {len(files)} images after the first {self.verify_count}"
        else:
            from infertune import photos

            names = ", ".join(p.stem for p in files)
            where = f"photos: {names} (scikit-image {photos.skimage_version()})"
        return where + augmented

    def calibration_identity(self) -> str:
        """A short digest of what calibration would read (part of INT8 artifact cache keys), so a
        cached INT8 model calibrated on other data is never reused."""
        files = self._calibration_files()
        h = hashlib.sha256(f"{self.source_kind}|{self.seed}|{self.mean}|{self.std}|{describe_specs(self.specs)}".encode())
        for f in files or []:
            stat = f.stat()
            h.update(f"{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def _calibration_files(self) -> list[Path] | None:
        """The image files calibration reads, or None for synthetic calibration."""
        if self.calibration_images:
            files = _image_files(self.calibration_images, "verify.calibration_images")
            self._check_disjoint(files)
            return files
        kind = self.source_kind
        if kind == "synthetic":
            return None
        if kind == "folder":
            files = self._folder_files()[self.verify_count:]
            if not files:
                raise ConfigError(
                    f"{self.images} has no images left for INT8 calibration after the {self.verify_count} "
                    "verification ones: add images, lower verify.samples or set verify.calibration_images"
                )
            return files
        from infertune import photos

        reason = photos.photos_available()
        if reason:
            raise ConfigError(f"INT8 calibration needs images: {reason}; set verify.calibration_images to a "
                              "folder of images (never the verification ones)")
        return photos.calibration_files()

    def _check_disjoint(self, calibration: list[Path]) -> None:
        kind = self.source_kind
        if kind == "photos":
            from infertune import photos

            verification = photos.verification_files()
        elif kind == "folder":
            verification = self._folder_files()[: self.verify_count]
        elif kind == "dataset":
            verification = list(self.dataset.files)
        else:
            return
        shared = set(_digests(calibration)) & set(_digests(verification))
        if shared:
            names = [p.name for p, d in zip(calibration, _digests(calibration)) if d in shared]
            raise ConfigError(f"verify.calibration_images shares {len(names)} image(s) with the verification set "
                              f"({', '.join(names[:5])}): calibration and verification must not overlap")

    # ------------------------------------------------------------------ timing

    def timed_batch(self, batch_size: int) -> Batch:
        """The batch the timed loop feeds (synthetic: content does not change dense-model speed)."""
        return synthetic_batch(self.specs, batch_size, self.seed + TIMED_SEED_OFFSET)

    # ------------------------------------------------------------------ loading

    def _folder_files(self) -> list[Path]:
        return _image_files(self.images or "", "verify.images")

    def _load(self, views: list[tuple[Path, str]], seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((len(views), *self.shape), dtype=np.float32)
        for i, (path, view) in enumerate(views):
            out[i] = preprocess(open_image(path, self.shape[0]), self.shape, self.mean, self.std, view, rng)
        return out.astype(self.specs[0].dtype, copy=False)


def resolve_source(shape: tuple[int, ...] = (), seed: int = 0, inputs: str = "photos", images: str | None = None,
                   dataset: str | None = None, verify_count: int = 8, calibration_images: str | None = None,
                   mean: Any = None, std: Any = None, num_classes: int | None = None,
                   specs: Sequence[InputSpec] = ()) -> tuple[InputSource, str]:
    """Pick the source the config asks for; returns it and a note when it had to fall back.

    ``specs`` are the model's inputs (default: one float32 input of ``shape``). ``dataset`` wins over
    ``images``, which wins over ``inputs`` (``photos`` or ``synthetic``). The image sources need a
    single image input: a model with other inputs (token ids, a feature vector, several inputs)
    verifies on synthetic data of each input's dtype and range; shipped photos also fall back to
    synthetic inputs, with a note saying why, when scikit-image is missing or a (C, H, W) input has
    neither 1 nor 3 channels.
    """
    specs = tuple(specs) or (InputSpec(DEFAULT_INPUT_NAME, tuple(shape)),)
    image = specs[0] if len(specs) == 1 and specs[0].is_image else None
    note = ""
    if dataset:
        kind = "dataset"
    elif images:
        kind = "folder"
    else:
        kind = inputs
    if kind == "photos":
        from infertune import photos

        if image is None:
            kind = "synthetic"
            if len(specs) == 1 and len(specs[0].shape) == 3:  # image-shaped, but not 1 or 3 channels
                note = ("verification uses synthetic inputs: the shipped photos are unusable (the model takes "
                        f"{specs[0].shape[0]}-channel inputs, not images)")
        elif photos.photos_available():
            kind = "synthetic"
            note = f"verification uses synthetic inputs: the shipped photos are unusable ({photos.photos_available()})"
    elif kind in ("folder", "dataset") and image is None:
        key = "verify.dataset" if kind == "dataset" else "verify.images"
        raise ConfigError(f"{key}: images feed a model with one 1- or 3-channel (C, H, W) float input; this model "
                          f"takes {describe_specs(specs)}: drop {key} (its inputs are then synthetic)")
    mean_t = tuple(float(v) for v in (mean if mean is not None else IMAGENET_MEAN))
    std_t = tuple(float(v) for v in (std if std is not None else IMAGENET_STD))
    if image is not None and image.shape[0] == 3 and (len(mean_t) != 3 or len(std_t) != 3):
        raise ConfigError(f"verify.mean/verify.std need 3 values for RGB inputs, got {list(mean_t)} / {list(std_t)}")
    if any(s <= 0 for s in std_t):
        raise ConfigError(f"verify.std values must be > 0, got {list(std_t)}")
    source = InputSource(seed=seed, images=dataset or images, verify_count=verify_count, kind=kind,
                         calibration_images=calibration_images, mean=mean_t, std=std_t, num_classes=num_classes,
                         specs=specs)
    return source, note


def _photo_view(i: int, count: int) -> str:
    """Photo sample ``i``: each photo as is, then mirrored, then random crops."""
    rounds = i // count
    return "plain" if rounds == 0 else ("mirror" if rounds == 1 else "augment")


def _image_files(folder: str | Path, key: str) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{key}: {root} is not a folder; point it at a folder of .jpg/.png images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"{key}: {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _digests(files: list[Path]) -> list[str]:
    return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


def open_image(path: Path, channels: int) -> Any:
    """Open an image as RGB (or greyscale for 1-channel models); a bad file is a ConfigError."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB" if channels == 3 else "L")
    except OSError as err:
        raise ConfigError(f"cannot read image {path}: {err}") from None


def preprocess(img: Any, shape: tuple[int, ...], mean: tuple[float, ...], std: tuple[float, ...],
               view: str = "plain", rng: np.random.Generator | None = None) -> np.ndarray:
    """ImageNet-style preprocessing of one PIL image into a (C, H, W) float32 array.

    ``plain``: resize the short side to 256/224 of the target, centre-crop. ``mirror``: the same,
    flipped left-right. ``augment``: a random crop of 35-100% of the area (aspect 3/4-4/3) resized to
    the target, flipped half the time (calibration and extra verification samples).
    """
    from PIL import Image

    channels, height, width = shape
    if view == "augment":
        rng = rng or np.random.default_rng(0)
        img = _random_crop(img, rng).resize((width, height), Image.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
    else:
        w, h = img.size
        target = round(max(height, width) * 256 / 224)
        scale = target / min(w, h)
        img = img.resize((max(width, round(w * scale)), max(height, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - width) // 2, (h - height) // 2
        img = img.crop((left, top, left + width, top + height))
        if view == "mirror":
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if channels == 1:
        return arr[None]
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return arr.transpose(2, 0, 1)


def _random_crop(img: Any, rng: np.random.Generator) -> Any:
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(0.35, 1.0)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return img.crop((left, top, left + cw, top + ch))
    side = min(w, h)
    return img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
