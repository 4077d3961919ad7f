"""Values as the server's JSON library writes them.

A compiled prompt must be byte-for-byte what the server's render gives, and
the server turns a non-string value into compact JSON with its own number
layout (``1e+16``, ``1.5e-7``, ``0.00001``, ``100.0``) and object keys
sorted, where the standard library writes ``1e-07`` and ``1e-05`` and keeps
key order; so this module writes JSON itself. The shared render table
(``tests/fixtures/render_cases.json``) pins the layout against the server.
"""

from __future__ import annotations

import math
from typing import Any

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1


class NotJson(TypeError):
    """A Python value that has no JSON form (a set, a datetime, NaN…)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def type_name(value: Any) -> str:
    """The JSON type of ``value`` as the server names it, or why it is none."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "number"
    if isinstance(value, float):
        return "number" if math.isfinite(value) else "non-finite number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _string(s: str) -> str:
    out = []
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _float(x: float) -> str:
    """The shortest round-trip digits of ``x``, laid out as the server does."""
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp_text = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    # value = 0.DIGITS × 10^kk
    kk = len(whole) + (int(exp_text) if exp_text else 0)
    if whole == "0":
        kk = -(len(frac) - len(frac.lstrip("0")))
    digits = digits.rstrip("0") or "0"
    n = len(digits)
    e = kk - n  # value = DIGITS × 10^e
    if e >= 0 and kk <= 16:
        return f"{sign}{digits}{'0' * e}.0"
    if 0 < kk <= 16:
        return f"{sign}{digits[:kk]}.{digits[kk:]}"
    if -5 < kk <= 0:
        return f"{sign}0.{'0' * -kk}{digits}"
    exp = kk - 1
    # Scientific notation writes `+` on positive exponents only: 1e+20, 1e-7.
    exponent = f"e+{exp}" if exp > 0 else f"e{exp}"
    if n == 1:
        return f"{sign}{digits}{exponent}"
    return f"{sign}{digits[0]}.{digits[1:]}{exponent}"


def dumps(value: Any) -> str:
    """Compact JSON with sorted keys and the server's number layout.

    Raises:
        NotJson: for a value (or a part of one) that has no JSON form.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):
        # Integers beyond 64 bits are read by the server as floats.
        if _I64_MIN <= value <= _U64_MAX:
            return str(value)
        try:
            return _float(float(value))
        except OverflowError:
            raise NotJson("an integer too large for JSON") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJson("non-finite number")
        return _float(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        parts = []
        for k in sorted(value):
            if not isinstance(k, str):
                raise NotJson(f"an object key of type {type(k).__name__}")
            parts.append(_string(k) + ":" + dumps(value[k]))
        return "{" + ",".join(parts) + "}"
    raise NotJson(type(value).__name__)
