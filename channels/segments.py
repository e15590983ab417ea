"""How many SMS segments a text costs, and in which encoding.

A pure function, no I/O: the SMS channel calls it before sending to refuse
texts over its cap, and records the answer with the attempt.

The rules (3GPP TS 23.038 / 23.040):

* a text made only of GSM 03.38 characters is sent as **GSM-7**: 160 septets
  fit one message; a longer text is split into parts of 153 septets (each
  part carries a 7-septet header). Characters of the extension table
  (``^ { } \\ [ ~ ] | €`` and form feed) are an escape plus a character, so they
  count twice, and a pair is never split across two parts;
* any other character switches the whole text to **UCS-2** (UTF-16): 70 code
  units in one message, 67 per part; characters outside the Basic
  Multilingual Plane (most emoji) are surrogate pairs, count twice and are
  never split.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7 = "GSM-7"
UCS2 = "UCS-2"

# The GSM 03.38 default alphabet, in code order (0x1B, the escape, left out).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each is sent as ESC + character, two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

# (units in a single message, units per part of a multi-part message)
LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}


@dataclass(frozen=True, slots=True)
class Segments:
    """What a text costs: ``count`` messages in ``encoding``."""

    count: int
    encoding: str  # GSM7 or UCS2
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    # Up to five characters that forced UCS-2, to tell ops why a text is costly.
    non_gsm: tuple[str, ...] = ()

    @property
    def per_segment(self) -> int:
        single, multi = LIMITS[self.encoding]
        return single if self.count <= 1 else multi

    def as_record(self) -> dict[str, object]:
        record: dict[str, object] = {
            "segments": self.count,
            "encoding": self.encoding,
            "units": self.units,
        }
        if self.non_gsm:
            record["non_gsm"] = "".join(self.non_gsm)
        return record


def is_gsm7(text: str) -> bool:
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text)


def count_segments(text: str) -> Segments:
    """The number of SMS parts ``text`` is sent as (0 for an empty text)."""
    non_gsm = _non_gsm(text)
    if not non_gsm:
        encoding = GSM7
        units = [2 if char in GSM7_EXTENSION else 1 for char in text]
    else:
        encoding = UCS2
        units = [len(char.encode("utf-16-le")) // 2 for char in text]
    single, multi = LIMITS[encoding]
    return Segments(
        count=_pack(units, single, multi),
        encoding=encoding,
        units=sum(units),
        non_gsm=non_gsm,
    )


def _non_gsm(text: str, limit: int = 5) -> tuple[str, ...]:
    found: list[str] = []
    for char in text:
        if char not in GSM7_BASIC and char not in GSM7_EXTENSION and char not in found:
            found.append(char)
            if len(found) == limit:
                break
    return tuple(found)


def _pack(units: list[int], single: int, multi: int) -> int:
    """Parts needed when characters of ``units`` width are packed in order and a
    character is never split between two parts."""
    total = sum(units)
    if total == 0:
        return 0
    if total <= single:
        return 1
    parts, used = 1, 0
    for width in units:
        if used + width > multi:
            parts += 1
            used = 0
        used += width
    return parts
