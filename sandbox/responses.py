"""The partner APIs' JSON responses, rendered with orjson.

Starlette's ``JSONResponse`` renders with ``json.dumps(..., ensure_ascii=False, allow_nan=False,
separators=(",", ":"))``; orjson writes the very same bytes for what the partner endpoints answer
(strings, ints, booleans, None, lists, dicts with string keys) at a third of the CPU, and these are
the responses the benchmark asks for at every lifecycle.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSONResponse


class JSONResponse(_StarletteJSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
