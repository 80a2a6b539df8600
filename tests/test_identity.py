"""Barcode identity parsing: GS1 element strings, GTIN/EAN/UPC, IMEI, RMA. Pure, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.identity import GS, Identity, gtin_check_digit, luhn_valid, parse_identity

# GS1 General Specifications example GTIN and a well-known valid IMEI.
GTIN13 = "9501101530003"
GTIN14 = "0" + GTIN13
IMEI = "490154203237518"


@pytest.mark.parametrize(
    ("body", "digit"),
    [
        ("950110153000", 3),  # EAN-13 9501101530003
        ("03600029145", 2),  # UPC-A 036000291452
        ("9638507", 4),  # EAN-8 96385074
        ("0950110153000", 3),  # GTIN-14 of the EAN-13 above
        ("00614141123456789", 0),  # SSCC 006141411234567890
    ],
)
def test_gtin_check_digit(body: str, digit: int) -> None:
    assert gtin_check_digit(body) == digit


def test_gtin_check_digit_rejects_non_digits() -> None:
    with pytest.raises(ValueError):
        gtin_check_digit("12a4")


@pytest.mark.parametrize(
    ("digits", "valid"),
    [(IMEI, True), ("490154203237517", False), ("79927398713", True), ("79927398710", False),
     ("", False), ("4901542032375l8", False), ("0", False)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


def test_gs1_128_full_element_string() -> None:
    text = f"01{GTIN14}17271231" + "10LOT-42" + GS + "21SN0001234"
    ident = parse_identity(text, "GS1-128")
    assert ident == Identity(
        barcode=text,
        symbology="GS1-128",
        gtin=GTIN14,
        serial="SN0001234",
        imei=None,
        rma=None,
        lot="LOT-42",
        expiry="2027-12-31",
        problems=(),
        elements=(("01", GTIN14), ("17", "271231"), ("10", "LOT-42"), ("21", "SN0001234")),
    )


def test_gs1_with_aim_prefix_and_leading_fnc1_left_on() -> None:
    for text in (f"]C101{GTIN14}21ABC", f"]d2{GS}01{GTIN14}21ABC", f"]Q301{GTIN14}21ABC"):
        ident = parse_identity(text, "Unknown")
        assert (ident.gtin, ident.serial, ident.problems) == (GTIN14, "ABC", ()), text


def test_gs1_separator_after_fixed_length_ai_is_tolerated() -> None:
    ident = parse_identity(f"01{GTIN14}{GS}21XYZ{GS}", "GS1 DataMatrix")
    assert (ident.gtin, ident.serial, ident.problems) == (GTIN14, "XYZ", ())


def test_gs1_day_zero_means_end_of_month() -> None:
    assert parse_identity(f"01{GTIN14}17280200", "GS1-128").expiry == "2028-02-29"
    assert parse_identity(f"01{GTIN14}17270200", "GS1-128").expiry == "2027-02-28"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"01{GTIN14[:-1]}4" + "21SER1", "GTIN 09501101530004 has an invalid check digit"),
        (f"01{GTIN14}17271332", "month 13"),
        (f"01{GTIN14}17270231", "day 31"),
        (f"01{GTIN14}21" + "S" * 21, "21 characters long, at most 20"),
        (f"01{GTIN14}7777ABC", "unknown GS1 application identifier"),
        (f"01{GTIN14[:8]}", "needs 14 characters"),
        (f"01{GTIN14}21", "GS1 AI (21) is empty"),
        (f"01{GTIN14}10LOT\u00e9", "outside GS1 set 82"),
        ("00106141411234567891", "SSCC 106141411234567891 has an invalid check digit"),
    ],
)
def test_gs1_problems_are_values(text: str, problem: str) -> None:
    ident = parse_identity(text, "GS1-128")
    assert any(problem in p for p in ident.problems), ident.problems
    assert not ident.ok


def test_invalid_gtin_leaves_gtin_none_but_keeps_serial() -> None:
    ident = parse_identity(f"01{GTIN14[:-1]}9{GS}21SER1", "GS1-128")
    assert ident.gtin is None
    assert ident.serial == "SER1"


def test_sscc_valid() -> None:
    ident = parse_identity("00006141411234567890", "GS1-128")
    assert (ident.sscc, ident.problems) == ("006141411234567890", ())


def test_gs1_human_readable_form() -> None:
    ident = parse_identity(f"(01){GTIN14}(17)270630(21)A1B2C3", "Code 128")
    assert (ident.gtin, ident.expiry, ident.serial, ident.problems) == (GTIN14, "2027-06-30", "A1B2C3", ())


@pytest.mark.parametrize(
    ("text", "symbology", "gtin"),
    [
        (GTIN13, "EAN-13", GTIN14),
        ("036000291452", "EAN-13", "00036000291452"),  # UPC-A
        ("96385074", "EAN-8", "00000096385074"),
        (GTIN14, "Interleaved 2 of 5", GTIN14),  # ITF-14
    ],
)
def test_bare_gtin_normalised_to_14(text: str, symbology: str, gtin: str) -> None:
    ident = parse_identity(text, symbology)
    assert (ident.gtin, ident.problems) == (gtin, ())


def test_bare_gtin_bad_check_digit() -> None:
    ident = parse_identity("9501101530004", "EAN-13")
    assert ident.gtin is None
    assert ident.problems == ("GTIN 9501101530004 has an invalid check digit",)


@pytest.mark.parametrize(
    "text", [IMEI, f"IMEI: {IMEI}", "IMEI 49-015420-323751-8", "imei#490154203237518", "4901542032375106"]
)
def test_imei_forms(text: str) -> None:
    ident = parse_identity(text, "Code 128")
    assert (ident.imei, ident.problems) == (IMEI, ())


def test_imei_bad_luhn() -> None:
    ident = parse_identity("490154203237517", "Code 128")
    assert ident.imei is None
    assert ident.problems == ("IMEI 490154203237517 has an invalid check digit",)


def test_imei_label_with_wrong_length() -> None:
    ident = parse_identity("IMEI: 4901542032", "Code 128")
    assert ident.imei is None
    assert "15 digits" in ident.problems[0]


@pytest.mark.parametrize(("text", "rma"), [("RMA-1234567", "RMA-1234567"), ("RMA123456", "RMA123456")])
def test_rma_default_pattern(text: str, rma: str) -> None:
    ident = parse_identity(text, "Code 39")
    assert (ident.rma, ident.problems, ident.known) == (rma, (), True)


def test_rma_too_short_is_not_an_rma_and_not_a_problem() -> None:
    ident = parse_identity("RMA-123", "Code 39")
    assert (ident.rma, ident.problems, ident.known) == (None, (), False)


def test_rma_custom_pattern_and_bad_pattern() -> None:
    assert parse_identity("RET/2024/000017", "QR", rma_pattern=r"RET/\d{4}/\d{6}").rma == "RET/2024/000017"
    ident = parse_identity("RMA-1234567", "Code 128", rma_pattern="(unclosed")
    assert ident.rma is None
    assert "not a valid regular expression" in ident.problems[0]


def test_oversized_text_is_truncated_with_a_problem() -> None:
    text = "A" * 5000
    ident = parse_identity(text, "QR")
    assert ident.barcode == text
    assert "only the first 1024" in ident.problems[0]


@settings(max_examples=400, deadline=None)
@given(
    text=st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x1d", "0", "1", "(", ")", "]"]),
                 max_size=200),
    symbology=st.sampled_from(["GS1-128", "GS1 DataMatrix", "EAN-13", "Code 128", "QR", "Unknown", ""]),
)
def test_hostile_text_never_raises_and_fields_are_valid(text: str, symbology: str) -> None:
    ident = parse_identity(text, symbology)
    assert ident.barcode == text
    if ident.gtin is not None:
        assert len(ident.gtin) == 14 and gtin_check_digit(ident.gtin[:-1]) == int(ident.gtin[-1])
    if ident.imei is not None:
        assert len(ident.imei) == 15 and luhn_valid(ident.imei)
    for value in (ident.serial, ident.lot):
        assert value is None or (0 < len(value) <= 20 and GS not in value)


_CSET82_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-./"


@settings(max_examples=200, deadline=None)
@given(
    body=st.text(alphabet="0123456789", min_size=13, max_size=13),
    serial=st.text(alphabet=_CSET82_ALNUM, min_size=1, max_size=20),
    lot=st.text(alphabet=_CSET82_ALNUM, min_size=1, max_size=20),
    lot_first=st.booleans(),
)
def test_generated_gs1_round_trips(body: str, serial: str, lot: str, lot_first: bool) -> None:
    gtin = body + str(gtin_check_digit(body))
    tail = f"10{lot}{GS}21{serial}" if lot_first else f"21{serial}{GS}10{lot}"
    ident = parse_identity(f"01{gtin}{tail}", "GS1 DataMatrix")
    assert (ident.gtin, ident.serial, ident.lot, ident.problems) == (gtin, serial, lot, ())


# ISO/IEC 15434 envelopes: `[)>` RS, format header, GS-separated data, RS, EOT.
def test_iso15434_format_05_carries_gs1() -> None:
    text = "[)>\x1e05\x1d0100614141001002\x1d21SER123\x1e\x04"
    identity = parse_identity(text, "DataMatrix")
    assert (identity.gtin, identity.serial, identity.problems) == ("00614141001002", "SER123", ())


def test_iso15434_format_06_carries_data_identifiers() -> None:
    text = "[)>\x1e06\x1d8P00614141001002\x1d25SUN0614141SER9\x1d1TLOT7\x1e\x04"
    identity = parse_identity(text, "DataMatrix")
    assert identity.gtin == "00614141001002"
    assert identity.serial == "UN0614141SER9"
    assert identity.lot == "LOT7"
    assert identity.problems == ()


def test_iso15434_problems_are_values() -> None:
    identity = parse_identity("[)>\x1e99\x1dXYZ\x1e", "DataMatrix")
    assert any("format" in p for p in identity.problems)
    assert any("EOT" in p for p in identity.problems)
    bad = parse_identity("[)>\x1e06\x1d8P00614141001003\x1e\x04", "DataMatrix")
    assert bad.gtin is None and bad.problems
