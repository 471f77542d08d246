"""A tiny GGUF header reader: scalar metadata without loading the model.

The router needs a model's context window before it decides to load anything, and
loading a GGUF (even a small one) maps the whole file and builds a context. The header
is a short sequence of typed key/value pairs at the start of the file; we read it with
``struct`` and stop as soon as we have the keys asked for. Arrays (the tokenizer's
vocabulary, tens of thousands of strings) are skipped, not decoded.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (versions 2 and 3;
version 1 used 32-bit lengths and predates every GGUF a current tool writes).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

__all__ = ["GGUFError", "context_length", "read_metadata"]

_MAGIC = b"GGUF"

# value type → struct format for the fixed-size scalars
_SCALARS: dict[int, str] = {
    0: "<B",  # uint8
    1: "<b",  # int8
    2: "<H",  # uint16
    3: "<h",  # int16
    4: "<I",  # uint32
    5: "<i",  # int32
    6: "<f",  # float32
    7: "<?",  # bool
    10: "<Q",  # uint64
    11: "<q",  # int64
    12: "<d",  # float64
}
_STRING = 8
_ARRAY = 9
# a sane bound: a key or a scalar string this long means a corrupt file, not a model
_MAX_STRING = 16 * 1024 * 1024

Scalar = int | float | bool | str


class GGUFError(ValueError):
    """The file is not a GGUF we can read (wrong magic, unsupported version, truncated)."""


class _Reader:
    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f = f
        self.path = path

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise GGUFError(f"{self.path}: truncated GGUF header")
        return data

    def unpack(self, fmt: str) -> int | float | bool:
        value: int | float | bool = struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]
        return value

    def string(self) -> str:
        n = int(self.unpack("<Q"))
        if n > _MAX_STRING:
            raise GGUFError(f"{self.path}: implausible string length {n}")
        return self.read(n).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = int(self.unpack("<Q"))
        if n > _MAX_STRING:
            raise GGUFError(f"{self.path}: implausible string length {n}")
        self.f.seek(n, 1)

    def value(self, vtype: int) -> Scalar | None:
        """A scalar value, or None for an array (skipped)."""
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            self.skip_array()
            return None
        raise GGUFError(f"{self.path}: unknown GGUF value type {vtype}")

    def skip_array(self) -> None:
        etype = int(self.unpack("<I"))
        count = int(self.unpack("<Q"))
        if etype in _SCALARS:
            self.f.seek(struct.calcsize(_SCALARS[etype]) * count, 1)
        elif etype == _STRING:
            for _ in range(count):
                self.skip_string()
        elif etype == _ARRAY:
            for _ in range(count):
                self.skip_array()
        else:
            raise GGUFError(f"{self.path}: unknown GGUF array element type {etype}")


def read_metadata(path: Path, keys: Iterable[str] | None = None) -> dict[str, Scalar]:
    """The scalar metadata of a GGUF file (arrays are skipped).

    With ``keys``, reading stops once all of them were seen: the interesting keys come
    before the tokenizer's arrays in every file llama.cpp's converters write.
    """
    wanted = set(keys) if keys is not None else None
    out: dict[str, Scalar] = {}
    try:
        with path.open("rb") as f:
            r = _Reader(f, path)
            if r.read(4) != _MAGIC:
                raise GGUFError(f"{path}: not a GGUF file (bad magic)")
            version = int(r.unpack("<I"))
            if version not in (2, 3):
                raise GGUFError(f"{path}: unsupported GGUF version {version}")
            r.unpack("<Q")  # tensor count: not needed
            kv_count = int(r.unpack("<Q"))
            for _ in range(kv_count):
                key = r.string()
                value = r.value(int(r.unpack("<I")))
                if value is not None and (wanted is None or key in wanted):
                    out[key] = value
                    if wanted is not None and wanted <= out.keys():
                        break
    except OSError as exc:
        raise GGUFError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return out


def context_length(path: Path) -> int | None:
    """The trained context window (``<arch>.context_length``), or None if absent."""
    arch = read_metadata(path, ["general.architecture"]).get("general.architecture")
    if not isinstance(arch, str):
        return None
    key = f"{arch}.context_length"
    value = read_metadata(path, [key]).get(key)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
