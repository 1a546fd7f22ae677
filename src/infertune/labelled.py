"""Labelled image folders for accuracy mode: an ImageFolder tree, one sub-folder per class.

A sub-folder's name says which model output it is, in one of three ways (checked in this order):
an integer class index (``281/``), an ImageNet class name as torchvision spells it (``tabby/``,
``Egyptian cat/``, ``espresso/``; case, spaces and underscores do not matter), or, when every name
is neither and there are exactly as many folders as the model has classes, torchvision's
``ImageFolder`` convention: sorted folder names are classes 0, 1, 2...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infertune.errors import ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}


@dataclass(frozen=True)
class LabelledFolder:
    """Images under ``root/<class>/`` and each one's class index."""

    root: Path
    files: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: dict[str, int]

    @property
    def description(self) -> str:
        return f"dataset {self.root} ({len(self.files)} images, {len(self.classes)} classes)"


def read_labelled_folder(root: str | Path, num_classes: int | None = None) -> LabelledFolder:
    """Scan ``root`` and map each class folder to an output index (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"verify.dataset: {root} is not a folder; point it at an ImageFolder tree "
                          "(one sub-folder of images per class)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ConfigError(f"verify.dataset: {root} has no class sub-folders; put each class's images in "
                          "root/<class index or ImageNet class name>/")
    classes = _class_indices([f.name for f in folders], num_classes, root)
    files: list[Path] = []
    labels: list[int] = []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            files.append(path)
            labels.append(classes[folder.name])
    if not files:
        raise ConfigError(f"verify.dataset: the class folders under {root} hold no images "
                          f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    if num_classes is not None:
        bad = sorted({name for name, idx in classes.items() if not 0 <= idx < num_classes})
        if bad:
            raise ConfigError(f"verify.dataset: class folder(s) {', '.join(bad)} name an index outside the "
                              f"model's {num_classes} outputs")
    return LabelledFolder(root, tuple(files), tuple(labels), classes)


def _class_indices(names: list[str], num_classes: int | None, root: Path) -> dict[str, int]:
    imagenet = _imagenet_index()
    out: dict[str, int] = {}
    unknown: list[str] = []
    for name in names:
        if name.strip().isdigit():
            out[name] = int(name)
        elif _key(name) in imagenet:
            idx = imagenet[_key(name)]
            if idx < 0:
                raise ConfigError(f"verify.dataset: {name!r} names two ImageNet classes; rename the folder to "
                                  "its class index (e.g. 264 or 474 for 'cardigan')")
            out[name] = idx
        else:
            unknown.append(name)
    if not unknown:
        return out
    if not out and num_classes is not None and len(names) == num_classes:
        return {name: i for i, name in enumerate(names)}  # torchvision ImageFolder order
    raise ConfigError(
        f"verify.dataset: cannot tell which class folder(s) {', '.join(unknown)} under {root} are: name each "
        "folder by its class index (e.g. 281) or its ImageNet class name (e.g. tabby), or give one folder "
        "per model output"
    )


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def _imagenet_index() -> dict[str, int]:
    """ImageNet-1k class names (torchvision's list, shipped in its wheel) -> index; -1 if ambiguous."""
    try:
        from torchvision.models import ResNet50_Weights
    except ImportError:
        return {}
    index: dict[str, int] = {}
    for i, name in enumerate(ResNet50_Weights.IMAGENET1K_V2.meta["categories"]):
        index[_key(name)] = -1 if _key(name) in index else i
    return index


def imagenet_class_name(index: int) -> str:
    """The ImageNet class name of ``index`` (for docs and messages); ``str(index)`` if unknown."""
    try:
        from torchvision.models import ResNet50_Weights

        return ResNet50_Weights.IMAGENET1K_V2.meta["categories"][index]
    except (ImportError, IndexError):
        return str(index)
