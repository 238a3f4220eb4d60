"""Parse a `/predict` form body held in memory into its named parts, refusing malformed or truncated ones.

python-multipart does the parsing; this keeps whole parts as bytes (an upload is at most the server's
size limit) and tells a body that ends before its closing boundary apart from a complete one. URL-encoded
forms (text requests from clients other than Immich) are accepted too, as FastAPI's `Form` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from immich_ml_desktop.errors import InvalidInputError

MAX_PARTS = 16  # Immich sends two (entries + image or text); anything far beyond that is hostile


@dataclass
class FormPart:
    name: str
    data: bytearray = field(default_factory=bytearray)
    filename: str | None = None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


URLENCODED = b"application/x-www-form-urlencoded"


def boundary_of(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise InvalidInputError(
            f"/predict takes multipart/form-data (entries + image or text), not {kind.decode('latin-1') or 'no content type'}."
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidInputError("The multipart body has no boundary in its Content-Type header.")
    return boundary


def parse_form(body: bytes, content_type: str) -> dict[str, FormPart]:
    """Named parts of a complete multipart body (the first part of each name wins)."""
    if parse_options_header(content_type)[0] == URLENCODED:
        # latin-1 maps each byte (raw or %-escaped) to one character and back, so each field comes out as
        # the bytes the client sent (UTF-8, as browsers and httpx encode forms), decoded once, by FormPart.
        try:
            fields = parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_PARTS, encoding="latin-1")
        except ValueError:  # more than MAX_PARTS fields
            raise InvalidInputError(f"The form has more than {MAX_PARTS} fields; /predict takes entries + text.") from None
        named_fields: dict[str, FormPart] = {}
        for name, value in fields:
            field_name = name.encode("latin-1").decode("utf-8", "replace")
            named_fields.setdefault(field_name, FormPart(field_name, bytearray(value.encode("latin-1"))))
        return named_fields
    parts: list[FormPart] = []
    headers: list[tuple[bytes, bytes]] = []
    header_name = bytearray()
    header_value = bytearray()
    current: list[FormPart | None] = [None]
    ended = [False]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers.append((bytes(header_name).lower(), bytes(header_value)))
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        disposition = next((v for k, v in headers if k == b"content-disposition"), b"")
        headers.clear()
        _, options = parse_options_header(disposition)
        if b"name" not in options:
            raise InvalidInputError('A multipart part has no Content-Disposition "name".')
        if len(parts) >= MAX_PARTS:
            raise InvalidInputError(f"The multipart body has more than {MAX_PARTS} parts; /predict takes entries + image or text.")
        filename = options.get(b"filename")
        part = FormPart(options[b"name"].decode("utf-8", "replace"), filename=filename.decode("utf-8", "replace") if filename is not None else None)
        parts.append(part)
        current[0] = part

    def on_part_data(data: bytes, start: int, end: int) -> None:
        assert current[0] is not None
        current[0].data.extend(data[start:end])

    def on_end() -> None:
        ended[0] = True

    parser = MultipartParser(
        boundary_of(content_type),
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_end": on_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as e:
        raise InvalidInputError(f"The multipart body is malformed: {e}.") from None
    if not ended[0]:
        raise InvalidInputError("The multipart body is truncated: it ends before its closing boundary.")
    named: dict[str, FormPart] = {}
    for part in parts:
        named.setdefault(part.name, part)
    return named
