"""Values as JSON carries them: typed ids as hex (``HexChunkId``, ...), byte strings as a
string or ``{"b64": ...}`` (``WireBytes``), file names, and paths inside a namespace
(``WirePath``: a ``store.paths.DrivePath`` in Python, its bytes in JSON).

Each is a pydantic annotation that ``models`` and ``ops`` use in their fields, with plain
functions beside it for path parameters and for callers outside a model (``parse_id``,
``encode_wire_bytes``, ``decode_wire_bytes``, ``validate_name``, ``path_from_wire``). A
refusal is a ``ProtocolError`` with its code (``invalid_id``, ``invalid_name``,
``bad_request``); inside a model it becomes a pydantic error whose type is that code.
Knows no model, route or body. Immutable values: any thread.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Any, TypeAlias, TypeVar

from pydantic import GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from store.errors import FormatError, InvalidPathError
from store.ids import ChunkId, CommitId, ContentHash, LinkId, NamespaceId, TreeId
from store.objects import validate_name as _validate_format_name
from store.paths import DrivePath
from store.protocol.errors import BadRequestError, InvalidIdError, InvalidNameError, ProtocolError

# --- ids on the wire ----------------------------------------------------------------------

IdT = TypeVar("IdT", ChunkId, TreeId, CommitId)
_AnyIdT = TypeVar("_AnyIdT", ChunkId, TreeId, CommitId, ContentHash, NamespaceId, LinkId)


def parse_id(id_type: type[_AnyIdT], text: str) -> _AnyIdT:
    """An id from its hex form (a path parameter, a JSON field); ``InvalidIdError`` if not."""
    try:
        return id_type.from_hex(text)
    except FormatError as exc:
        raise InvalidIdError(str(exc), {"kind": id_type.KIND}) from exc


def _pydantic_error(exc: ProtocolError) -> PydanticCustomError:
    # Inside a model, a protocol error becomes a pydantic error whose type is the code, so
    # ``validation_error_body`` can give it back its code.
    return PydanticCustomError(exc.code, "{message}", {"message": exc.message})


class _HexId:
    """Annotation marker: a typed id that is 64 (namespace, link: 32) lowercase hex digits in
    JSON."""

    def __init__(self, id_type: Any) -> None:
        self.id_type: Any = id_type  # one of the store.ids classes

    def _validate(self, value: object) -> object:
        if isinstance(value, self.id_type):
            return value
        if isinstance(value, str):
            try:
                return parse_id(self.id_type, value)
            except InvalidIdError as exc:
                raise _pydantic_error(exc) from exc
        raise PydanticCustomError(
            InvalidIdError.CODE, "{kind} must be a hex string", {"kind": self.id_type.KIND}
        )

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        digits = 2 * self.id_type.SIZE
        text = core_schema.str_schema(
            pattern=f"^[0-9a-f]{{{digits}}}$", min_length=digits, max_length=digits
        )
        return core_schema.no_info_plain_validator_function(
            self._validate,
            json_schema_input_schema=text,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _hex, when_used="json", return_schema=text
            ),
        )


def _hex(value: bytes) -> str:
    return value.hex()


HexChunkId: TypeAlias = Annotated[ChunkId, _HexId(ChunkId)]
HexTreeId: TypeAlias = Annotated[TreeId, _HexId(TreeId)]
HexCommitId: TypeAlias = Annotated[CommitId, _HexId(CommitId)]
HexContentHash: TypeAlias = Annotated[ContentHash, _HexId(ContentHash)]
HexNamespaceId: TypeAlias = Annotated[NamespaceId, _HexId(NamespaceId)]
HexLinkId: TypeAlias = Annotated[LinkId, _HexId(LinkId)]


# --- byte strings and paths on the wire -------------------------------------------------
#
# A byte string (a name, a symlink target, an xattr name or value, a whole path) travels
# as a JSON string when it is valid UTF-8, which is nearly always, and otherwise as
# {"b64": "<standard base64, padded>"}. Senders use the string form whenever they can;
# receivers accept either. Every byte sequence round-trips exactly.

WireBytesJson: TypeAlias = str | dict[str, str]


def encode_wire_bytes(raw: bytes) -> WireBytesJson:
    """The JSON form of a byte string."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(raw).decode("ascii")}


def decode_wire_bytes(value: object) -> bytes:
    """A byte string from its JSON form (or from bytes, in Python); ``BadRequestError``."""
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequestError("a string holds a lone surrogate") from exc
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        text = value["b64"]
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequestError(f"not base64: {text[:40]!r}") from exc
        if base64.b64encode(raw).decode("ascii") != text:
            raise BadRequestError(f"not canonical base64: {text[:40]!r}")
        return raw
    raise BadRequestError('a byte string is a JSON string or {"b64": "..."}')


def _wire_bytes_json_schema() -> core_schema.CoreSchema:
    b64 = core_schema.typed_dict_field(core_schema.str_schema())
    return core_schema.union_schema(
        [
            core_schema.str_schema(),
            core_schema.typed_dict_schema({"b64": b64}, extra_behavior="forbid"),
        ]
    )


class _AsWireBytes:
    """Annotation marker: a Python value that travels as a byte string in JSON, in the
    ``encode_wire_bytes`` form (``decode`` parses it, ``encode`` writes it)."""

    def __init__(
        self, decode: Callable[[object], Any], encode: Callable[[Any], WireBytesJson]
    ) -> None:
        self._decode = decode
        self._encode = encode

    def _validate(self, value: object) -> object:
        try:
            return self._decode(value)
        except ProtocolError as exc:
            raise _pydantic_error(exc) from exc

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        wire = _wire_bytes_json_schema()
        return core_schema.no_info_plain_validator_function(
            self._validate,
            json_schema_input_schema=wire,
            serialization=core_schema.plain_serializer_function_ser_schema(
                self._encode, when_used="json", return_schema=wire
            ),
        )


WireBytes: TypeAlias = Annotated[bytes, _AsWireBytes(decode_wire_bytes, encode_wire_bytes)]


def validate_name(name: bytes) -> bytes:
    """A file name as the format allows it, or ``InvalidNameError``; returns the name."""
    try:
        _validate_format_name(name)
    except FormatError as exc:
        raise InvalidNameError(str(exc)) from exc
    return name


def path_from_wire(value: object) -> DrivePath:
    """A path from its JSON form (or a ``DrivePath``); ``InvalidNameError`` if refused."""
    if isinstance(value, DrivePath):
        return value
    try:
        raw = decode_wire_bytes(value)
    except BadRequestError as exc:
        raise InvalidNameError(f"bad path: {exc.message}") from exc
    try:
        return DrivePath.from_bytes(raw)
    except InvalidPathError as exc:
        raise InvalidNameError(str(exc)) from exc


def path_to_wire(path: DrivePath) -> WireBytesJson:
    return encode_wire_bytes(bytes(path))


# A ``store.paths.DrivePath`` in Python, its bytes in the ``encode_wire_bytes`` form in JSON.
WirePath: TypeAlias = Annotated[DrivePath, _AsWireBytes(path_from_wire, path_to_wire)]
