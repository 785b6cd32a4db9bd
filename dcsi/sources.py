"""Sources: every kind of image dataset dcsi reads, behind one lazy :class:`ImageSet`.

:func:`open_source` accepts (CONTRACT section 3)

- an image folder ``dir/<class>/<image>`` or ``dir/<split>/<class>/<image>`` (the layout of
  ``datasets``' ``imagefolder``; a folder of images without class folders is unlabelled),
- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``,
- a ``.parquet`` file, a folder of them, or a folder whose ``data/`` sub-folder holds
  them (a Hub repository's layout): one table, files in path order; a split is read
  from the file names (``train-00000-of-00002.parquet``, ``data/test/0.parquet``); the
  image column holds encoded bytes (``datasets``' ``Image`` struct or plain binary) and
  the ``ClassLabel`` names come from the ``huggingface`` schema metadata when present;
  rows are read by position, one row group at a time, with pyarrow (no copy of the
  data is made, and a Ray actor reads its rows from the files itself),
- ``"hf:<repo_id>"`` or ``"hf:<repo_id>:<config>"`` through ``datasets.load_dataset``
  (offline from the local cache),
- ``"sample:digits"`` and ``"sample:fashion-mnist"`` (:mod:`dcsi.samples`),
- an ndarray ``(n, h, w)`` or ``(n, h, w, c)`` of uint8 with ``labels=``,
- an :class:`ImageSet` (returned as is).

Images are decoded one at a time, never all at once.  When a source is opened, one pass
reads every encoded image once: it hashes its bytes (the per-image content hash that keys
the feature cache and makes up the dataset fingerprint), decodes it to check that it is
usable and records its size.  Only regular files are opened, and a file is read whole
only once PIL has identified an image from its header.  Items that cannot be used are
left out and listed in :attr:`ImageSet.skipped` with the reason (one warning gives the
count, the first few items and where the full list is; ``dcsi analyze`` writes it to
``dcsi.json`` under ``dataset.skipped``).  Nothing is left out silently:

========================================  ==============================================
input                                      what happens
========================================  ==============================================
zero-byte file                             skipped ("zero-byte file")
not an image (also a huge one)             skipped ("not an image ..."), from its header
                                           alone: the file is not read whole
truncated / corrupt                        skipped ("truncated or corrupt image: ...")
over PIL's decompression-bomb limit        skipped (raise ``PIL.Image.MAX_IMAGE_PIXELS``)
smaller side below 2 px (e.g. 1x1)         skipped ("degenerate ... image")
FIFO, device, socket, or a link to one     skipped ("not a regular file (FIFO)"); never
                                           opened for reading, so nothing blocks
unreadable file                            skipped ("cannot read the file: ...")
unreadable folder                          skipped as ``"<folder>/"`` ("cannot list the
                                           folder: ..."); an unreadable dataset folder
                                           is a :class:`DataError`
symbolic link inside the dataset folder    followed; a folder reached twice is read
                                           once (the second path skipped, "same folder")
symbolic link leading outside it           skipped ("symbolic link to ..., outside the
                                           dataset folder"); read with
                                           ``follow_symlinks=True`` / ``--follow-symlinks``
broken symbolic link                       skipped ("broken symbolic link: ...")
HF or Parquet image cell with a path and   read relative to the saved dataset's folder
no bytes                                   (the Parquet source's folder, or the file's);
                                           a path leading out of it (out of the Hugging
                                           Face caches for ``hf:``) is skipped unless
                                           ``follow_symlinks=True``
HF or Parquet row without an image (None)  skipped ("missing image (None)")
file or folder name that is not UTF-8      id and class name are valid text: each
                                           undecodable byte becomes ``\\xNN``
                                           (``b"caf\\xe9.png"`` -> ``caf\\xe9.png``); the
                                           file is still read from its real name
dcsi output folder (``--out``)             a folder holding ``dcsi.json``,
                                           ``redundancy.json`` or ``leakage.json`` is
                                           never read as data, at any depth (one
                                           warning): ``--out`` may lie in the dataset
sub-folders of a class folder              merged into the class (one warning says how
                                           many)
image files beside class folders           ignored (one warning)
hidden files and folders (``.name``)       ignored
files without an image extension           ignored
class with no usable image                 (empty or unreadable folder, every image
                                           skipped, a class of another split only)
                                           dropped, the others renumbered ``0..K-1`` in
                                           order; one warning names them; listed in
                                           :attr:`ImageSet.dropped_classes` and the
                                           card's ``dataset.dropped_classes``.  Array
                                           sources keep the classes they are given
EXIF orientation                           rotated upright (``ImageOps.exif_transpose``)
modes 1, L, I;16, I, F                     to ``"L"`` (16-bit: ``round(v / 257)``;
                                           32-bit and float: scaled from min..max)
modes LA, RGBA, PA, P with transparency    composited over white, then ``"L"``/``"RGB"``
modes P, CMYK, YCbCr, LAB, HSV             to ``"RGB"``
========================================  ==============================================

Examples
--------
>>> import dcsi
>>> ims = dcsi.open_source("sample:digits")
>>> len(ims), ims.classes[:3]
(1797, ['0', '1', '2'])
>>> ims.load(0).size
(8, 8)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dcsi._progress import progress
from dcsi._validation import check_int, check_memory, require
from dcsi.exceptions import DataError, InvalidParameterError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_WORKING_SIDE",
    "MIN_SIDE",
    "OUTPUT_MARKERS",
    "SPLIT_NAMES",
    "ImageSet",
    "SkippedItem",
    "bounded_size",
    "decode_image",
    "open_files",
    "open_source",
]

logger = logging.getLogger(__name__)

#: File extensions an image folder is listed by (lower case); other files are ignored.
IMAGE_EXTENSIONS = frozenset(
    {
        ".bmp",
        ".gif",
        ".jpg",
        ".jpeg",
        ".jfif",
        ".png",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".tif",
        ".tiff",
        ".webp",
        ".ico",
        ".tga",
    }
)
#: Folder names recognised as splits in ``dir/<split>/<class>/<image>``.
SPLIT_NAMES = ("train", "training", "validation", "valid", "val", "dev", "test", "testing", "eval")
#: Images whose smaller side is below this many pixels are skipped as degenerate.
MIN_SIDE = 2
#: Version of the decoding rules; part of the feature-cache key.
DECODE_VERSION = "1"

_LABEL_NAMES = ("label", "labels", "class", "classes", "target", "category")


def _label_column(
    columns: list[str],
    class_labels: list[str],
    image_column: str,
    label_column: str | None,
    missing: str,
) -> str | None:
    """The label column of a table: the one asked for (checked), else the first
    ``ClassLabel`` column, else the first column with a usual label name, else None.
    ``missing`` starts the error raised when the asked-for column is not there."""
    if label_column is None:
        named = [c for c in columns if c.lower() in _LABEL_NAMES and c != image_column]
        found = class_labels or named
        return found[0] if found else None
    if label_column not in columns:
        raise DataError(f"{missing}fix --label-column / label_column= or leave it out.")
    return label_column


@dataclass(frozen=True)
class SkippedItem:
    """An item left out of an :class:`ImageSet`.

    Attributes
    ----------
    id : str
        The item's id (relative path or row index).
    reason : str
        Why it was left out, e.g. ``"zero-byte file"``.
    """

    id: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """``{"id": ..., "reason": ...}``."""
        return {"id": self.id, "reason": self.reason}


class _BadImage(Exception):
    """Internal: an item cannot be decoded; ``args[0]`` is the reason."""


# ----------------------------------------------------------------------------- decoding


def _composite_over_white(img: Any) -> Any:
    """Composite an image with alpha (LA, RGBA, ...) over white -> ``"L"`` or ``"RGB"``.

    ``out = round(colour * a + 255 * (1 - a))`` with ``a = alpha / 255``: PIL's masked
    paste onto a white canvas, which rounds exactly this way for all 256 x 256
    (colour, alpha) pairs (tested), several times faster than float arithmetic on
    large images.  A fully transparent pixel becomes white.
    """
    from PIL import Image

    grey = img.mode in ("LA", "La")
    img = img.convert("LA" if grey else "RGBA")
    out = Image.new("L" if grey else "RGB", img.size, 255 if grey else (255, 255, 255))
    out.paste(img.convert("L" if grey else "RGB"), mask=img.getchannel("A"))
    return out


def _wide_to_l(img: Any) -> Any:
    """16-bit, 32-bit and float greyscale to 8-bit ``"L"`` (scaled, never clipped)."""
    from PIL import Image

    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        out = np.rint(arr.astype(np.float64) / 257.0)
    else:  # "I" or "F": no fixed range, stretch min..max
        arr = arr.astype(np.float64)
        finite = np.isfinite(arr)
        if not finite.any():
            raise _BadImage(f"{img.mode}-mode image holds no finite values")
        lo, hi = float(arr[finite].min()), float(arr[finite].max())
        arr = np.where(finite, arr, lo)
        out = np.zeros_like(arr) if hi == lo else (arr - lo) * (255.0 / (hi - lo))
        out = np.rint(out)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")


def _to_l_or_rgb(img: Any) -> Any:
    """Convert a decoded PIL image of any mode to ``"L"`` or ``"RGB"``."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _wide_to_l(img)
    if mode == "P":
        if "transparency" in img.info:
            return _composite_over_white(img.convert("RGBA"))
        return img.convert("RGB")
    if mode in ("LA", "La"):
        return _composite_over_white(img.convert("LA"))
    if mode in ("RGBA", "RGBa", "PA"):
        return _composite_over_white(img.convert("RGBA"))
    # CMYK, YCbCr, LAB, HSV, RGBX, ...
    return img.convert("RGB")


def _open_checked(data: bytes) -> Any:
    """Open encoded bytes with PIL and run the checks that need only the header."""
    if len(data) == 0:
        raise _BadImage("zero-byte file")
    return _open_header(io.BytesIO(data))


def _open_header(fp: Any) -> Any:
    """``PIL.Image.open`` on a binary file object, then the header-only checks.

    PIL reads only the header here, so a file that is not an image is refused without
    being read whole.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except UnidentifiedImageError:
        raise _BadImage("not an image (PIL cannot identify the file format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _BadImage(_bomb_reason(None)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _BadImage(f"not an image or corrupt header: {exc}") from None
    w, h = img.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and w * h > limit:
        raise _BadImage(_bomb_reason((w, h)))
    if min(w, h) < MIN_SIDE:
        raise _BadImage(f"degenerate {w}x{h} image (smaller side below {MIN_SIDE} px)")
    return img


def _file_kind(mode: int) -> str:
    """What a non-regular file is, for a skip reason."""
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "folder"),
    ):
        if test(mode):
            return name
    return "special file"


def _os_reason(exc: OSError) -> str:
    """``"[Errno 13] Permission denied"`` without the (possibly undecodable) path."""
    if exc.errno is not None and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc)


def _read_image_file(path: str | Path) -> bytes:
    """The bytes of an image file, read only when it is a regular file whose header PIL
    identifies as an image.

    The file is opened non-blocking and checked with ``fstat`` on the open descriptor, so
    a FIFO, a device or a socket (also behind a link) is refused without blocking or
    reading it; a regular file that is not an image is refused from its header.

    Raises
    ------
    _BadImage
        With the reason (``"not a regular file (FIFO)"``, ``"zero-byte file"``, ...).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _BadImage(f"cannot read the file: {_os_reason(exc)}") from None
    with open(fd, "rb") as f:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _BadImage(f"not a regular file ({_file_kind(st.st_mode)})")
            if st.st_size == 0:
                raise _BadImage("zero-byte file")
            _open_header(f)
            f.seek(0)
            return f.read()
        except OSError as exc:
            raise _BadImage(f"cannot read the file: {_os_reason(exc)}") from None


def _bomb_reason(size: tuple[int, int] | None) -> str:
    from PIL import Image

    got = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return (
        f"over PIL's decompression-bomb limit ({got} > {Image.MAX_IMAGE_PIXELS:,}); "
        "raise PIL.Image.MAX_IMAGE_PIXELS to read it"
    )


def decode_image(data: bytes) -> Any:
    """Decode encoded image bytes to an upright ``"L"`` or ``"RGB"`` PIL image.

    Parameters
    ----------
    data : bytes
        The encoded file (PNG, JPEG, ...).

    Returns
    -------
    PIL.Image.Image
        Mode ``"L"`` or ``"RGB"``, EXIF orientation applied (see the module docstring for
        the mode conversions).

    Raises
    ------
    DataError
        When the bytes are empty, not an image, truncated, over PIL's decompression-bomb
        limit or degenerate; the message gives the reason.
    """
    try:
        return _decode(data)
    except _BadImage as exc:
        raise DataError(f"Cannot use image: {exc.args[0]}.") from None


def _decode(data: bytes) -> Any:
    from PIL import ImageOps

    img = _open_checked(data)
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
    except OSError as exc:
        raise _BadImage(f"truncated or corrupt image: {exc}") from None
    except (SyntaxError, ValueError, EOFError) as exc:
        raise _BadImage(f"corrupt image: {exc}") from None
    return _to_l_or_rgb(img)


def _check(data: bytes) -> tuple[int, int]:
    """Cheaply verify that ``data`` decodes; returns the upright ``(h, w)``.

    JPEGs are decoded at reduced scale (``draft``): the whole stream is still read, so
    truncation is caught, at a fraction of the cost.
    """
    img = _open_checked(data)
    w, h = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        orientation = 1
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    try:
        if img.format == "JPEG":
            img.draft(img.mode, (max(1, w // 8), max(1, h // 8)))
        img.load()
    except OSError as exc:
        raise _BadImage(f"truncated or corrupt image: {exc}") from None
    except (SyntaxError, ValueError, EOFError) as exc:
        raise _BadImage(f"corrupt image: {exc}") from None
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        _wide_to_l(img)  # raises for all-NaN float images
    return h, w


def _array_to_pil(arr: np.ndarray) -> Any:
    """(h, w) or (h, w, c) uint8 -> PIL ``"L"`` or ``"RGB"``."""
    from PIL import Image

    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    c = arr.shape[2]
    if c == 1:
        return Image.fromarray(arr[..., 0], "L")
    if c == 3:
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    return _composite_over_white(Image.fromarray(np.ascontiguousarray(arr), "RGBA"))


def _sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


# ----------------------------------------------------------------------------- backends


class _ArrayBackend:
    """Images held in one uint8 array (n, h, w) or (n, h, w, c)."""

    kind = "array"

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def raw(self, j: int) -> np.ndarray:
        return self.images[j]

    def decode(self, j: int) -> Any:
        return _array_to_pil(self.images[j])

    def content_hash(self, j: int) -> str:
        a = np.ascontiguousarray(self.images[j])
        return _sha256(b"dcsi-array-v1", repr(a.shape).encode(), a.tobytes())

    def storage(self) -> list[str]:
        """None: the images are in this process (they travel with a Ray actor)."""
        return []


class _BytesBackend:
    """Encoded images read on demand (files or Hugging Face rows)."""

    kind = "encoded"

    def fetch(self, j: int) -> bytes:  # pragma: no cover - abstract
        """The encoded bytes of item ``j``; raises :class:`_BadImage` with the reason."""
        raise NotImplementedError

    def raw(self, j: int) -> bytes:
        try:
            return self.fetch(j)
        except _BadImage as exc:
            raise DataError(f"Cannot read {self.describe(j)}: {exc.args[0]}.") from None

    def decode(self, j: int) -> Any:
        try:
            return _decode(self.raw(j))
        except _BadImage as exc:
            raise DataError(
                f"Image {self.describe(j)} could not be decoded ({exc.args[0]}) although it "
                "was readable when the source was opened; was it changed? Open the source "
                "again."
            ) from None

    def content_hash(self, j: int) -> str:
        return _sha256(self.raw(j))

    def describe(self, j: int) -> str:
        return f"#{j}"


class _FileBackend(_BytesBackend):
    def __init__(self, root: Path, relpaths: list[str]) -> None:
        self.root = root
        self.relpaths = relpaths
        #: the folder made absolute when opened: where the files are read from, in this
        #: process whatever its working folder becomes, and in a Ray actor
        self.folder = os.path.abspath(root)

    def fetch(self, j: int) -> bytes:
        return _read_image_file(os.path.join(self.folder, self.relpaths[j]))

    def describe(self, j: int) -> str:
        return _text(os.path.join(self.root, self.relpaths[j]))

    def storage(self) -> list[str]:
        """The dataset folder (the files themselves when given one by one)."""
        if os.fspath(self.root) in ("", "."):
            return [os.path.join(self.folder, r) for r in self.relpaths]
        return [self.folder]


class _CellBackend(_BytesBackend):
    """Rows of a table whose image cells are encoded bytes, ``{"bytes", "path"}``
    structs (the Hugging Face ``Image`` feature) or plain binary values.

    A cell with a ``path`` and no ``bytes`` is read from that path, resolved against
    ``base`` (the dataset's folder) when relative, and refused when it leads out of
    every folder in ``roots`` (unless ``roots`` is None).
    """

    base: str | None
    roots: list[str] | None

    def _cell_bytes(self, cell: Any, j: int) -> bytes:
        if cell is None:
            raise _BadImage("missing image (None)")
        if isinstance(cell, (bytes, bytearray)):
            data: Any = bytes(cell)
        else:
            data = cell.get("bytes") if isinstance(cell, dict) else None
        if data is None:
            path = cell.get("path") if isinstance(cell, dict) else None
            if not path:
                raise _BadImage("row holds neither image bytes nor a path")
            return _read_image_file(self._resolve(path))
        if len(data) == 0:
            raise _BadImage("zero-byte file")
        return data

    def _resolve(self, path: str) -> str:
        full = path if os.path.isabs(path) or self.base is None else os.path.join(self.base, path)
        if self.roots is not None:
            real = os.path.realpath(full)
            if not os.path.isabs(full) or not any(_inside(real, r) for r in self.roots):
                raise _BadImage(
                    f"image path {_text(path)} leads outside the dataset folder; pass "
                    "follow_symlinks=True (--follow-symlinks) to read it"
                )
        return full

    def cells(self, start: int, stop: int) -> list[Any]:  # pragma: no cover - abstract
        """The image cells of rows ``start..stop-1``."""
        raise NotImplementedError

    def fetch(self, j: int) -> bytes:
        return self._cell_bytes(self.cells(int(j), int(j) + 1)[0], j)

    def raw_batch(self, start: int, stop: int) -> list[bytes | _BadImage]:
        """The encoded bytes of rows ``start..stop-1`` (or why each cannot be used),
        read in one go."""
        out: list[bytes | _BadImage] = []
        for k, cell in enumerate(self.cells(start, stop)):
            try:
                out.append(self._cell_bytes(cell, start + k))
            except _BadImage as exc:
                out.append(exc)
        return out

    def describe(self, j: int) -> str:
        return f"row {j}"


class _HFBackend(_CellBackend):
    """Rows of a ``datasets.Dataset`` whose image column is read undecoded."""

    def __init__(
        self, dataset: Any, column: str, *, base: str | None = None, roots: list[str] | None = None
    ) -> None:
        self.dataset = dataset
        self.column = column
        self.base = base
        self.roots = roots

    def cells(self, start: int, stop: int) -> list[Any]:
        if stop == start + 1:
            return [self.dataset[start][self.column]]
        return list(self.dataset[start:stop][self.column])

    def storage(self) -> list[str]:
        """The Arrow files the rows are read from (none for an in-memory table)."""
        return [str(f["filename"]) for f in getattr(self.dataset, "cache_files", [])]


class _ParquetBackend(_CellBackend):
    """Rows of one or more Parquet files (one table, in file order), read by position.

    Only the row group holding a row is read (its image column alone, with pyarrow),
    and the last one read is kept, so a batch of neighbouring rows costs one read.
    Nothing but the file paths and the row-group layout is pickled: a Ray actor opens
    the files itself, where they lie on shared storage.

    Parameters
    ----------
    files : list of str
        Absolute paths of the Parquet files, in table order.
    column : str
        The image column.
    group_rows : list of list of int
        Rows of each row group of each file (from the files' footers).
    base, roots
        See :class:`_CellBackend`.
    """

    def __init__(
        self,
        files: list[str],
        column: str,
        group_rows: list[list[int]],
        *,
        base: str | None,
        roots: list[str] | None,
    ) -> None:
        self.files = files
        self.column = column
        self.base = base
        self.roots = roots
        #: per row group: its file, its index in the file; and the first row of each
        self.groups = [(f, g) for f, rows in enumerate(group_rows) for g in range(len(rows))]
        sizes = [r for rows in group_rows for r in rows]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._setup()

    def _setup(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._open: dict[int, Any] = {}
        self._last: tuple[int, list[Any]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_open", "_last")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def _group(self, g: int) -> list[Any]:
        """The image cells of row group ``g`` (kept until another one is read)."""
        with self._lock:
            if self._last is not None and self._last[0] == g:
                return self._last[1]
            f, k = self.groups[g]
            if f not in self._open:
                import pyarrow.parquet as pq

                self._open = {f: pq.ParquetFile(self.files[f])}  # one file open at a time
            table = self._open[f].read_row_group(k, columns=[self.column])
            cells = table.column(0).to_pylist()
            self._last = (g, cells)
            return cells

    def cells(self, start: int, stop: int) -> list[Any]:
        out: list[Any] = []
        g = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop:
            first, end = int(self.starts[g]), int(self.starts[g + 1])
            take = min(stop, end)
            out += self._group(g)[start - first : take - first]
            start, g = take, g + 1
        return out

    def storage(self) -> list[str]:
        """The Parquet files."""
        return list(self.files)


def _inside(real: str, root: str) -> bool:
    """Whether the resolved path ``real`` is ``root`` or lies under it."""
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _text(s: str) -> str:
    r"""``s`` as valid text: bytes of a file name that are not UTF-8 (which Python keeps
    as lone surrogates, PEP 383) become ``\xNN`` escapes: the file ``b"caf\xe9.png"``
    has the id ``"caf\xe9.png"`` (a backslash, then ``xe9``)."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


# ----------------------------------------------------------------------------- ImageSet


class ImageSet:
    """A dataset of images with ids, optional labels and class names, read lazily.

    Build one with :func:`open_source`.  Positions ``0..len-1`` index the usable items;
    items that could not be used are in :attr:`skipped`.

    Attributes
    ----------
    name : str
        A short name (folder name, repo id, sample name).
    source : str
        What was opened (path, ``hf:...``, ``sample:...`` or ``"<array>"``).
    split : str or None
    ids : list of str, length n
        Stable item ids: the path relative to the source folder, or the row index.
    labels : ndarray of shape (n,), dtype int64, or None
        Class ids ``0..K-1``; None for unlabelled data.
    classes : list of str, length K
        Class names in label order (empty when unlabelled).
    skipped : list of SkippedItem
    sizes : ndarray of shape (n, 2), dtype int64
        ``(height, width)`` of each decoded (upright) image.
    dropped_classes : list of str
        Classes of a folder or Hugging Face source left out because no usable image of
        theirs was found (an empty or unreadable class folder, every image skipped, a
        class present in another split only); the other classes keep their order and
        are numbered ``0..K-1``.
    """

    def __init__(
        self,
        *,
        backend: Any,
        positions: np.ndarray,
        ids: list[str],
        labels: np.ndarray | None,
        classes: list[str],
        sizes: np.ndarray,
        name: str,
        source: str,
        split: str | None,
        skipped: list[SkippedItem] | None = None,
        hashes: list[str] | None = None,
        dropped_classes: list[str] | None = None,
    ) -> None:
        self._backend = backend
        self._pos = np.asarray(positions, dtype=np.int64)
        self.ids = list(ids)
        self.labels = labels
        self.classes = list(classes)
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        self.name = name
        self.source = source
        self.split = split
        self.skipped = list(skipped or [])
        self.dropped_classes = list(dropped_classes or [])
        self._hashes = hashes
        self._fingerprint: str | None = None

    # -- basics
    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        lab = f"{len(self.classes)} classes" if self.labels is not None else "unlabelled"
        return (
            f"ImageSet(name={self.name!r}, n={len(self)}, {lab}, split={self.split!r}, "
            f"skipped={len(self.skipped)})"
        )

    @property
    def kind(self) -> str:
        """``"array"`` for in-memory arrays (cheap to decode), ``"encoded"`` otherwise."""
        return self._backend.kind

    def load(self, i: int) -> Any:
        """Decode item ``i`` to a PIL image of mode ``"L"`` or ``"RGB"``."""
        return self._backend.decode(int(self._pos[self._check_index(i)]))

    def _check_index(self, i: int) -> int:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"ImageSet index {i} out of range for {len(self)} items")
        return i

    def storage(self) -> list[str]:
        """Where the images are read from: the dataset folder, the Parquet files, the
        Arrow files of a Hugging Face dataset; empty for images held in memory.  A Ray
        actor checks that it can see these paths before it reads (the engine needs
        them on storage every node mounts at the same path)."""
        return self._backend.storage()

    def content_hash(self, i: int) -> str:
        """SHA-256 (hex) of item ``i``'s encoded bytes (or of its array and shape)."""
        i = self._check_index(i)
        if self._hashes is not None:
            return self._hashes[i]
        return self._backend.content_hash(int(self._pos[i]))

    def content_hashes(self) -> list[str]:
        """:meth:`content_hash` of every item, computed once and kept."""
        if self._hashes is None:
            self._hashes = [self._backend.content_hash(int(p)) for p in self._pos]
        return self._hashes

    def fingerprint(self) -> str:
        """SHA-256 (hex) over the class names and, in order, each item's content hash
        and label: two sources with the same images, labels and order agree."""
        if self._fingerprint is None:
            h = hashlib.sha256(b"dcsi-fingerprint-v1\n")
            h.update(json.dumps(self.classes).encode("utf-8") + b"\n")
            labels = self.labels
            for k, ch in enumerate(self.content_hashes()):
                lab = "-" if labels is None else str(int(labels[k]))
                h.update(f"{ch} {lab}\n".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def class_counts(self) -> list[int]:
        """Number of items per class, in label order (``[]`` when unlabelled)."""
        if self.labels is None:
            return []
        return [int(c) for c in np.bincount(self.labels, minlength=len(self.classes))]

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        """The items at ``indices`` (positions in this set), as a new ImageSet."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset indices out of range for {len(self)} items")
        idx = np.where(idx < 0, idx + len(self), idx)
        return ImageSet(
            backend=self._backend,
            positions=self._pos[idx],
            ids=[self.ids[k] for k in idx],
            labels=None if self.labels is None else self.labels[idx],
            classes=self.classes,
            sizes=self.sizes[idx],
            name=self.name,
            source=self.source,
            split=self.split,
            skipped=self.skipped,
            hashes=None if self._hashes is None else [self._hashes[k] for k in idx],
            dropped_classes=self.dropped_classes,
        )

    # -- sizes
    def native_size(self) -> tuple[int, int]:
        """``(h, w)`` shared by all images, else the median height and width."""
        if len(self) == 0:
            raise DataError(f"{self.source}: the dataset has no usable images.")
        if np.all(self.sizes == self.sizes[0]):
            return int(self.sizes[0, 0]), int(self.sizes[0, 1])
        med = np.median(self.sizes, axis=0)
        return round(med[0]), round(med[1])

    def working_size(self, size: int | tuple[int, int] | None = None) -> tuple[int, int]:
        """``(h, w)`` at which the pixel-space stages compare the images.

        ``size`` given: that size (an int means square).  ``None``: the
        :meth:`native_size` (the median height and width when sizes differ), scaled down
        so that its longer side is at most :data:`MAX_WORKING_SIDE` (32) pixels, keeping
        its aspect; each image is then stretched to it (see :meth:`iter_arrays`).  The
        working size therefore never grows with the images: a folder of 2,000-px photos
        costs what a folder of 32-px thumbnails costs, while 28-px Fashion-MNIST, 8-px
        digits and 32-px CIFAR stay at their native size.
        """
        if size is not None:
            return self.resolve_size(size)
        return bounded_size(self.native_size())

    def typical_side(self) -> int:
        """Median over images of the longer side, in pixels."""
        if len(self) == 0:
            raise DataError(f"{self.source}: the dataset has no usable images.")
        return round(float(np.median(self.sizes.max(axis=1))))

    # -- arrays
    def iter_arrays(
        self,
        *,
        size: int | tuple[int, int] | None = None,
        mode: str = "L",
        batch_size: int = 256,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield batches of decoded images as uint8 arrays.

        Parameters
        ----------
        size : int or (h, w) or None, default=None
            Output size; an int means square.  None: :meth:`working_size` (the native
            or median size, its longer side capped at :data:`MAX_WORKING_SIDE`).
            Images are stretched to exactly this size (bilinear, antialiased; aspect
            not kept: the same picture at any size or aspect becomes the same array,
            which the near-duplicate search wants).
        mode : {"L", "RGB"}, default="L"
        batch_size : int, default=256
        indices : sequence of int, default=None
            Positions to read (default: all, in order).

        Yields
        ------
        indices : ndarray of shape (b,), int64
        batch : ndarray of shape (b, h, w) for "L" or (b, h, w, 3) for "RGB", uint8
        """
        if mode not in ("L", "RGB"):
            raise InvalidParameterError(
                f"The 'mode' parameter of iter_arrays must be one of 'L', 'RGB'. "
                f"Got {mode!r} instead."
            )
        batch_size = check_int(batch_size, "batch_size", "iter_arrays", min_value=1)
        hw = self.resolve_size(size)
        idx = (
            np.arange(len(self))
            if indices is None
            else np.asarray(indices, dtype=np.int64).reshape(-1)
        )
        fast = self._fast_array(hw, mode)
        if fast is not None:
            for start in range(0, len(idx), batch_size):
                part = idx[start : start + batch_size]
                yield part, fast(self._pos[part])
            return
        from concurrent.futures import ThreadPoolExecutor

        def one(i: int) -> np.ndarray:
            return image_to_array(self.load(int(i)), hw, mode)

        # PIL decodes, composites and resizes without the GIL: threads overlap them
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(idx), batch_size):
                part = idx[start : start + batch_size]
                yield part, np.stack(list(pool.map(one, part)))

    def to_array(
        self,
        *,
        size: int | tuple[int, int] | None = None,
        mode: str = "L",
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """All (or ``indices``) images as one uint8 array; see :meth:`iter_arrays`.

        Returns
        -------
        ndarray of shape (n, h, w) or (n, h, w, 3), uint8
        """
        hw = self.resolve_size(size)
        n = len(self) if indices is None else len(np.asarray(indices).reshape(-1))
        check_memory(
            float(n) * hw[0] * hw[1] * (3 if mode == "RGB" else 1),
            f"Decoding {n} images at {hw[0]} x {hw[1]} pixels",
            "use a smaller working size (--size on the command line, size= in Python; "
            f"the default caps the longer side at {MAX_WORKING_SIDE} px).",
        )
        out = np.empty((n, *hw) + ((3,) if mode == "RGB" else ()), dtype=np.uint8)
        k = 0
        desc = f"Decoding {self.name} at {hw[0]}x{hw[1]}"
        with progress(desc=desc, total=n, unit="img") as bar:
            for _, batch in self.iter_arrays(size=hw, mode=mode, indices=indices):
                out[k : k + len(batch)] = batch
                k += len(batch)
                bar.update(len(batch))
        return out

    def resolve_size(self, size: int | tuple[int, int] | None) -> tuple[int, int]:
        """``(h, w)`` of a ``size`` argument: None -> :meth:`working_size`, an int -> square."""
        if size is None:
            return self.working_size()
        if isinstance(size, (tuple, list)) and len(size) == 2:
            h = check_int(size[0], "size", "iter_arrays", min_value=1)
            w = check_int(size[1], "size", "iter_arrays", min_value=1)
            return h, w
        s = check_int(size, "size", "iter_arrays", min_value=1)
        return s, s

    def _fast_array(self, hw: tuple[int, int], mode: str) -> Any:
        """A direct slicing reader when an in-memory array needs no resize/convert."""
        if self._backend.kind != "array":
            return None
        images = self._backend.images
        if tuple(images.shape[1:3]) != hw:
            return None
        if mode == "L" and images.ndim == 3:
            return lambda pos: images[pos]
        if mode == "RGB" and images.ndim == 4 and images.shape[3] == 3:
            return lambda pos: images[pos]
        if mode == "RGB" and images.ndim == 3:
            return lambda pos: np.repeat(images[pos][..., None], 3, axis=3)
        return None

    # -- card
    def to_dict(self) -> dict[str, Any]:
        """The card's ``dataset`` block: name, source, split, fingerprint, n_images,
        classes, class_counts, dropped_classes (plain JSON-ready Python)."""
        return {
            "name": self.name,
            "source": self.source,
            "split": self.split,
            "fingerprint": self.fingerprint(),
            "n_images": len(self),
            "classes": list(self.classes),
            "class_counts": self.class_counts(),
            "dropped_classes": list(self.dropped_classes),
        }


#: Longest side, in pixels, of the default working size of the pixel-space stages
#: (wavelet rows, aligned stage, SSIM): :meth:`ImageSet.working_size`.
MAX_WORKING_SIDE = 32


def bounded_size(hw: tuple[int, int], max_side: int = MAX_WORKING_SIDE) -> tuple[int, int]:
    """``hw`` scaled down, aspect kept, so that its longer side is at most ``max_side``.

    Parameters
    ----------
    hw : (int, int)
        Height and width in pixels.
    max_side : int, default=MAX_WORKING_SIDE

    Returns
    -------
    (int, int)
        ``hw`` itself when it fits; else both sides times ``max_side / max(hw)``,
        rounded, at least 1.

    Examples
    --------
    >>> bounded_size((28, 28)), bounded_size((213, 221)), bounded_size((2000, 1000))
    ((28, 28), (31, 32), (32, 16))
    """
    h, w = int(hw[0]), int(hw[1])
    if max(h, w) <= max_side:
        return h, w
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def image_to_array(img: Any, hw: tuple[int, int], mode: str) -> np.ndarray:
    """A decoded PIL image as a uint8 array of size ``hw``, as :meth:`ImageSet.iter_arrays`
    makes it (``mode`` conversion, then a bilinear resize when the size differs).

    Parameters
    ----------
    img : PIL.Image.Image
    hw : (int, int)
        Output height and width.
    mode : {"L", "RGB"}

    Returns
    -------
    ndarray of shape (h, w) or (h, w, 3), uint8
    """
    from PIL import Image

    if img.mode != mode:
        img = img.convert(mode)
    if (img.size[1], img.size[0]) != hw:
        img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


# ----------------------------------------------------------------------------- open


def open_source(
    source: Any,
    *,
    labels: Any = None,
    classes: Sequence[str] | None = None,
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
    follow_symlinks: bool = False,
) -> ImageSet:
    """Open an image dataset as an :class:`ImageSet`.

    Parameters
    ----------
    source : str, path, ndarray or ImageSet
        An image folder, a saved Hugging Face dataset folder, ``"hf:repo[:config]"``,
        ``"sample:digits"`` / ``"sample:fashion-mnist"``, an ndarray of shape
        (n, h, w) or (n, h, w, c) with c in {1, 3, 4} and dtype uint8, or an ImageSet.
    labels : array-like of shape (n,), default=None
        Labels of an in-memory array (int class ids, or strings mapped to ids in sorted
        order).  Only for array sources.
    classes : sequence of str, default=None
        Class names of an in-memory array, in label order (default: the ids as strings,
        or the sorted label strings).
    split : str, default=None
        Split of a folder with split folders or of a Hugging Face dataset (default: the
        only split, else ``"train"``).
    image_column, label_column : str, default=None
        Columns of a Hugging Face dataset (default: the first ``Image`` column; the first
        ``ClassLabel`` column, else a column named ``label``/``labels``/``class``/
        ``target``/``category``, else unlabelled).
    max_per_class : int, default=None
        Keep at most this many items per class (all items when unlabelled), drawn at
        random with ``seed``, in their original order.
    seed : int, default=0
    follow_symlinks : bool, default=False
        Read what lies outside the dataset folder: symbolic links (to files or class
        folders) whose target is outside it, and image paths of a Hugging Face dataset
        that lead out of its folder (out of the Hugging Face cache for ``"hf:"``).  By
        default these are skipped and listed in :attr:`ImageSet.skipped`.  Links that
        stay inside the folder are always followed.

    Returns
    -------
    ImageSet

    Raises
    ------
    DataError
        Nothing usable: the path does not exist, the dataset is empty, a column is
        missing, or every image was skipped.
    InvalidParameterError
        A parameter has a wrong value.
    """
    if isinstance(source, ImageSet):
        return source
    if max_per_class is not None:
        max_per_class = check_int(max_per_class, "max_per_class", "open_source", min_value=1)
    seed = check_int(seed, "seed", "open_source", min_value=0)
    if not isinstance(follow_symlinks, bool):
        raise InvalidParameterError(
            "The 'follow_symlinks' parameter of open_source must be a bool. "
            f"Got {follow_symlinks!r} instead."
        )
    if labels is not None and not isinstance(source, np.ndarray):
        raise InvalidParameterError(
            "The 'labels' parameter of open_source is only for in-memory arrays; a "
            f"{type(source).__name__} source brings its own labels."
        )
    if isinstance(source, np.ndarray):
        _no_columns(image_column, label_column, "an in-memory array")
        ims = _open_array(
            source, labels=labels, classes=classes, name="array", source_str="<array>", split=split
        )
    elif isinstance(source, (str, os.PathLike)):
        s = os.fspath(source)
        if classes is not None:
            raise InvalidParameterError(
                "The 'classes' parameter of open_source is only for in-memory arrays."
            )
        # the options of the sources that are tables (Hugging Face, Parquet)
        table: dict[str, Any] = {
            "split": split,
            "image_column": image_column,
            "label_column": label_column,
            "max_per_class": max_per_class,
            "seed": seed,
            "follow_symlinks": follow_symlinks,
        }
        if s.startswith("sample:"):
            _no_columns(image_column, label_column, "a sample dataset")
            from dcsi.samples import load_sample

            sample = load_sample(s[len("sample:") :], split)
            ims = _open_array(
                sample.images,
                labels=sample.labels,
                classes=sample.classes,
                name=sample.name,
                source_str=s,
                split=sample.split,
            )
        elif s.startswith("hf:"):
            return _open_hf_hub(s, **table)
        else:
            path = Path(s).expanduser()
            if not path.exists():
                raise DataError(
                    f"{s}: no such file or folder. Give an image folder, a folder written "
                    "by datasets' save_to_disk, Parquet files, 'hf:<repo_id>' or "
                    "'sample:digits'."
                )
            parquet = _parquet_files(path)
            if parquet:
                return _open_parquet(path, parquet, **table)
            if not path.is_dir():
                raise DataError(
                    f"{s} is a file; give the folder that holds the images "
                    "(dir/<class>/<image>) or a .parquet file."
                )
            if _is_saved_hf(path):
                return _open_hf_saved(path, **table)
            _no_columns(image_column, label_column, "an image folder")
            return _open_folder(
                path,
                split=split,
                max_per_class=max_per_class,
                seed=seed,
                follow_symlinks=follow_symlinks,
            )
    else:
        raise InvalidParameterError(
            "The 'source' parameter of open_source must be a path, 'hf:<repo_id>', "
            "'sample:<name>', a uint8 ndarray or an ImageSet. "
            f"Got {type(source).__name__} instead."
        )
    if max_per_class is not None:
        ims = ims.subset(_per_class_sample(ims.labels, len(ims), max_per_class, seed))
    return ims


def _no_columns(image_column: str | None, label_column: str | None, what: str) -> None:
    for name, value in (("image_column", image_column), ("label_column", label_column)):
        if value is not None:
            raise InvalidParameterError(
                f"The {name!r} parameter of open_source applies to Hugging Face datasets "
                f"only; {what} has no columns. Got {value!r}."
            )


def _per_class_sample(labels: np.ndarray | None, n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    groups = (
        [np.arange(n)]
        if labels is None
        else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    )
    keep = [g if len(g) <= k else rng.choice(g, size=k, replace=False) for g in groups]
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)


def _labels_from_values(values: Sequence[Any], what: str) -> tuple[np.ndarray, list[str]]:
    """Map raw label values to ids 0..K-1 and class names.

    Integers >= 0 are kept as ids (classes named ``"0"..str(max)``); strings are mapped
    to their rank in sorted order.
    """
    if any(v is None for v in values):
        raise DataError(
            f"{what} has missing (None) labels; drop those rows or open the "
            "data without a label column."
        )
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        if arr.size and arr.min() < 0:
            raise DataError(
                f"{what} has negative labels (e.g. {int(arr.min())}); labels "
                "must be class ids >= 0."
            )
        k = int(arr.max()) + 1 if arr.size else 0
        return arr.astype(np.int64), [str(i) for i in range(k)]
    if arr.dtype.kind in "USO":
        strs = np.asarray([str(v) for v in values])
        uniq = np.unique(strs)
        return np.searchsorted(uniq, strs).astype(np.int64), [str(v) for v in uniq]
    raise DataError(f"{what} must hold integer or string labels; got dtype {arr.dtype}.")


def _open_array(
    images: np.ndarray,
    *,
    labels: Any,
    classes: Sequence[str] | None,
    name: str,
    source_str: str,
    split: str | None,
) -> ImageSet:
    if images.dtype != np.uint8:
        raise InvalidParameterError(
            "The 'source' array of open_source must have dtype uint8 (0..255). Got "
            f"{images.dtype} instead; convert it, e.g. np.clip(a, 0, 255).astype(np.uint8)."
        )
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
        raise InvalidParameterError(
            "The 'source' array of open_source must have shape (n, h, w) or (n, h, w, c) "
            f"with c in 1, 3, 4. Got shape {images.shape} instead."
        )
    n = images.shape[0]
    if n == 0:
        raise DataError("The image array is empty (0 images); pass at least one image.")
    h, w = images.shape[1:3]
    if min(h, w) < MIN_SIDE:
        raise DataError(
            f"The images are {h}x{w} pixels; dcsi needs at least {MIN_SIDE}x{MIN_SIDE}."
        )
    lab: np.ndarray | None = None
    cls: list[str] = []
    if labels is not None:
        raw = np.asarray(labels)
        if raw.ndim != 1 or raw.shape[0] != n:
            raise InvalidParameterError(
                f"The 'labels' parameter of open_source must be a 1-D array of length {n} "
                f"(one label per image). Got shape {raw.shape} instead."
            )
        if raw.dtype.kind in "iu":
            if n and raw.min() < 0:
                raise InvalidParameterError(
                    "The 'labels' parameter of open_source must hold class ids >= 0. "
                    f"Got {int(raw.min())} instead."
                )
            lab = raw.astype(np.int64)
            k = int(lab.max()) + 1
            cls = [str(i) for i in range(k)]
        else:
            lab, cls = _labels_from_values(list(raw), "The 'labels' parameter")
        if classes is not None:
            cls = [str(c) for c in classes]
            if len(cls) <= int(lab.max()):
                raise InvalidParameterError(
                    f"The 'classes' parameter of open_source names {len(cls)} classes but "
                    f"the labels go up to {int(lab.max())}."
                )
    elif classes is not None:
        raise InvalidParameterError(
            "The 'classes' parameter of open_source needs 'labels' as well."
        )
    dropped: list[str] = []
    if lab is not None:
        lab, cls, dropped = _drop_empty_classes(lab, cls, name)
    return ImageSet(
        backend=_ArrayBackend(images),
        positions=np.arange(n),
        ids=[str(i) for i in range(n)],
        labels=lab,
        classes=cls,
        sizes=np.tile([h, w], (n, 1)),
        name=name,
        source=source_str,
        split=split,
        dropped_classes=dropped,
    )


def _scan(
    backend: _BytesBackend,
    positions: np.ndarray,
    ids: list[str],
    *,
    desc: str,
) -> tuple[np.ndarray, list[str], np.ndarray, list[SkippedItem]]:
    """Read, hash and check every item once.

    Returns the kept mask (n,), the content hashes of kept items, their sizes (m, 2)
    and the skipped items.
    """
    from concurrent.futures import ThreadPoolExecutor

    n = len(positions)
    keep = np.zeros(n, dtype=bool)
    hashes: list[str] = []
    sizes: list[tuple[int, int]] = []
    skipped: list[SkippedItem] = []

    def check_one(data: bytes | _BadImage | int) -> tuple[str, tuple[int, int]] | str:
        if isinstance(data, (int, np.integer)):  # read here, in the pool (I/O overlaps)
            data = _read_or_bad(backend, int(data))
        if isinstance(data, _BadImage):
            return data.args[0]
        try:
            hw = _check(data)
        except _BadImage as exc:
            return exc.args[0]
        return _sha256(data), hw

    chunk = 256
    workers = max(1, min(4, os.cpu_count() or 1))
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        progress(desc=desc, total=n, unit="img") as bar,
    ):
        for start in range(0, n, chunk):
            part = positions[start : start + chunk]
            if (
                isinstance(backend, _CellBackend)
                and len(part)
                and part[-1] - part[0] == len(part) - 1
            ):
                raws: list[Any] = backend.raw_batch(int(part[0]), int(part[-1]) + 1)
            else:
                raws = [int(p) for p in part]
            for k, res in enumerate(pool.map(check_one, raws)):
                i = start + k
                if isinstance(res, str):
                    skipped.append(SkippedItem(ids[i], res))
                else:
                    keep[i] = True
                    hashes.append(res[0])
                    sizes.append(res[1])
                bar.update(1)
    return keep, hashes, np.asarray(sizes, dtype=np.int64).reshape(-1, 2), skipped


def _read_or_bad(backend: _BytesBackend, j: int) -> bytes | _BadImage:
    try:
        return backend.fetch(j)
    except _BadImage as exc:
        return exc


#: How many skipped items and dropped classes a warning names before "... and N more".
_NAMED_IN_WARNINGS = 5


def _warn_skipped(where: str, skipped: list[SkippedItem], n_images: int) -> None:
    """One warning: how many items were skipped, why, the first few, and where the full
    list is."""
    folders = [s for s in skipped if s.id.endswith("/")]
    files = [s for s in skipped if not s.id.endswith("/")]
    parts = []
    if files:
        reasons: dict[str, int] = {}
        for s in files:
            key = s.reason.split(":")[0].split("(")[0].strip()
            reasons[key] = reasons.get(key, 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in sorted(reasons.items()))
        parts.append(f"{len(files)} of {n_images} images ({summary})")
    if folders:
        parts.append(f"{len(folders)} folder{'s' if len(folders) > 1 else ''}")
    named = "; ".join(f"{s.id} ({s.reason})" for s in skipped[:_NAMED_IN_WARNINGS])
    more = (
        f"; and {len(skipped) - _NAMED_IN_WARNINGS} more"
        if len(skipped) > _NAMED_IN_WARNINGS
        else ""
    )
    logger.warning(
        "%s: skipped %s: %s%s. The full list is ImageSet.skipped, written by "
        "`dcsi analyze` to dcsi.json under dataset.skipped.",
        where,
        " and ".join(parts),
        named,
        more,
    )


def _named(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMED_IN_WARNINGS])
    extra = len(names) - _NAMED_IN_WARNINGS
    return shown + (f" and {extra} more" if extra > 0 else "")


def _drop_empty_classes(
    labels: np.ndarray, classes: list[str], where: str
) -> tuple[np.ndarray, list[str], list[str]]:
    """Drop the classes without a usable image, renumbering the others ``0..K'-1`` in
    their order; one warning names the dropped classes.

    Returns the new labels, the kept class names and the dropped ones.
    """
    counts = (
        np.bincount(labels, minlength=len(classes))
        if len(labels)
        else np.zeros(len(classes), dtype=np.int64)
    )
    kept = counts > 0
    if kept.all():
        return labels, classes, []
    dropped = [c for c, k in zip(classes, kept) if not k]
    logger.warning(
        "%s: dropped %d class(es) with no usable image: %s. They are left out of the "
        "analysis and listed in ImageSet.dropped_classes (dcsi.json: "
        "dataset.dropped_classes).",
        where,
        len(dropped),
        _named(dropped),
    )
    new_id = np.cumsum(kept) - 1
    return new_id[labels].astype(np.int64), [c for c, k in zip(classes, kept) if k], dropped


def _finish_encoded(
    backend: _BytesBackend,
    *,
    ids: list[str],
    labels: np.ndarray | None,
    classes: list[str],
    name: str,
    source_str: str,
    split: str | None,
    max_per_class: int | None,
    seed: int,
    where: str,
    listing_skipped: list[SkippedItem] | None = None,
) -> ImageSet:
    """Subsample, scan, drop skipped items and empty classes, and build the ImageSet of
    an encoded source.  ``listing_skipped`` are the items left out while listing a
    folder (unreadable folders, special files, links out of the root)."""
    early = list(listing_skipped or [])
    positions = np.arange(len(ids))
    if max_per_class is not None:
        positions = _per_class_sample(labels, len(ids), max_per_class, seed)
    if len(positions) == 0:
        if early:
            first = early[0]
            raise DataError(
                f"{where}: no image could be read ({len(early)} item(s) skipped, e.g. "
                f"{first.id}: {first.reason}); check that the files are readable images."
            )
        raise DataError(f"{where}: the dataset is empty (no images found). {_LAYOUT_HINT}")
    sel_ids = [ids[p] for p in positions]
    keep, hashes, sizes, skipped = _scan(backend, positions, sel_ids, desc=f"Reading {name}")
    skipped = early + skipped
    if skipped:
        n_files = len(positions) + sum(not s.id.endswith("/") for s in early)
        _warn_skipped(where, skipped, n_files)
    if not keep.any():
        first = next((s for s in skipped if not s.id.endswith("/")), skipped[0])
        raise DataError(
            f"{where}: all {len(positions)} images were skipped (e.g. {first.id}: "
            f"{first.reason}); check that the files are readable images."
        )
    kept = positions[keep]
    kept_labels = None if labels is None else labels[kept]
    dropped: list[str] = []
    if kept_labels is not None:
        kept_labels, classes, dropped = _drop_empty_classes(kept_labels, classes, where)
    return ImageSet(
        backend=backend,
        positions=kept,
        ids=[ids[p] for p in kept],
        labels=kept_labels,
        classes=classes,
        sizes=sizes,
        name=name,
        source=source_str,
        split=split,
        skipped=skipped,
        hashes=hashes,
        dropped_classes=dropped,
    )


_LAYOUT_HINT = (
    "Expected dir/<class>/<image> or dir/<split>/<class>/<image> with image "
    "files ("
    + ", ".join(sorted(e.lstrip(".") for e in ("png", "jpg", "jpeg", "bmp", "webp")))
    + ", ...)."
)


# -- image folders

#: Files that mark a folder as dcsi output (``--out``): such folders are never data.
OUTPUT_MARKERS = frozenset({"dcsi.json", "redundancy.json", "leakage.json"})


class _FolderLister:
    """Lists an image folder: only regular files, only inside the dataset folder (unless
    ``follow_symlinks``), each sub-folder once, and every entry left out recorded.

    Paths are kept as the file system gives them (``str`` with PEP 383 surrogates for
    bytes that are not UTF-8), relative to the dataset folder with ``/``; ids shown to
    users are made from them with :func:`_text`.
    """

    def __init__(self, top: Path, *, follow_symlinks: bool) -> None:
        self.top = os.fspath(top)
        self.real_top = os.path.realpath(self.top)
        self.follow = follow_symlinks
        self.skipped: list[SkippedItem] = []
        self.output_dirs: list[str] = []
        self.nested: list[str] = []
        self._seen: dict[tuple[int, int], str] = {}
        self.first_visit("")

    def path(self, rel: str) -> str:
        return os.path.join(self.top, rel) if rel else self.top

    def skip(self, rel: str, reason: str) -> None:
        self.skipped.append(SkippedItem(_text(rel), reason))

    def entries(self, rel: str, *, record: bool = True) -> tuple[list[tuple[str, str]], set[str]]:
        """``([(name, "dir" | "file"), ...], names)`` of the visible entries of folder
        ``rel``: sub-folders and image files, sorted by name; ``names`` holds every
        visible name (for the output markers).  An unreadable folder gives no entries and
        is recorded (``record``) as skipped; ``rel == ""`` raises :class:`DataError`."""
        try:
            with os.scandir(self.path(rel)) as it:
                found = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as exc:
            if not rel:
                raise DataError(
                    f"{_text(self.top)}: cannot list the folder "
                    f"({_os_reason(exc)}); check its permissions."
                ) from None
            if record:
                self.skip(rel + "/", f"cannot list the folder: {_os_reason(exc)}")
            return [], set()
        out = []
        for e in found:
            kind = self._kind(e, f"{rel}/{e.name}" if rel else e.name, record)
            if kind is not None:
                out.append((e.name, kind))
        return out, {e.name for e in found}

    def _kind(self, e: os.DirEntry, rel: str, record: bool) -> str | None:
        """``"dir"``, ``"file"`` (an image file) or None (ignored or skipped)."""
        image = os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        try:
            if not e.is_symlink():
                if e.is_dir(follow_symlinks=False):
                    return "dir"
                if e.is_file(follow_symlinks=False):
                    return "file" if image else None
                mode = e.stat(follow_symlinks=False).st_mode
            else:
                try:
                    mode = os.stat(e.path).st_mode
                except OSError as exc:
                    if image and record:
                        self.skip(rel, f"broken symbolic link: {_os_reason(exc)}")
                    return None
                target = os.path.realpath(e.path)
                if not self.follow and not _inside(target, self.real_top):
                    if record and (image or stat.S_ISDIR(mode)):
                        self.skip(
                            rel + ("/" if stat.S_ISDIR(mode) else ""),
                            f"symbolic link to {_text(target)}, outside the dataset "
                            "folder; pass follow_symlinks=True (--follow-symlinks) "
                            "to read it",
                        )
                    return None
        except OSError as exc:
            if image and record:
                self.skip(rel, f"cannot read the file: {_os_reason(exc)}")
            return None
        if stat.S_ISDIR(mode):
            return "dir"
        if stat.S_ISREG(mode):
            return "file" if image else None
        if image and record:
            self.skip(rel, f"not a regular file ({_file_kind(mode)})")
        return None

    def is_output(self, rel: str, names: set[str]) -> bool:
        """Whether folder ``rel`` is dcsi output (recorded once in :attr:`output_dirs`)."""
        if names & OUTPUT_MARKERS:
            if rel not in self.output_dirs:
                self.output_dirs.append(rel)
            return True
        return False

    def first_visit(self, rel: str) -> bool:
        """False, and the folder recorded as skipped, when it was listed already through
        another path (a symbolic link); this also stops link loops."""
        try:
            st = os.stat(self.path(rel))
        except OSError:
            return True  # entries() records the error
        key = (st.st_dev, st.st_ino)
        if key in self._seen:
            first = self._seen[key]
            same = f"{_text(first)}/" if first else "the dataset folder"
            self.skip(rel + "/", f"same folder as {same} (a symbolic link); read once")
            return False
        self._seen[key] = rel
        return True

    def class_dirs(self, rel: str) -> list[str]:
        """Names of the class folders in ``rel`` (split or dataset folder), dcsi output
        folders left out."""
        entries, _ = self.entries(rel, record=False)
        out = []
        for name, kind in entries:
            if kind == "dir":
                sub = f"{rel}/{name}" if rel else name
                names = {
                    m for m in OUTPUT_MARKERS if os.path.isfile(os.path.join(self.path(sub), m))
                }
                if not self.is_output(sub, names):
                    out.append(name)
        return out

    def images(self, rel: str) -> list[str]:
        """Image files under class folder ``rel``, its sub-folders merged (files first,
        then each sub-folder, by name)."""
        if not self.first_visit(rel):
            return []
        entries, names = self.entries(rel)
        if self.is_output(rel, names):
            return []
        out = [f"{rel}/{name}" for name, kind in entries if kind == "file"]
        for name, kind in entries:
            if kind == "dir":
                sub = f"{rel}/{name}"
                found = self.images(sub)
                if sub not in self.output_dirs:
                    self.nested.append(sub)
                out += found
        return out


def _open_folder(
    path: Path,
    *,
    split: str | None,
    max_per_class: int | None,
    seed: int,
    follow_symlinks: bool = False,
) -> ImageSet:
    where = _text(str(path))
    lister = _FolderLister(path, follow_symlinks=follow_symlinks)
    top, _ = lister.entries("")
    subdirs = [name for name, kind in top if kind == "dir"]
    split_dirs = [
        d
        for d in subdirs
        if d.lower() in SPLIT_NAMES
        and any(k == "dir" for _, k in lister.entries(d, record=False)[0])
    ]
    if split_dirs:
        names = [_text(d) for d in split_dirs]
        split = _choose_split(names, split, where)
        root_rel = split_dirs[names.index(split)]
        # class names: the union over splits (classes missing from this split are then
        # dropped as empty, and named in a warning)
        classes = sorted({c for d in split_dirs for c in lister.class_dirs(d)})
        here = set(lister.class_dirs(root_rel))
    else:
        if split is not None:
            raise DataError(
                f"{where} has no split folders ({', '.join(SPLIT_NAMES[:3])}, ...); "
                "leave --split out."
            )
        root_rel = ""
        classes = lister.class_dirs("")
        here = set(classes)
    relpaths: list[str] = []
    labels_list: list[int] = []
    for k, c in enumerate(classes):
        if c in here:
            found = lister.images(f"{root_rel}/{c}" if root_rel else c)
            relpaths += found
            labels_list += [k] * len(found)
    root_entries = lister.entries(root_rel)[0] if root_rel else top
    loose = [(f"{root_rel}/{n}" if root_rel else n) for n, k in root_entries if k == "file"]
    if lister.output_dirs:
        logger.warning(
            "%s: not reading %d dcsi output folder(s) (%s): they hold dcsi's "
            "results (%s), not data.",
            where,
            len(lister.output_dirs),
            _named([_text(d) for d in lister.output_dirs]),
            "/".join(sorted(OUTPUT_MARKERS)),
        )
    labels: np.ndarray | None
    if not relpaths and loose:
        # a plain folder of images: unlabelled
        relpaths = loose
        labels, classes = None, []
    else:
        if loose:
            logger.warning(
                "%s: ignoring %d image(s) outside the class folders (e.g. %s).",
                where,
                len(loose),
                _text(loose[0]),
            )
        if lister.nested:
            logger.warning(
                "%s: merged %d sub-folder(s) into their class folder (e.g. %s); "
                "classes are the top-level folders only.",
                where,
                len(lister.nested),
                _text(lister.nested[0]),
            )
        labels = np.asarray(labels_list, dtype=np.int64)
    ids = [_text(r) for r in relpaths]
    if len(set(ids)) < len(ids):  # "a\\xe9" written out and an undecodable b"a\xe9"
        seen: set[str] = set()
        keep: list[int] = []
        for k, (r, i) in enumerate(zip(relpaths, ids)):
            if i in seen:
                lister.skip(
                    r,
                    "its id collides with another file's (a name that is not "
                    "UTF-8 and one holding the same \\x escape); rename one",
                )
            else:
                seen.add(i)
                keep.append(k)
        relpaths = [relpaths[k] for k in keep]
        if labels is not None:
            labels = labels[keep]
        ids = [ids[k] for k in keep]
    return _finish_encoded(
        _FileBackend(path, relpaths),
        ids=ids,
        labels=labels,
        classes=[_text(c) for c in classes],
        name=_text(path.resolve().name),
        source_str=_text(str(path)),
        split=split,
        max_per_class=max_per_class,
        seed=seed,
        where=where,
        listing_skipped=lister.skipped,
    )


# -- Hugging Face datasets


def _is_saved_hf(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _choose_split(names: list[str], split: str | None, where: str) -> str:
    """The split asked for, else ``"train"``, else the only one, among ``names``."""
    if split is None:
        split = "train" if "train" in names else (names[0] if len(names) == 1 else None)
        if split is None:
            raise DataError(
                f"{where} has several splits ({', '.join(names)}); choose one with "
                "--split / split=."
            )
    if split not in names:
        raise DataError(f"{where} has no split {split!r}; available splits: {', '.join(names)}.")
    return split


def _pick_split(dd: Any, split: str | None, where: str) -> tuple[Any, str | None]:
    """A ``Dataset`` from a ``Dataset`` or ``DatasetDict``, and its split name."""
    import datasets

    if isinstance(dd, (datasets.DatasetDict, dict)):
        names = list(dd.keys())
        if not names:
            raise DataError(f"{where}: the dataset has no splits.")
        split = _choose_split(names, split, where)
        return dd[split], split
    if split is not None:
        actual = str(dd.split) if getattr(dd, "split", None) is not None else None
        if actual is not None and actual != split:
            raise DataError(
                f"{where} holds the single split {actual!r}, not {split!r}; leave --split out."
            )
    return dd, (str(dd.split) if getattr(dd, "split", None) is not None else split)


def _open_hf_saved(path: Path, *, follow_symlinks: bool, **kw: Any) -> ImageSet:
    datasets = require("datasets", "Reading a saved Hugging Face dataset", "dcsi[hf]")
    try:
        dd = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot load the saved Hugging Face dataset ({exc}).") from None
    real = os.path.realpath(path)
    return _from_hf(
        dd,
        where=_text(str(path)),
        name=_text(path.resolve().name),
        source_str=_text(str(path)),
        base=real,
        roots=None if follow_symlinks else [real],
        **kw,
    )


def _open_hf_hub(source: str, *, follow_symlinks: bool, **kw: Any) -> ImageSet:
    datasets = require("datasets", "Reading 'hf:' datasets", "dcsi[hf]")
    spec = source[len("hf:") :]
    if not spec:
        raise InvalidParameterError(
            "The 'source' parameter of open_source must name a dataset after 'hf:', e.g. "
            "'hf:fashion_mnist' or 'hf:user/repo:config'. Got 'hf:' instead."
        )
    repo, _, config = spec.partition(":")
    try:
        dd = datasets.load_dataset(repo, config or None)
    except Exception as exc:
        raise DataError(
            f"{source}: datasets.load_dataset({repo!r}"
            f"{', ' + repr(config) if config else ''}) failed: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            "Offline, the dataset must already be in the Hugging Face cache "
            "(set HF_DATASETS_OFFLINE=1), or save it with save_to_disk and pass the folder."
        ) from None
    roots = None
    if not follow_symlinks:  # image paths of a hub dataset point into the caches
        import huggingface_hub.constants

        roots = [
            os.path.realpath(datasets.config.HF_DATASETS_CACHE),
            os.path.realpath(huggingface_hub.constants.HF_HUB_CACHE),
        ]
    return _from_hf(dd, where=source, name=spec, source_str=source, base=None, roots=roots, **kw)


def _from_hf(
    dd: Any,
    *,
    where: str,
    name: str,
    source_str: str,
    split: str | None,
    image_column: str | None,
    label_column: str | None,
    max_per_class: int | None,
    seed: int,
    base: str | None,
    roots: list[str] | None,
) -> ImageSet:
    import datasets

    ds, split = _pick_split(dd, split, where)
    features = ds.features
    columns = list(features.keys())
    listing = ", ".join(f"{c} ({type(features[c]).__name__})" for c in columns)
    if image_column is None:
        found = [c for c in columns if isinstance(features[c], datasets.Image)]
        if not found:
            raise DataError(
                f"{where}: no image column (columns: {listing}); "
                "name it with --image-column / image_column=."
            )
        image_column = found[0]
    elif image_column not in features:
        raise DataError(
            f"{where}: no column {image_column!r} (columns: {listing}); "
            "fix --image-column / image_column=."
        )
    elif not isinstance(features[image_column], datasets.Image):
        raise DataError(
            f"{where}: column {image_column!r} is "
            f"{type(features[image_column]).__name__}, not an Image column; "
            "cast it with ds.cast_column(name, datasets.Image())."
        )
    label_column = _label_column(
        columns,
        [c for c in columns if isinstance(features[c], datasets.ClassLabel)],
        image_column,
        label_column,
        f"{where}: no column {label_column!r} (columns: {listing}); ",
    )
    labels: np.ndarray | None = None
    classes: list[str] = []
    if label_column is not None:
        feat = features[label_column]
        values = ds[label_column]
        if isinstance(feat, datasets.ClassLabel):
            if any(v is None or v < 0 for v in values):
                raise DataError(
                    f"{where}: column {label_column!r} has missing labels "
                    "(None or -1); drop those rows first."
                )
            labels = np.asarray(values, dtype=np.int64)
            classes = [str(c) for c in feat.names]
        else:
            labels, classes = _labels_from_values(values, f"{where}: column {label_column!r}")
    ds = ds.cast_column(image_column, datasets.Image(decode=False))
    ids = [str(i) for i in range(len(ds))]
    return _finish_encoded(
        _HFBackend(ds, image_column, base=base, roots=roots),
        ids=ids,
        labels=labels,
        classes=classes,
        name=name,
        source_str=source_str,
        split=split,
        max_per_class=max_per_class,
        seed=seed,
        where=where,
    )


# -- Parquet files


def _parquet_files(path: Path) -> list[Path]:
    """The Parquet files a path names, sorted; empty when it is no Parquet source.

    A ``.parquet`` file; a folder holding ``.parquet`` files and no sub-folder (hidden
    ones and dcsi output folders aside); or a folder whose ``data/`` sub-folder holds them, at any depth (a
    Hugging Face Hub repository's layout).  An image folder keeps its meaning, also
    with a ``metadata.parquet`` beside its class folders.
    """
    if path.is_file():
        return [path] if path.suffix.lower() == ".parquet" else []
    try:
        entries = [e for e in path.iterdir() if not e.name.startswith(".")]
    except OSError:
        return []
    top = [e for e in entries if e.suffix.lower() == ".parquet" and e.is_file()]
    folders = [
        e for e in entries if e.is_dir() and not any((e / m).is_file() for m in OUTPUT_MARKERS)
    ]
    if top and not folders:  # dcsi output folders (--out inside the dataset) aside
        return sorted(top)
    data = path / "data"
    if not top and data.is_dir():
        found = [f for f in data.rglob("*") if f.suffix.lower() == ".parquet" and f.is_file()]
        return sorted(f for f in found if not any(q.startswith(".") for q in f.parts))
    return []


def _parquet_split(rel: Path) -> str | None:
    """The split a Parquet file belongs to by its name: a split folder on its path
    (``data/train/0.parquet``) or a split before the first ``-``, ``_`` or ``.`` of
    its name (``train-00000-of-00002.parquet``, ``test.parquet``)."""
    for part in rel.parent.parts:
        if part.lower() in SPLIT_NAMES:
            return part
    head = rel.name
    for sep in "-_.":
        head = head.split(sep, 1)[0]
    return head if head.lower() in SPLIT_NAMES else None


def _pick_parquet_split(
    files: list[Path], root: Path, split: str | None, where: str
) -> tuple[list[Path], str | None]:
    """The files of the chosen split (the only one, else ``"train"``) and its name."""
    named = [
        _parquet_split(f.relative_to(root)) if f != root else _parquet_split(Path(f.name))
        for f in files
    ]
    names = list(dict.fromkeys(n for n in named if n is not None))
    if not names:
        if split is not None:
            raise DataError(
                f"{where}: no Parquet file is named after a split ({', '.join(SPLIT_NAMES[:3])}, "
                "...); leave --split out."
            )
        return files, None
    split = _choose_split(names, split, where)
    return [f for f, n in zip(files, named) if n == split], split


def _parquet_schema(files: list[Path], where: str) -> tuple[Any, list[list[int]]]:
    """The files' common Arrow schema and the rows of each row group of each file."""
    import pyarrow.parquet as pq

    schema = None
    group_rows: list[list[int]] = []
    for f in files:
        try:
            meta = pq.ParquetFile(f).metadata
            here = meta.schema.to_arrow_schema()
        except (OSError, ValueError) as exc:
            raise DataError(
                f"{_text(str(f))}: cannot read the Parquet file ({exc}); check that it is a "
                "whole Parquet file."
            ) from None
        if schema is None:
            schema = here
        elif not here.equals(schema, check_metadata=False):
            raise DataError(
                f"{where}: {_text(f.name)} has other columns than {_text(files[0].name)} "
                f"({here.names} vs {schema.names}); give files of one table."
            )
        group_rows.append([meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
    return schema, group_rows


def _parquet_columns(
    schema: Any, image_column: str | None, label_column: str | None, where: str
) -> tuple[str, str | None, list[str] | None]:
    """The image column, the label column and its class names when the Hugging Face
    metadata of the files declares it a ``ClassLabel``."""
    import pyarrow as pa

    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = dict(json.loads(raw)["info"]["features"]) if raw else {}
    except (ValueError, KeyError, TypeError):
        features = {}

    def kind(c: str) -> str:
        return (
            str((features.get(c) or {}).get("_type", ""))
            if isinstance(features.get(c), dict)
            else ""
        )

    def holds_images(c: str) -> bool:
        t = schema.field(c).type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return True
        return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0

    columns = list(schema.names)
    listing = ", ".join(f"{c} ({schema.field(c).type})" for c in columns)
    if image_column is None:
        found = [c for c in columns if kind(c) == "Image"] or [
            c for c in columns if holds_images(c)
        ]
        if not found:
            raise DataError(
                f"{where}: no image column (columns: {listing}); name it with "
                "--image-column / image_column=."
            )
        image_column = found[0]
    elif image_column not in columns:
        raise DataError(
            f"{where}: no column {image_column!r} (columns: {listing}); "
            "fix --image-column / image_column=."
        )
    elif not holds_images(image_column):
        raise DataError(
            f"{where}: column {image_column!r} is {schema.field(image_column).type}, not "
            "encoded images (binary, or a struct with a 'bytes' field); name the image "
            "column with --image-column / image_column=."
        )
    label_column = _label_column(
        columns,
        [c for c in columns if kind(c) == "ClassLabel"],
        image_column,
        label_column,
        f"{where}: no column {label_column!r} (columns: {listing}); ",
    )
    names = None
    if label_column is not None and kind(label_column) == "ClassLabel":
        names = [str(c) for c in features[label_column].get("names", [])]
    return image_column, label_column, names


def _open_parquet(
    path: Path,
    files: list[Path],
    *,
    split: str | None,
    image_column: str | None,
    label_column: str | None,
    max_per_class: int | None,
    seed: int,
    follow_symlinks: bool,
) -> ImageSet:
    """A Parquet file or folder of them as one table (see :func:`_parquet_files`)."""
    pq = require("pyarrow.parquet", "Reading Parquet sources", "dcsi[hf]")
    where = _text(str(path))
    files, split = _pick_parquet_split(files, path, split, where)
    schema, group_rows = _parquet_schema(files, where)
    image_column, label_column, names = _parquet_columns(schema, image_column, label_column, where)
    n = sum(sum(rows) for rows in group_rows)
    labels: np.ndarray | None = None
    classes: list[str] = []
    if label_column is not None:
        values = [
            v for f in files for v in pq.read_table(f, columns=[label_column]).column(0).to_pylist()
        ]
        what = f"{where}: column {label_column!r}"
        if names is not None:
            if any(v is None or v < 0 or v >= len(names) for v in values):
                raise DataError(
                    f"{what} has missing or unknown labels (None, -1 or past the "
                    f"{len(names)} class names); drop those rows first."
                )
            labels, classes = np.asarray(values, dtype=np.int64).reshape(-1), names
        else:
            labels, classes = _labels_from_values(values, what)
    base = os.path.realpath(path if path.is_dir() else path.parent)
    backend = _ParquetBackend(
        [os.path.abspath(f) for f in files],
        image_column,
        group_rows,
        base=base,
        roots=None if follow_symlinks else [base],
    )
    return _finish_encoded(
        backend,
        ids=[str(i) for i in range(n)],
        labels=labels,
        classes=classes,
        name=_text(path.resolve().stem if path.is_file() else path.resolve().name),
        source_str=where,
        split=split,
        max_per_class=max_per_class,
        seed=seed,
        where=where,
    )


def open_files(paths: Sequence[str | os.PathLike[str]], *, name: str = "queries") -> ImageSet:
    """Open image files given one by one (the query images of ``dcsi search``).

    Unlike a folder, nothing is skipped: each file was asked for.

    Parameters
    ----------
    paths : sequence of path-like
        Image files; their ids are the paths as given.
    name : str, default="queries"

    Returns
    -------
    ImageSet
        Unlabelled, in the order given.

    Raises
    ------
    DataError
        No paths, a path that is not a file, or a file that is not a readable image.
    """
    strs = [os.fspath(p) for p in paths]
    if not strs:
        raise DataError("No image files given; name at least one image file.")
    for s in strs:
        if not Path(s).expanduser().is_file():
            raise DataError(f"{_text(s)}: no such image file.")
    ids = [_text(s) for s in strs]
    backend = _FileBackend(Path(), [str(Path(s).expanduser()) for s in strs])
    positions = np.arange(len(strs))
    _, hashes, sizes, skipped = _scan(backend, positions, ids, desc=f"Reading {name}")
    if skipped:
        raise DataError(f"{skipped[0].id}: {skipped[0].reason}; give readable image files.")
    return ImageSet(
        backend=backend,
        positions=positions,
        ids=ids,
        labels=None,
        classes=[],
        sizes=sizes,
        name=name,
        source="<files>",
        split=None,
        hashes=hashes,
    )
