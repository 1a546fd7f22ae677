"""Inputs: the timed example batch, the verification set and the calibration set, from one source.

The source is synthetic (standard normal, seeded) by default, or a folder of real images
(``verify.images``), preprocessed the ImageNet way. Verification and calibration samples come from
the same source but never overlap: synthetic sets use different seeds; an image folder is split,
the first ``verify.samples`` images verify and the rest calibrate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infertune.errors import ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
#: added to the seed for calibration data so it never repeats verification data.
CALIBRATION_SEED_OFFSET = 1_000_003
TIMED_SEED_OFFSET = 2_000_003


@dataclass(frozen=True)
class InputSource:
    """Where samples come from: a seed (synthetic) or an image folder; ``shape`` excludes the batch."""

    shape: tuple[int, ...]
    seed: int = 0
    images: str | None = None
    #: how many images the verification set takes; calibration images start after them.
    verify_count: int = 0

    def verification(self, n: int) -> np.ndarray:
        """The ``n`` samples every variant is compared on."""
        if self.images:
            return _load_images(self._image_files()[:n], self.shape, need=n, role="verification")
        return _synthetic(n, self.shape, self.seed)

    def calibration(self, n: int) -> np.ndarray:
        """``n`` calibration samples, disjoint from the verification ones."""
        if self.images:
            files = self._image_files()[self.verify_count :]
            if not files:
                raise ConfigError(
                    f"{self.images} has no images left for INT8 calibration after the verification ones: "
                    "add images or lower verify.samples"
                )
            picked = [files[i % len(files)] for i in range(n)]
            return _load_images(picked, self.shape, need=1, role="calibration")
        return _synthetic(n, self.shape, self.seed + CALIBRATION_SEED_OFFSET)

    def timed_batch(self, batch_size: int) -> np.ndarray:
        """The batch the timed loop feeds (synthetic: content does not change dense-model speed)."""
        return _synthetic(batch_size, self.shape, self.seed + TIMED_SEED_OFFSET)

    def _image_files(self) -> list[Path]:
        folder = Path(self.images or "")
        if not folder.is_dir():
            raise ConfigError(f"verify.images: {folder} is not a folder; point it at a folder of .jpg/.png images")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"verify.images: {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files


def _synthetic(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _load_images(files: list[Path], shape: tuple[int, ...], need: int, role: str) -> np.ndarray:
    from PIL import Image

    if len(files) < need:
        raise ConfigError(f"{role} needs {need} images but the folder has {len(files)}: add images or lower verify.samples")
    channels, height, width = shape
    out = np.empty((len(files), *shape), dtype=np.float32)
    for i, path in enumerate(files):
        try:
            img = Image.open(path).convert("RGB" if channels == 3 else "L")
        except OSError as err:
            raise ConfigError(f"cannot read image {path}: {err}") from None
        out[i] = _preprocess(img, height, width, channels)
    return out


def _preprocess(img, height: int, width: int, channels: int) -> np.ndarray:
    """Resize the short side to 256/224 of the target, centre-crop, scale to [0,1], ImageNet-normalise."""
    scale = 256 / 224
    w, h = img.size
    short = min(w, h)
    target = round(max(height, width) * scale)
    img = img.resize((max(1, round(w * target / short)), max(1, round(h * target / short))))
    w, h = img.size
    left, top = (w - width) // 2, (h - height) // 2
    img = img.crop((left, top, left + width, top + height))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if channels == 1:
        return arr[None]
    arr = (arr - IMAGENET_MEAN) / IMAGENET_STD
    return arr.transpose(2, 0, 1)
