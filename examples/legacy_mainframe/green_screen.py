"""A legacy-style full-screen terminal program (raw ANSI, 24 x 80): the order system's green screen.

Sign on (user RAYGENT, password from $GREEN_SCREEN_PASSWORD, default LEGACY1), pick option 1 on the
main menu, type an order number and press Enter: the order's fields appear at fixed positions. Tab moves
between input fields, F3 exits. Errors appear on row 22. Try it: ``python green_screen.py`` in a terminal.
"""

from __future__ import annotations

import json
import os
import sys
import termios
import tty
from pathlib import Path

ROWS, COLS = 24, 80
ORDERS = json.loads((Path(__file__).resolve().parent / "orders.json").read_text())
PASSWORD = os.environ.get("GREEN_SCREEN_PASSWORD", "LEGACY1")
KEYS = {b"\r": "enter", b"\n": "enter", b"\t": "tab", b"\x1b[Z": "backtab", b"\x7f": "backspace",
        b"\x08": "backspace", b"\x1bOR": "pf3", b"\x1b[13~": "pf3", b"\x1bOP": "pf1"}  # fmt: skip


class Field:
    def __init__(self, row: int, col: int, length: int, *, hidden: bool = False) -> None:
        self.row, self.col, self.length, self.hidden = row, col, length, hidden
        self.value = ""


class App:
    def __init__(self) -> None:
        self.screen = "signon"
        self.message = ""
        self.result: list[tuple[int, str]] = []
        self.fields: list[Field] = []
        self.current = 0
        self.enter("signon")

    def enter(self, screen: str) -> None:
        self.screen, self.current, self.result = screen, 0, []
        self.fields = {
            "signon": [Field(5, 24, 8), Field(6, 24, 8, hidden=True)],
            "menu": [Field(20, 18, 1)],
            "order": [Field(4, 24, 10)],
        }[screen]

    def title(self) -> str:
        names = {"signon": "SIGN-ON", "menu": "MAIN MENU", "order": "ORDER INQUIRY"}
        return f"ACME01{'A C M E   O R D E R   S Y S T E M':^58}{names[self.screen]:>16}"

    def lines(self) -> dict[int, str]:
        rows = {0: self.title(), 23: "F3=Exit   ENTER=Process   TAB=Next field"}
        if self.screen == "signon":
            rows[5] = "USERID . . . . . ."
            rows[6] = "PASSWORD . . . . ."
        elif self.screen == "menu":
            rows[3] = "  1. Order inquiry"
            rows[4] = "  2. Customer inquiry (not available)"
            rows[20] = "OPTION  ===>"
        else:
            rows[4] = "ORDER NUMBER . . ."
            rows.update(dict(self.result))
        if self.message:
            rows[21] = self.message
        for field in self.fields:
            shown = ("*" * len(field.value) if field.hidden else field.value).ljust(field.length, "_")
            line = rows.get(field.row, "").ljust(field.col)
            rows[field.row] = line[: field.col] + shown + line[field.col + field.length :]
        return rows

    def draw(self) -> None:
        out = ["\x1b[H\x1b[2J"]
        for row, text in sorted(self.lines().items()):
            out.append(f"\x1b[{row + 1};1H{text[:COLS]}")
        if self.fields:
            field = self.fields[self.current]
            out.append(f"\x1b[{field.row + 1};{field.col + len(field.value) + 1}H")
        sys.stdout.write("".join(out))
        sys.stdout.flush()

    def submit(self) -> None:
        values = [f.value.strip() for f in self.fields]
        self.message = ""
        if self.screen == "signon":
            if values[0].upper() == "RAYGENT" and values[1] == PASSWORD:
                self.enter("menu")
            else:
                self.message = "INVALID USERID OR PASSWORD"
                self.fields[1].value = ""
        elif self.screen == "menu":
            if values[0] == "1":
                self.enter("order")
            else:
                self.message = f"OPTION {values[0] or '(blank)'} IS NOT AVAILABLE"
        else:
            self.order_inquiry(values[0])

    def order_inquiry(self, order_id: str) -> None:
        self.result = []
        if not order_id.isdigit():
            self.message = "ORDER NUMBER MUST BE NUMERIC"
            return
        order = ORDERS.get(order_id)
        if order is None:
            self.message = f"ORDER {order_id} NOT FOUND"
            return
        self.result = [
            (6, f"STATUS . . . . . : {order['status'].upper():<12}"),
            (7, f"ITEM . . . . . . : {order['item'].upper():<20}"),
            (8, f"CUSTOMER . . . . : {order['customer_id']:<8}"),
            (9, f"TOTAL USD  . . . : {order['total_usd']:>12.2f}"),
            (10, f"BALANCE DUE USD  : {order['balance_due_usd']:>12.2f}"),
        ]
        self.message = "INQUIRY COMPLETE"

    def key(self, name: str) -> bool:
        """Handle a key; False ends the program."""
        field = self.fields[self.current] if self.fields else None
        if name == "pf3":
            if self.screen == "order":
                self.enter("menu")
                return True
            return False
        if name == "enter":
            self.submit()
        elif name in ("tab", "backtab") and self.fields:
            step = 1 if name == "tab" else -1
            self.current = (self.current + step) % len(self.fields)
        elif name == "backspace" and field is not None:
            field.value = field.value[:-1]
        return True

    def type(self, text: str) -> None:
        field = self.fields[self.current] if self.fields else None
        for char in text:
            if field is None or not char.isprintable():
                continue
            if len(field.value) < field.length:
                field.value += char.upper() if not field.hidden else char


def tokens(data: bytes) -> list[tuple[str, str]]:
    """Split raw input into ("key", name) and ("text", chars)."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(data):
        for seq, name in sorted(KEYS.items(), key=lambda kv: -len(kv[0])):
            if data.startswith(seq, i):
                out.append(("key", name))
                i += len(seq)
                break
        else:
            if data[i] == 0x1B:  # an escape sequence we do not know: skip it whole
                i += 3
                continue
            out.append(("text", chr(data[i])))
            i += 1
    return out


def main() -> None:
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    if saved is not None:
        tty.setraw(fd)
    app = App()
    try:
        app.draw()
        while True:
            data = os.read(fd, 1024)
            if not data:
                break
            running = True
            for kind, value in tokens(data):
                if kind == "key":
                    running = app.key(value)
                    if not running:
                        break
                else:
                    app.type(value)
            if not running:
                break
            app.draw()
    finally:
        sys.stdout.write("\x1b[H\x1b[2J")
        sys.stdout.flush()
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


if __name__ == "__main__":
    main()
