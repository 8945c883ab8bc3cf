"""Copybook-like layouts: JSON ↔ fixed-width records, and clear errors for what does not fit."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raygent.integrations.errors import LayoutError, RecordError
from raygent.integrations.fixedwidth import load_layout, parse_layout

LAYOUT = """
      * comment in column 7
       01  REPLY.
           05  TRAN-CODE    PIC X(4)  VALUE 'OSRP'.
           05  ORDER-ID     PIC 9(10).
           05  DETAIL-GROUP.
               10  STATUS   PIC X(12).
           05  TOTAL        PIC S9(7)V99 COMP-3.
           05  BALANCE      PIC S9(5)V99.
           05  COUNT        PIC 9(3) COMP-3.
           05  FILLER       PIC X(3).
"""
EXAMPLE = (
    Path(__file__).resolve().parents[3] / "examples" / "legacy_mainframe" / "layouts" / "order_status.cpy"
)


@pytest.mark.parametrize("encoding", ["cp037", "ascii"])
def test_round_trip_of_every_field_kind(encoding: str) -> None:
    record = parse_layout(LAYOUT, encoding=encoding).record("reply")
    data = {"order_id": 1001, "status": "shipped", "total": -455.6, "balance": 12.34, "count": 7}
    raw = record.encode(data)
    assert len(raw) == record.length == 4 + 10 + 12 + 5 + 7 + 2 + 3
    assert record.decode(raw) == data


def test_ebcdic_bytes_are_what_a_mainframe_writes() -> None:
    record = parse_layout(LAYOUT, encoding="cp037").record("REPLY")
    raw = record.encode({"order_id": 42, "status": "OK", "total": -1.5, "balance": -0.01, "count": 12})
    assert raw[:4] == "OSRP".encode("cp037")
    assert raw[4:14] == bytes.fromhex("f0f0f0f0f0f0f0f0f4f2")  # zoned, unsigned: F zones
    assert raw[26:31] == bytes.fromhex("000000150d")  # packed, negative: D sign nibble
    assert raw[31:38] == bytes.fromhex("f0f0f0f0f0f0d1")  # zoned signed: D zone in the last byte
    assert raw[38:40] == bytes.fromhex("012f")  # packed unsigned: F sign nibble


def test_ascii_zoned_sign_is_an_overpunch() -> None:
    record = parse_layout("01 R.\n 05 N PIC S9(3).\n", encoding="ascii").record("R")
    assert record.encode({"n": -123}) == b"12L"
    assert record.encode({"n": 120}) == b"12{"
    assert record.decode(b"12}") == {"n": -120}


@given(
    st.decimals(min_value=Decimal("-9999999.99"), max_value=Decimal("9999999.99"), places=2),
    st.integers(min_value=0, max_value=9_999_999_999),
)
def test_numbers_round_trip(total: Decimal, order_id: int) -> None:
    record = parse_layout(LAYOUT).record("REPLY")
    back = record.decode(record.encode({"order_id": order_id, "total": str(total), "balance": 0}))
    assert back["order_id"] == order_id and Decimal(str(back["total"])) == total


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"order_id": 10**10}, "does not fit in 10 digits"),
        ({"order_id": -1}, "negative but the field is unsigned"),
        ({"total": "1.234"}, "more than 2 decimal places"),
        ({"status": "x" * 13}, "longer than 12 characters"),
        ({"status": 5}, "needs a string"),
        ({"order_id": "12a"}, "is not a number"),
        ({"order_id": True}, "needs a number"),
        ({"nope": 1}, "has no field 'nope'"),
        ({"tran_code": "XXXX"}, "has no field 'tran_code'"),  # constants are not data
    ],
)
def test_values_that_do_not_fit_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(RecordError, match=message):
        parse_layout(LAYOUT).record("REPLY").encode(data)


def test_missing_fields_are_initialised_like_cobol() -> None:
    record = parse_layout(LAYOUT).record("REPLY")
    assert record.decode(record.encode({})) == {
        "order_id": 0,
        "status": "",
        "total": 0.0,
        "balance": 0.0,
        "count": 0,
    }


def test_malformed_records_name_the_field_and_offset() -> None:
    record = parse_layout(LAYOUT).record("REPLY")
    good = bytearray(record.encode({"order_id": 1}))
    with pytest.raises(RecordError, match="record is 42 bytes; layout REPLY needs 43"):
        record.decode(bytes(good[:-1]))
    bad_packed = bytearray(good)
    bad_packed[26] = 0xAB
    with pytest.raises(RecordError, match=r"field TOTAL \(offset 26, 5 bytes\): nibble A"):
        record.decode(bytes(bad_packed))
    bad_sign = bytearray(good)
    bad_sign[30] = 0x07
    with pytest.raises(RecordError, match="7 is not a packed-decimal sign"):
        record.decode(bytes(bad_sign))
    bad_zoned = bytearray(good)
    bad_zoned[5] = 0x40  # an EBCDIC space inside ORDER-ID
    with pytest.raises(RecordError, match=r"field ORDER-ID \(offset 4, 10 bytes\): byte 40"):
        record.decode(bytes(bad_zoned))
    wrong_constant = bytearray(good)
    wrong_constant[0:4] = "OSRQ".encode("cp037")
    with pytest.raises(RecordError, match=r"TRAN-CODE .* is 'OSRQ'; layout REPLY expects 'OSRP'"):
        record.decode(bytes(wrong_constant))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("01 R.\n 05 A PIC X(3) OCCURS 3.\n", "OCCURS is not supported"),
        ("01 R.\n 05 A PIC 9(3) COMP.\n", "USAGE COMP is not supported"),
        ("01 R.\n 05 A PIC Z(3).\n", r"PIC Z\(3\) is not supported"),
        ("01 R.\n 05 A PIC X(3)\n", "does not end with '.'"),
        ("05 A PIC X(3).\n", "field outside of a 01 record"),
        ("01 R.\n", "record R has no fields"),
        ("01 R.\n 05 A PIC X(2) VALUE 'ABC'.\n", "VALUE is longer than PIC XX"),
        ("01 R.\n 05 A PIC X(2).\n 05 A PIC X(2).\n", "field A is defined twice"),
        ("", "no 01 record found"),
    ],
)
def test_invalid_layouts_say_where(text: str, message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        parse_layout(text)


def test_unknown_record_and_encoding() -> None:
    with pytest.raises(LayoutError, match=r"has no record 'NOPE' .*has: REPLY"):
        parse_layout(LAYOUT).record("NOPE")
    with pytest.raises(LayoutError, match="unknown encoding"):
        parse_layout(LAYOUT, encoding="klingon")
    with pytest.raises(LayoutError, match="cannot read layout"):
        load_layout(Path("/nonexistent.cpy"))


def test_the_example_layout_and_its_json_schema() -> None:
    layout = load_layout(EXAMPLE)
    assert layout.record("ORDER-STATUS-REQUEST").length == 20
    schema = layout.record("ORDER-STATUS-REPLY").json_schema()
    assert schema["properties"]["total_usd"] == {
        "type": "number",
        "exclusiveMaximum": 10**7,
        "exclusiveMinimum": -(10**7),
    }
    assert "tran_code" not in schema["properties"]
