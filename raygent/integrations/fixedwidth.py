"""Fixed-width records described by a copybook-like layout: JSON ↔ bytes.

Legacy backends answer with records whose fields sit at fixed offsets. The layout is written the way a
COBOL programmer would write it, so the same file can be read by both sides::

      * Order status reply.
       01  ORDER-STATUS-REPLY.
           05  TRAN-CODE      PIC X(4)  VALUE 'OSRP'.
           05  ORDER-ID       PIC 9(10).
           05  STATUS         PIC X(12).
           05  TOTAL-USD      PIC S9(7)V99 COMP-3.
           05  FILLER         PIC X(6).

Supported: level ``01`` records with elementary fields (group levels are flattened), ``PIC X(n)`` /
``A(n)`` text, ``PIC [S]9(n)[V9(m)]`` numbers as zoned decimal (``DISPLAY``, the default; the sign is an
overpunch in the last byte) or packed decimal (``COMP-3`` / ``PACKED-DECIMAL``), ``VALUE`` constants
(checked on decode, filled on encode, not part of the JSON), ``FILLER``. Not supported (a clear
:class:`LayoutError`): ``OCCURS``, ``REDEFINES``, binary ``COMP``, edited pictures.

JSON names are the field names in lower case with ``-`` as ``_`` (``ORDER-ID`` → ``order_id``). Numbers
with a scale decode to floats rounded to that scale, without one to ints. A field missing from the JSON
is initialised the way COBOL's ``INITIALIZE`` does (spaces or zeros); an unknown JSON key is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from raygent.integrations.errors import LayoutError, RecordError

__all__ = ["Field", "Layout", "RecordLayout", "load_layout", "parse_layout"]

FieldKind = Literal["text", "zoned", "packed"]

_STATEMENT_END = re.compile(r"\.(?=\s|$)")
_CLAUSE = re.compile(
    r"(?P<pic>PIC(?:TURE)?\s+(?:IS\s+)?(?P<picture>[^\s]+))"
    r"|(?P<usage>(?:USAGE\s+(?:IS\s+)?)?(?P<usage_kind>COMP-3|PACKED-DECIMAL|DISPLAY|COMP-\d|COMP|BINARY))"
    r"|(?P<value>VALUE\s+(?:IS\s+)?(?P<literal>'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|[+-]?\d+(?:\.\d+)?|"
    r"ZEROS?|ZEROES|SPACES?))"
    r"|(?P<unsupported>OCCURS|REDEFINES|SYNC(?:HRONIZED)?|JUST(?:IFIED)?|BLANK|SIGN)",
    re.IGNORECASE,
)
_NUMERIC_PIC = re.compile(r"^(S?)(9*)(?:V(9*))?$")


@dataclass(frozen=True, slots=True)
class Field:
    """One elementary field: where it sits and how its bytes read."""

    name: str  # as written in the layout (ORDER-ID)
    json_name: str  # order_id
    kind: FieldKind
    offset: int
    length: int  # bytes
    digits: int = 0  # numeric: total digits
    scale: int = 0  # numeric: digits after the implied decimal point
    signed: bool = False
    value: str | int | Decimal | None = None  # VALUE constant
    filler: bool = False

    @property
    def in_json(self) -> bool:
        return not self.filler and self.value is None

    def where(self) -> str:
        return f"field {self.name} (offset {self.offset}, {self.length} bytes)"


# --------------------------------------------------------------------------------------------- parsing


def _expand_picture(picture: str) -> str:
    """``S9(7)V99`` → ``S9999999V99``."""

    def repeat(match: re.Match[str]) -> str:
        return match.group(1) * int(match.group(2))

    return re.sub(r"([XA9])\((\d+)\)", repeat, picture.upper())


def _literal(text: str) -> str | Decimal:
    upper = text.upper()
    if upper in ("ZERO", "ZEROS", "ZEROES"):
        return Decimal(0)
    if upper in ("SPACE", "SPACES"):
        return ""
    if text[0] in "'\"":
        quote = text[0]
        return text[1:-1].replace(quote * 2, quote)
    return Decimal(text)


def _field_from_statement(statement: str, offset: int, line: int) -> Field | None:
    """Parse ``05 NAME PIC … [COMP-3] [VALUE …]``; None for a group item (no PIC)."""
    head = re.match(r"^(\d{1,2})\s+([A-Za-z0-9][A-Za-z0-9-]*)\s*(.*)$", statement, re.DOTALL)
    if head is None:
        raise LayoutError(f"line {line}: cannot read {statement[:40]!r} as 'level NAME clauses'")
    name, rest = head.group(2).upper(), head.group(3).strip()
    picture = usage = None
    literal: str | Decimal | None = None
    position = 0
    while position < len(rest):
        match = _CLAUSE.match(rest, position)
        if match is None:
            raise LayoutError(f"line {line}: field {name}: cannot read {rest[position:][:30]!r}")
        if match.group("unsupported"):
            clause = match.group("unsupported").upper()
            raise LayoutError(f"line {line}: field {name}: {clause} is not supported")
        if match.group("pic"):
            picture = _expand_picture(match.group("picture"))
        elif match.group("usage"):
            usage = match.group("usage_kind").upper()
        else:
            literal = _literal(match.group("literal"))
        position = match.end()
        while position < len(rest) and rest[position].isspace():
            position += 1
    if picture is None:
        if usage or literal is not None:
            raise LayoutError(f"line {line}: field {name} has no PIC clause")
        return None
    return _make_field(name, picture, usage, literal, offset, line)


def _make_field(
    name: str, picture: str, usage: str | None, literal: str | Decimal | None, offset: int, line: int
) -> Field:
    filler = name == "FILLER"
    json_name = name.lower().replace("-", "_")
    if re.fullmatch(r"[XA]+", picture):
        if usage not in (None, "DISPLAY"):
            raise LayoutError(f"line {line}: field {name}: text fields cannot be {usage}")
        if isinstance(literal, Decimal):
            raise LayoutError(f"line {line}: field {name}: a text field needs a quoted VALUE")
        if literal is not None and len(literal) > len(picture):
            raise LayoutError(f"line {line}: field {name}: VALUE is longer than PIC {picture}")
        return Field(name, json_name, "text", offset, len(picture), value=literal, filler=filler)
    numeric = _NUMERIC_PIC.fullmatch(picture)
    if numeric is None or not (numeric.group(2) or numeric.group(3)):
        raise LayoutError(f"line {line}: field {name}: PIC {picture} is not supported (use X, 9, S, V)")
    digits_int, digits_frac = len(numeric.group(2)), len(numeric.group(3) or "")
    digits, signed = digits_int + digits_frac, bool(numeric.group(1))
    if digits > 31:
        raise LayoutError(f"line {line}: field {name}: more than 31 digits")
    if usage in ("COMP-3", "PACKED-DECIMAL"):
        kind: FieldKind = "packed"
        length = digits // 2 + 1
    elif usage in (None, "DISPLAY"):
        kind, length = "zoned", digits
    else:
        raise LayoutError(f"line {line}: field {name}: USAGE {usage} is not supported (DISPLAY, COMP-3)")
    value = literal
    if isinstance(value, str):
        raise LayoutError(f"line {line}: field {name}: a numeric field needs a numeric VALUE")
    return Field(name, json_name, kind, offset, length, digits, digits_frac, signed, value, filler)


def _statements(text: str) -> list[tuple[int, str]]:
    """Split the layout into ``.``-terminated statements with their line numbers; drop comments."""
    kept: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        # Fixed-format copybooks put '*' in column 7; free format starts a comment line with it.
        if raw.lstrip().startswith("*") or (len(raw) > 6 and raw[6] == "*"):
            continue
        kept.append((number, raw.strip()))
    statements: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, line in kept:
        if not line:
            continue
        if not buffer:
            start = number
        buffer = f"{buffer} {line}".strip()
        pieces = _STATEMENT_END.split(buffer)
        for piece in pieces[:-1]:
            if piece.strip():
                statements.append((start, piece.strip()))
        buffer = pieces[-1].strip()
    if buffer:
        raise LayoutError(f"line {start}: statement {buffer[:40]!r} does not end with '.'")
    return statements


def parse_layout(text: str, *, encoding: str = "cp037", source: str = "<layout>") -> Layout:
    """Parse copybook-like text into a :class:`Layout`.

    Args:
        text: The layout.
        encoding: Character set of the records: ``cp037`` (EBCDIC, the mainframe default) or an ASCII
            superset such as ``ascii`` or ``latin-1``.
        source: Name used in error messages.

    Raises:
        LayoutError: With the line of the first problem.
    """
    try:
        zero = "0".encode(encoding)
    except LookupError:
        raise LayoutError(f"{source}: unknown encoding {encoding!r}") from None
    if zero not in (b"0", b"\xf0"):
        raise LayoutError(f"{source}: encoding {encoding!r} is neither ASCII- nor EBCDIC-based")
    records: dict[str, list[Field]] = {}
    current: list[Field] | None = None
    offset = 0
    try:
        for line, statement in _statements(text):
            level = statement.split(None, 1)[0]
            if not level.isdigit():
                raise LayoutError(f"line {line}: expected a level number, found {level!r}")
            if int(level) == 1:
                name = statement.split()[1].upper() if len(statement.split()) > 1 else ""
                if not name or len(statement.split()) > 2:
                    raise LayoutError(f"line {line}: a 01 record is just '01 NAME.' (fields below it)")
                if name in records:
                    raise LayoutError(f"line {line}: record {name} is defined twice")
                current, offset = records.setdefault(name, []), 0
                continue
            if current is None:
                raise LayoutError(f"line {line}: field outside of a 01 record")
            field = _field_from_statement(statement, offset, line)
            if field is None:
                continue
            if field.in_json and any(f.json_name == field.json_name for f in current):
                raise LayoutError(f"line {line}: field {field.name} is defined twice in this record")
            current.append(field)
            offset += field.length
    except LayoutError as exc:
        raise LayoutError(f"{source}: {exc.detail}") from None
    if not records:
        raise LayoutError(f"{source}: no 01 record found")
    empty = [name for name, fields in records.items() if not fields]
    if empty:
        raise LayoutError(f"{source}: record {empty[0]} has no fields")
    ebcdic = zero == b"\xf0"
    return Layout({name: RecordLayout(name, tuple(f), encoding, ebcdic) for name, f in records.items()})


def load_layout(path: Path, *, encoding: str = "cp037") -> Layout:
    """Read and parse a layout file; a missing file is a :class:`LayoutError`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise LayoutError(f"cannot read layout {path}: {exc.strerror}") from None
    return parse_layout(text, encoding=encoding, source=str(path))


# ------------------------------------------------------------------------------------------- the codec

# ASCII overpunch: the last digit of a signed zoned number carries the sign.
_POSITIVE_OVERPUNCH = "{ABCDEFGHI"
_NEGATIVE_OVERPUNCH = "}JKLMNOPQR"
_POSITIVE_NIBBLES = (0xC, 0xA, 0xE, 0xF)
_NEGATIVE_NIBBLES = (0xD, 0xB)


@dataclass(frozen=True, slots=True)
class RecordLayout:
    """One ``01`` record: encodes JSON objects to bytes and decodes bytes to JSON objects."""

    name: str
    fields: tuple[Field, ...]
    encoding: str
    ebcdic: bool

    @property
    def length(self) -> int:
        return sum(f.length for f in self.fields)

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of this record's data fields (what :meth:`decode` returns)."""
        properties: dict[str, Any] = {}
        for field in self.fields:
            if not field.in_json:
                continue
            if field.kind == "text":
                properties[field.json_name] = {"type": "string", "maxLength": field.length}
            else:
                bound = 10 ** (field.digits - field.scale)
                prop: dict[str, Any] = {"type": "integer" if field.scale == 0 else "number"}
                prop["exclusiveMaximum"] = bound
                prop["exclusiveMinimum" if field.signed else "minimum"] = -bound if field.signed else 0
                properties[field.json_name] = prop
        return {"type": "object", "properties": properties, "additionalProperties": False}

    # --- encode

    def encode(self, data: dict[str, Any]) -> bytes:
        """JSON object → record bytes.

        Raises:
            RecordError: An unknown key, or a value that does not fit its field.
        """
        known = {f.json_name for f in self.fields if f.in_json}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecordError(f"record {self.name} has no field {unknown[0]!r}")
        return b"".join(self._encode_field(f, data.get(f.json_name)) for f in self.fields)

    def _encode_field(self, field: Field, value: Any) -> bytes:
        if not field.in_json:
            value = field.value
        if field.kind == "text":
            return self._encode_text(field, "" if value is None else value)
        number = Decimal(0) if value is None else self._to_decimal(field, value)
        digits = self._digits(field, number)
        if field.kind == "packed":
            return self._pack(field, digits, number < 0)
        return self._zone(field, digits, number < 0)

    def _encode_text(self, field: Field, value: Any) -> bytes:
        if not isinstance(value, str):
            raise RecordError(f"{field.where()} needs a string, got {type(value).__name__}")
        try:
            raw = value.encode(self.encoding)
        except UnicodeEncodeError:
            raise RecordError(
                f"{field.where()}: {value!r} has characters {self.encoding} cannot hold"
            ) from None
        if len(raw) > field.length:
            raise RecordError(f"{field.where()}: {value!r} is longer than {field.length} characters")
        return raw + " ".encode(self.encoding) * (field.length - len(raw))

    @staticmethod
    def _to_decimal(field: Field, value: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise RecordError(f"{field.where()} needs a number, got {type(value).__name__}")
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise RecordError(f"{field.where()}: {value!r} is not a number") from None
        if not number.is_finite():
            raise RecordError(f"{field.where()}: {value!r} is not a finite number")
        return number

    @staticmethod
    def _digits(field: Field, number: Decimal) -> str:
        if number < 0 and not field.signed:
            raise RecordError(f"{field.where()}: {number} is negative but the field is unsigned")
        scaled = number.scaleb(field.scale)
        if scaled != scaled.to_integral_value():
            raise RecordError(f"{field.where()}: {number} has more than {field.scale} decimal places")
        text = str(abs(int(scaled)))
        if len(text) > field.digits:
            raise RecordError(f"{field.where()}: {number} does not fit in {field.digits} digits")
        return text.rjust(field.digits, "0")

    def _pack(self, field: Field, digits: str, negative: bool) -> bytes:
        sign = 0xD if negative else (0xC if field.signed else 0xF)
        nibbles = [int(d) for d in digits.rjust(field.length * 2 - 1, "0")] + [sign]
        return bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, len(nibbles), 2))

    def _zone(self, field: Field, digits: str, negative: bool) -> bytes:
        if self.ebcdic:
            out = bytearray(0xF0 | int(d) for d in digits)
            if field.signed:
                out[-1] = (0xD0 if negative else 0xC0) | int(digits[-1])
            return bytes(out)
        last = digits[-1]
        if field.signed:
            last = (_NEGATIVE_OVERPUNCH if negative else _POSITIVE_OVERPUNCH)[int(last)]
        return (digits[:-1] + last).encode("ascii")

    # --- decode

    def decode(self, record: bytes) -> dict[str, Any]:
        """Record bytes → JSON object (data fields only).

        Raises:
            RecordError: Wrong length, a VALUE constant that does not match, a byte that is not a digit
                or a sign of its field.
        """
        if not isinstance(record, bytes | bytearray):
            raise RecordError(f"record {self.name} must be bytes, got {type(record).__name__}")
        if len(record) != self.length:
            raise RecordError(f"record is {len(record)} bytes; layout {self.name} needs {self.length}")
        out: dict[str, Any] = {}
        for field in self.fields:
            raw = bytes(record[field.offset : field.offset + field.length])
            if field.filler:
                continue
            value = self._decode_field(field, raw)
            expected = field.value.rstrip(" ") if isinstance(field.value, str) else field.value
            if expected is not None and value != expected:
                raise RecordError(f"{field.where()} is {value!r}; layout {self.name} expects {field.value!r}")
            if field.in_json:
                out[field.json_name] = value
        return out

    def _decode_field(self, field: Field, raw: bytes) -> Any:
        if field.kind == "text":
            try:
                return raw.decode(self.encoding).rstrip(" ")
            except UnicodeDecodeError:
                raise RecordError(f"{field.where()} is not valid {self.encoding} text") from None
        digits, negative = self._unpack(field, raw) if field.kind == "packed" else self._unzone(field, raw)
        number = Decimal(int(digits)).scaleb(-field.scale)
        if negative:
            number = -number
        if field.value is not None:
            return number
        return int(number) if field.scale == 0 else float(number)

    @staticmethod
    def _unpack(field: Field, raw: bytes) -> tuple[str, bool]:
        nibbles = [n for byte in raw for n in (byte >> 4, byte & 0xF)]
        *digit_nibbles, sign = nibbles
        bad = next((n for n in digit_nibbles if n > 9), None)
        if bad is not None:
            raise RecordError(f"{field.where()}: nibble {bad:X} is not a packed-decimal digit ({raw.hex()})")
        if sign not in _POSITIVE_NIBBLES + _NEGATIVE_NIBBLES:
            raise RecordError(f"{field.where()}: {sign:X} is not a packed-decimal sign ({raw.hex()})")
        negative = sign in _NEGATIVE_NIBBLES
        if negative and not field.signed:
            raise RecordError(f"{field.where()}: negative sign in an unsigned field ({raw.hex()})")
        return "".join(str(n) for n in digit_nibbles), negative

    def _unzone(self, field: Field, raw: bytes) -> tuple[str, bool]:
        negative = False
        if self.ebcdic:
            digits = []
            for index, byte in enumerate(raw):
                zone, digit = byte >> 4, byte & 0xF
                last = index == len(raw) - 1
                ok_zone = zone == 0xF or (last and zone in _POSITIVE_NIBBLES + _NEGATIVE_NIBBLES)
                if digit > 9 or not ok_zone:
                    raise RecordError(f"{field.where()}: byte {byte:02X} is not a zoned digit")
                negative = negative or (last and zone in _NEGATIVE_NIBBLES)
                digits.append(str(digit))
            text = "".join(digits)
        else:
            text = raw.decode("latin-1")
            final = text[-1:]
            if final in _POSITIVE_OVERPUNCH:
                text = text[:-1] + str(_POSITIVE_OVERPUNCH.index(final))
            elif final in _NEGATIVE_OVERPUNCH:
                text, negative = text[:-1] + str(_NEGATIVE_OVERPUNCH.index(final)), True
            if not text.isdigit() or not text.isascii():
                raise RecordError(f"{field.where()}: {raw!r} is not a zoned number")
        if negative and not field.signed:
            raise RecordError(f"{field.where()}: negative sign in an unsigned field")
        return text, negative


@dataclass(frozen=True, slots=True)
class Layout:
    """Every ``01`` record of a layout file, by name."""

    records: dict[str, RecordLayout]

    def record(self, name: str) -> RecordLayout:
        found = self.records.get(name.upper())
        if found is None:
            known = ", ".join(sorted(self.records))
            raise LayoutError(f"the layout has no record {name!r} (it has: {known})")
        return found
