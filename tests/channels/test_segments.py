"""SMS segment counting: a pure function, no database, no network."""

from __future__ import annotations

import pytest

from channels.segments import (
    GSM7,
    GSM7_BASIC,
    GSM7_EXTENSION,
    UCS2,
    count_segments,
    is_gsm7,
)


def test_the_gsm7_tables_have_the_standard_sizes():
    assert len(GSM7_BASIC) == 127  # 128 codes, less the escape
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    ("text", "count", "encoding", "units"),
    [
        ("", 0, GSM7, 0),
        ("Hi", 1, GSM7, 2),
        ("a" * 160, 1, GSM7, 160),
        ("a" * 161, 2, GSM7, 161),
        ("a" * 306, 2, GSM7, 306),  # 2 x 153
        ("a" * 307, 3, GSM7, 307),
        ("a" * 1530, 10, GSM7, 1530),
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¡ÄÖÑÜ§¿äöñüà", 1, GSM7, 41),
        ("Line one\nLine two\r\n", 1, GSM7, 19),
        # The extension table costs two septets a character.
        ("{}", 1, GSM7, 4),
        ("€" * 80, 1, GSM7, 160),
        ("€" * 81, 2, GSM7, 162),
        ("a" * 159 + "€", 2, GSM7, 161),
        # One character outside GSM-7 turns the whole text into UCS-2.
        ("Café ç", 1, UCS2, 6),
        ("ç" * 70, 1, UCS2, 70),
        ("ç" * 71, 2, UCS2, 71),
        ("ç" * 134, 2, UCS2, 134),  # 2 x 67
        ("ç" * 135, 3, UCS2, 135),
        ("“smart quotes”", 1, UCS2, 14),
        ("Привет", 1, UCS2, 6),
        # Astral characters (emoji) are surrogate pairs: two UTF-16 units.
        ("😀" * 35, 1, UCS2, 70),
        ("😀" * 36, 2, UCS2, 72),
    ],
)
def test_count_segments(text, count, encoding, units):
    result = count_segments(text)
    assert (result.count, result.encoding, result.units) == (count, encoding, units)


def test_an_escape_pair_is_never_split_between_parts():
    # 152 septets, then "€" (2): it does not fit the first part's 153 whole.
    text = "a" * 152 + "€" + "a" * 152
    assert count_segments(text).units == 306  # would fit 2 x 153 if split
    assert count_segments(text).count == 3


def test_a_surrogate_pair_is_never_split_between_parts():
    text = "ж" * 66 + "😀" + "ж" * 66
    assert count_segments(text).units == 134  # would fit 2 x 67 if split
    assert count_segments(text).count == 3


def test_the_characters_that_forced_ucs2_are_named():
    result = count_segments("Order “A1” shipped ✓")
    assert result.non_gsm == ("“", "”", "✓")
    assert result.as_record() == {
        "segments": 1,
        "encoding": UCS2,
        "units": 20,
        "non_gsm": "“”✓",
    }
    assert "non_gsm" not in count_segments("plain").as_record()


def test_per_segment_capacity():
    assert count_segments("a").per_segment == 160
    assert count_segments("a" * 200).per_segment == 153
    assert count_segments("ç").per_segment == 70
    assert count_segments("ç" * 100).per_segment == 67


def test_is_gsm7():
    assert is_gsm7("Hello [world] ~ 10€")
    assert not is_gsm7("Hello ç")
    assert not is_gsm7("\x1b")  # a bare escape is not text
