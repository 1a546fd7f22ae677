"""Real photographs that ship inside scikit-image's wheel: the default verification set.

Verifying on real photos matters: synthetic noise is not what a quantized model will see, and INT8
calibration ranges or a wrong preprocessing only show their damage on natural images. scikit-image
bundles a few freely licensed photos under ``skimage/data`` for its own docs; they are read straight
from the installed package (``skimage.data``'s loaders fetch other files with pooch, which would
need the network), so nothing is downloaded.

The photos are split once, by name, into a verification set and a calibration set that never share
a photo. There are few of them, so extra verification samples are the same photos mirrored, and
calibration samples beyond the photo count are seeded random crops and flips of the calibration photos
(the usual calibration augmentation); neither ever uses a photo of the other set.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: verification photos (file name in skimage/data, what it shows, its licence as scikit-image states it).
VERIFICATION_PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("chelsea.png", "a tabby cat", "CC0 (Stefan van der Walt)"),
    ("coffee.png", "a cup of espresso", "CC0 (Rachel Michetti)"),
    ("astronaut.png", "astronaut Eileen Collins", "public domain (NASA)"),
    ("rocket.jpg", "a rocket on its launch pad", "public domain (SpaceX)"),
    ("camera.png", "a photographer with a camera on a tripod (greyscale)", "CC0 (Lav Varshney)"),
    ("coins.png", "Greek coins (greyscale)", "no known copyright restrictions (Brooklyn Museum)"),
)
#: calibration photos: never used for verification.
CALIBRATION_PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("hubble_deep_field.jpg", "the Hubble deep field", "public domain (NASA)"),
    ("clock_motion.png", "a clock, motion-blurred (greyscale)", "public domain (Stefan van der Walt)"),
    ("retina.jpg", "a human retina", "CC0"),
    ("ihc.png", "an immunohistochemistry slide", "no known copyright restrictions"),
    ("brick.png", "a brick wall (greyscale)", "CC0 (CC0Textures)"),
    ("grass.png", "grass (greyscale)", "CC0 (CC0Textures)"),
    ("gravel.png", "gravel (greyscale)", "CC0 (CC0Textures)"),
    ("cell.png", "a cell under a microscope (greyscale)", "CC0"),
)


def photos_available() -> str:
    """Empty when the shipped photos can be read; otherwise why not (for the fallback note)."""
    if importlib.util.find_spec("skimage") is None:
        return "scikit-image is not installed (pip install scikit-image)"
    missing = [name for name, _, _ in VERIFICATION_PHOTOS + CALIBRATION_PHOTOS if not (data_dir() / name).is_file()]
    if missing:
        return f"this scikit-image does not ship {', '.join(missing)}"
    return ""


def data_dir() -> Path:
    """skimage/data inside the installed package (found without importing skimage, which is slow)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return Path("/nonexistent/skimage/data")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def verification_files() -> list[Path]:
    return [data_dir() / name for name, _, _ in VERIFICATION_PHOTOS]


def calibration_files() -> list[Path]:
    return [data_dir() / name for name, _, _ in CALIBRATION_PHOTOS]


def skimage_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("scikit-image")
    except importlib.metadata.PackageNotFoundError:
        return "n/a"
