"""A multipart/form-data body, already in memory and bounded in size, split into its parts.

python-multipart does the parsing; this replaces Starlette's form layer, which spools file parts
over 1 MB to temporary files (on Kubernetes a memory-backed ``/tmp`` with a size limit) only for
the service to read them back, counts files and fields against limits with 400 answers, and
raises on charsets it cannot look up. Here a part's bytes are copied once out of the body, the
part count is checked as parts begin, and names are UTF-8 (RFC 7578) whatever the header says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header


class MultipartError(Exception):
    """The body is not well-formed multipart/form-data; the message says how."""


class TooManyParts(MultipartError):
    pass


class _FirstFile(Exception):
    """Raised inside the parser to stop at the first file part (see :func:`leading_fields`)."""


@dataclass
class Part:
    name: str
    filename: str | None  # None for a plain form field
    data: bytes = b""
    _pieces: list[bytes | memoryview] = field(default_factory=list, repr=False)
    _ended: bool = field(default=False, repr=False)


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def split_multipart(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """The parts of ``body`` in order; raises :class:`MultipartError` (or :class:`TooManyParts`
    once more than ``max_parts`` have begun)."""
    return _parse(body, content_type, max_parts, prefix=False)


def leading_fields(prefix: bytes, content_type: str, max_parts: int = 64) -> dict[str, list[str]]:
    """The text fields that end, in the first bytes ``prefix`` of a multipart body, before its first
    file part (what a client sends ahead of its image, as ``requests`` does with ``data=``).
    A malformed or unfinished prefix gives the fields found so far."""
    try:
        parts = _parse(prefix, content_type, max_parts, prefix=True)
    except MultipartError:
        return {}
    fields: dict[str, list[str]] = {}
    for part in parts:
        fields.setdefault(part.name, []).append(_text(part.data))
    return fields


def _parse(body: bytes, content_type: str, max_parts: int, prefix: bool) -> list[Part]:
    """The parts of ``body``; with ``prefix``: only the text parts that end before a file part
    begins (``body`` may stop anywhere)."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise MultipartError("no boundary in the multipart Content-Type")
    view = memoryview(body)
    parts: list[Part] = []
    header_name, header_value = bytearray(), bytearray()
    disposition = b""

    def on_part_begin() -> None:
        nonlocal disposition
        disposition = b""

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        nonlocal disposition
        if header_name.lower() == b"content-disposition":
            disposition = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, params = parse_options_header(disposition)
        if b"name" not in params:
            raise MultipartError("a part has no Content-Disposition name")
        filename = params.get(b"filename")
        if prefix and filename is not None:
            raise _FirstFile
        parts.append(Part(_text(params[b"name"]), None if filename is None else _text(filename)))
        if len(parts) > max_parts:
            raise TooManyParts(f"more than {max_parts} parts")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        # Usually a slice of the body itself (kept as a view until the part ends).
        pieces = parts[-1]._pieces
        pieces.append(view[start:end] if data is body else bytes(data[start:end]))

    def on_part_end() -> None:
        part = parts[-1]
        part.data = b"".join(part._pieces)
        part._pieces.clear()
        part._ended = True

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        if not prefix:
            parser.finalize()
    except _FirstFile:
        pass
    except MultipartError:
        raise
    except Exception as exc:  # the parser's own errors on malformed input
        raise MultipartError(str(exc) or type(exc).__name__) from exc
    if prefix:  # a field the prefix ends inside is not known whole
        return [part for part in parts if part._ended]
    if parts and parts[-1]._pieces:
        raise MultipartError("the body ends inside a part")
    return parts
