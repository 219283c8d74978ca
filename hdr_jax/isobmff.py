"""The boxes of still-image ISO base media files (HEIF/HEIC, AVIF), read and written by hand.

pillow-heif decodes a HEIF's primary picture and its auxiliary pictures, and Pillow an AVIF's
primary picture; nothing installed hands out the rest of a file: a derived item's data (an ISO
21496-1 'tmap'), a hidden picture, the properties of an item other than the primary. This module
reads the 'meta' box into :class:`Item`\\ s (ISO/IEC 14496-12 'iinf', 'iref', 'iloc', 'idat';
ISO/IEC 23008-12 'pitm', 'iprp') and writes chosen items back as a file of their own
(:func:`write_file`), so that any picture item can be decoded as the primary picture of a file
that holds only it. Reading never raises on malformed boxes: what does not parse is left out.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["Item", "Meta", "aux_type", "boxes", "read_meta", "transforms", "apply_transforms",
           "write_file"]


@dataclasses.dataclass(frozen=True)
class Item:
    """One item of a file's 'meta' box."""

    id: int
    type: bytes  # four characters: 'hvc1', 'av01', 'grid', 'tmap', 'Exif', ...
    hidden: bool  # flag 1 of its 'infe' box: not a picture to show on its own
    properties: tuple[tuple[bytes, bytes], ...]  # (box type, body), in association order
    refs: dict[bytes, tuple[int, ...]]  # reference type ('dimg', 'auxl', ...) -> item IDs
    data: bytes | None  # None when its location does not resolve


@dataclasses.dataclass(frozen=True)
class Meta:
    primary: int | None  # the 'pitm' item ID
    items: dict[int, Item]


def boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, end) of each box in data[start:end] (ISO/IEC 14496-12: a 32-bit size,
    the type, a 64-bit size when the size is 1, the rest of the span when it is 0); stops at the
    first box that does not fit."""
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        body = start + 8
        if size == 1:
            if body + 8 > end:
                return
            (size,) = struct.unpack_from(">Q", data, body)
            body += 8
        elif size == 0:
            size = end - start
        if size < body - start or start + size > end:
            return
        yield kind, body, start + size
        start += size


def _number(data: bytes, at: int, size: int) -> int:
    if at + size > len(data):
        raise IndexError("past the end of the box")
    return int.from_bytes(data[at: at + size], "big")


def _associations(data: bytes, start: int, end: int) -> dict[int, list[int]]:
    """{item ID: 1-based indices into 'ipco'} of an ItemPropertyAssociation box's body (16-bit
    item IDs in version 0, 32-bit otherwise; 7-bit indices, or 15-bit with flag 1, each after
    an 'essential' bit)."""
    if end - start < 8:
        return {}
    version, flags = data[start], _number(data, start + 1, 3)
    count = _number(data, start + 4, 4)
    id_size, width = (2 if version == 0 else 4), (2 if flags & 1 else 1)
    mask = (1 << (8 * width - 1)) - 1
    out, pos = {}, start + 8
    for _ in range(count):
        if pos + id_size + 1 > end:
            break
        item, n = _number(data, pos, id_size), data[pos + id_size]
        pos += id_size + 1
        if pos + n * width > end:
            break
        out[item] = [_number(data, pos + j * width, width) & mask for j in range(n)]
        pos += n * width
    return out


def _locations(data: bytes, b: int, e: int) -> dict[int, tuple[int, list[tuple[int, int]]]]:
    """{item ID: (construction method, [(offset, length), ...])} of an ItemLocationBox's body
    (versions 0-2; offsets include the item's base offset; a length of 0 runs to the end)."""
    version = data[b]
    offset_size, length_size = data[b + 4] >> 4, data[b + 4] & 15
    base_size, index_size = data[b + 5] >> 4, (data[b + 5] & 15 if version in (1, 2) else 0)
    pos, count_size = b + 6, (2 if version < 2 else 4)
    count = _number(data, pos, count_size)
    pos += count_size
    out = {}
    for _ in range(count):
        id_size = 2 if version < 2 else 4
        item = _number(data, pos, id_size)
        pos += id_size
        method = 0
        if version in (1, 2):
            method = _number(data, pos, 2) & 15
            pos += 2
        pos += 2  # data reference index
        base = _number(data, pos, base_size)
        pos += base_size
        n = _number(data, pos, 2)
        pos += 2
        spans = []
        for _ in range(n):
            pos += index_size
            off = _number(data, pos, offset_size)
            length = _number(data, pos + offset_size, length_size)
            pos += offset_size + length_size
            spans.append((base + off, length))
        if pos > e:
            break
        out[item] = (method, spans)
    return out


def read_meta(data: bytes, *, with_data: bool = True) -> Meta:
    """The items of a file's top-level 'meta' box (Meta(None, {}) without one); without
    ``with_data`` every item's data is None (no copy of the file's pictures). A box that does
    not parse is skipped, so a cut or corrupted file gives fewer items, never an exception."""
    meta = next(((b, e) for k, b, e in boxes(data, 0, len(data)) if k == b"meta"), None)
    if meta is None:
        return Meta(None, {})
    primary, types, hidden, refs = None, {}, set(), {}
    locations, idat, props, assoc = {}, (0, 0), [], {}
    for kind, b, e in boxes(data, meta[0] + 4, meta[1]):  # 'meta' is a full box
        try:
            version = data[b] if e > b else 0
            if kind == b"pitm":
                id_size = 2 if version == 0 else 4
                if e - b >= 4 + id_size:
                    primary = _number(data, b + 4, id_size)
            elif kind == b"iinf":
                for k2, b2, e2 in boxes(data, b + (6 if version == 0 else 8), e):
                    if k2 == b"infe" and data[b2] >= 2:
                        size = 2 if data[b2] == 2 else 4
                        item = _number(data, b2 + 4, size)
                        types[item] = data[b2 + 6 + size: b2 + 10 + size]
                        if data[b2 + 3] & 1:
                            hidden.add(item)
            elif kind == b"iref":
                size = 2 if version == 0 else 4
                for k2, b2, e2 in boxes(data, b + 4, e):
                    n = _number(data, b2 + size, 2)
                    to = tuple(_number(data, b2 + size + 2 + j * size, size) for j in range(n))
                    refs.setdefault(_number(data, b2, size), {})[k2] = to
            elif kind == b"iloc":
                locations = _locations(data, b, e)
            elif kind == b"idat":
                idat = (b, e)
            elif kind == b"iprp":
                for k2, b2, e2 in boxes(data, b, e):
                    if k2 == b"ipco":
                        props = [(k3, data[b3:e3]) for k3, b3, e3 in boxes(data, b2, e2)]
                    elif k2 == b"ipma":
                        assoc.update(_associations(data, b2, e2))
        except (IndexError, struct.error):
            continue
    items = {}
    for item in set(types) | set(assoc) | set(locations):
        content = None
        if with_data and item in locations:
            method, spans = locations[item]
            origin, stop = {0: (0, len(data)), 1: idat}.get(method, (None, None))
            if origin is not None:
                parts = [data[origin + o: (origin + o + n) if n else stop] for o, n in spans]
                if all(len(x) == n for x, (o, n) in zip(parts, spans) if n):
                    content = b"".join(parts)
        items[item] = Item(item, types.get(item, b""), item in hidden,
                           tuple(props[i - 1] for i in assoc.get(item, []) if 0 < i <= len(props)),
                           refs.get(item, {}), content)
    return Meta(primary, items)


def aux_type(item: Item) -> str | None:
    """The type an item's 'auxC' property names (a URN; what follows its terminating zero byte
    is the type's own subtype data), None without one."""
    body = next((b for k, b in item.properties if k == b"auxC"), None)
    return None if body is None else body[4:].split(b"\0", 1)[0].decode("utf-8", "replace")


def transforms(item: Item) -> list[tuple[bytes, int]]:
    """An item's rotation and mirroring, in the order they apply: ('irot', quarter turns
    anticlockwise) and ('imir', 0: top and bottom swap, 1: left and right swap, as libheif and
    libavif read the field). A clean aperture ('clap', a crop) is not among them: the
    specification puts it before both, so a decoder left the crop and given neither turns
    nothing."""
    out = []
    for kind, body in item.properties:
        if kind in (b"irot", b"imir") and body:
            out.append((kind, body[0] & (3 if kind == b"irot" else 1)))
    return out


def apply_transforms(a: np.ndarray, steps: Sequence[tuple[bytes, int]]) -> np.ndarray:
    """``a`` (rows, columns, ...) turned by :func:`transforms`' steps, as a HEIF decoder turns
    the picture they belong to."""
    for kind, value in steps:
        a = np.rot90(a, value) if kind == b"irot" else np.flip(a, value)
    return np.ascontiguousarray(a)


#: Properties written as essential (a reader that does not know one must not show the item):
#: the codecs' configurations and the transformative properties, as HEIF and AVIF require.
ESSENTIAL = frozenset({b"hvcC", b"av1C", b"clap", b"irot", b"imir", b"lsel", b"a1op"})


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def write_file(items: Sequence[Item], brand: bytes) -> bytes:
    """A file holding ``items`` (the first one its primary item, shown; the others as they are,
    with their 'dimg' references among them), numbered 1, 2, ... in that order, their data in one
    'mdat' box; brand b'heic' or b'avif'. Every item needs its data."""
    ids = {item.id: n for n, item in enumerate(items, 1)}
    props, assoc = [], []
    unique = {prop for item in items for prop in item.properties}
    wide = len(unique) > 127  # 15-bit property indices (flag 1)
    for item in items:
        assoc.append([])
        for prop in item.properties:
            if prop not in props:
                props.append(prop)
            essential = (0x8000 if wide else 0x80) if prop[0] in ESSENTIAL else 0
            assoc[-1].append((props.index(prop) + 1) | essential)
    ipma = b"".join(struct.pack(">HB", n, len(a)) + b"".join(
        struct.pack(">H", i) if wide else bytes([i]) for i in a) for n, a in enumerate(assoc, 1))
    iprp = _box(b"iprp", _box(b"ipco", b"".join(_box(k, body) for k, body in props))
                + _box(b"ipma", bytes([0, 0, 0, int(wide)]) + struct.pack(">I", len(items))
                       + ipma))
    infe = b"".join(_box(b"infe", bytes([2, 0, 0, int(n > 1 and item.hidden)])
                         + struct.pack(">HH", n, 0) + item.type + b"\0")
                    for n, item in enumerate(items, 1))
    refs = b"".join(_box(b"dimg", struct.pack(">HH", n, len(to)) + b"".join(
        struct.pack(">H", ids[t]) for t in to))
        for n, item in enumerate(items, 1)
        if (to := item.refs.get(b"dimg")) and all(t in ids for t in to))
    ftyp = _box(b"ftyp", brand + bytes(4) + b"mif1" + brand
                + (b"miaf" if brand == b"avif" else b""))
    hdlr = _box(b"hdlr", bytes(8) + b"pict" + bytes(13))

    def meta(at: int) -> bytes:
        iloc, pos = b"", at
        for n, item in enumerate(items, 1):
            iloc += struct.pack(">HHHII", n, 0, 1, pos, len(item.data))
            pos += len(item.data)
        return _box(b"meta", bytes(4) + hdlr + _box(b"pitm", bytes(4) + struct.pack(">H", 1))
                    + _box(b"iinf", bytes(4) + struct.pack(">H", len(items)) + infe)
                    + (_box(b"iref", bytes(4) + refs) if refs else b"") + iprp
                    + _box(b"iloc", bytes([0, 0, 0, 0, 0x44, 0]) + struct.pack(">H", len(items))
                           + iloc))

    start = len(ftyp) + len(meta(0)) + 8
    return ftyp + meta(start) + _box(b"mdat", b"".join(item.data for item in items))
