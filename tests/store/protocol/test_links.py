"""Share links on the wire: sub-paths under a token, byte ranges and the chunks they span,
the download headers, HTTP Basic passwords, upload names and the link routes' templates."""

from __future__ import annotations

import base64

import pytest

from store import protocol as p
from store.ids import LinkId
from store.paths import DrivePath

TOKEN = "abcdefghijklmnopqrstuv"  # noqa: S105  (a test token)


@pytest.mark.parametrize(
    "raw, names",
    [
        (b"", None),
        (b"/", None),
        (b"a.txt", (b"a.txt",)),
        (b"docs/", (b"docs",)),
        (b"a%20b/c%3Cd%3E/%C3%A9", (b"a b", b"c<d>", "é".encode())),
        (b"%FF", (b"\xff",)),  # not UTF-8: still a name the drive can hold
    ],
)
def test_a_sub_path_is_parsed_one_percent_encoded_name_at_a_time(
    raw: bytes, names: tuple[bytes, ...] | None
) -> None:
    parsed = p.parse_link_subpath(raw)
    assert (parsed.components if parsed else None) == names


@pytest.mark.parametrize(
    "raw",
    [
        b"..", b"a/..", b"%2e%2e/x", b"a/%2E%2E", b".", b"./a", b"a%2Fb", b"a%2fb", b"a%00b",
        b"a//b", b"//", b"x" * 256, b"/".join([b"d"] * 300),
    ],
)  # fmt: skip
def test_a_hostile_sub_path_is_refused_as_an_invalid_name(raw: bytes) -> None:
    with pytest.raises(p.InvalidNameError):
        p.parse_link_subpath(raw)


def test_a_sub_path_url_round_trips_through_the_parser() -> None:
    path = DrivePath([b"a b", b"100%", b"?#&", "ü".encode(), b"\xfe"])
    url = p.LINK_SUBPAGE.fill(token=TOKEN, subpath=path)
    assert url.startswith(f"/l/{TOKEN}/")
    assert "?" not in url and "#" not in url and " " not in url
    rest = url.removeprefix(f"/l/{TOKEN}/").encode()
    assert p.parse_link_subpath(rest) == path


def test_the_link_templates_take_only_their_own_types() -> None:
    assert p.LINK_PAGE.fill(token=TOKEN) == f"/l/{TOKEN}"
    link_id = LinkId(bytes(range(16)))
    assert p.REVOKE_LINK.fill(link_id=link_id) == f"/v1/links/{link_id.hex()}"
    with pytest.raises(ValueError, match="token"):
        p.LINK_PAGE.fill(token="short")  # noqa: S106
    with pytest.raises(ValueError, match="token"):
        p.LINK_PAGE.fill(token="../../v1/accounts/me/x")  # noqa: S106
    with pytest.raises(TypeError):
        p.REVOKE_LINK.fill(link_id=link_id.hex())
    with pytest.raises(TypeError):
        p.LINK_SUBPAGE.fill(token=TOKEN, subpath="a/b")
    assert all(not route.auth for route in p.LINK_ROUTES)
    assert all(route.auth for route in p.LINK_MANAGEMENT_ROUTES)
    assert set(p.LINK_ROUTES) <= set(p.ROUTES)


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, None),
        ("bytes=0-9", (0, 9)),
        ("bytes=10-", (10, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-1000", (0, 99)),
        ("bytes=50-5000", (50, 99)),
        ("bytes=99-99", (99, 99)),
        (" Bytes = 1 - 2 ", (1, 2)),
        ("bytes=5-1", None),  # malformed: the whole file
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_a_range_header_names_one_range_or_the_whole_file(
    header: str | None, expected: tuple[int, int] | None
) -> None:
    byte_range = p.parse_range(header, 100)
    assert (None if byte_range is None else (byte_range.start, byte_range.end)) == expected


@pytest.mark.parametrize("header, size", [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)])
def test_a_range_past_the_end_is_not_satisfiable(header: str, size: int) -> None:
    with pytest.raises(p.RangeNotSatisfiableError) as raised:
        p.parse_range(header, size)
    assert raised.value.detail["size"] == size
    assert p.status_for(raised.value.code) == 416
    assert p.unsatisfiable_content_range(size) == f"bytes */{size}"


def test_a_range_maps_to_the_chunks_that_hold_it() -> None:
    lengths = (10, 20, 30)
    assert p.chunk_span(lengths, 0, 59) == [(0, 0, 10), (1, 0, 20), (2, 0, 30)]
    assert p.chunk_span(lengths, 5, 14) == [(0, 5, 5), (1, 0, 5)]
    assert p.chunk_span(lengths, 10, 29) == [(1, 0, 20)]
    assert p.chunk_span(lengths, 59, 59) == [(2, 29, 1)]
    assert p.chunk_span(lengths, 12, 45) == [(1, 2, 18), (2, 0, 16)]
    data = bytes(range(60))
    for start, end in [(0, 0), (3, 41), (29, 30), (0, 59)]:
        pieces, position = [], 0
        chunks = []
        for length in lengths:
            chunks.append(data[position : position + length])
            position += length
        for index, offset, count in p.chunk_span(lengths, start, end):
            pieces.append(chunks[index][offset : offset + count])
        assert b"".join(pieces) == data[start : end + 1]


def test_content_disposition_cannot_be_broken_by_a_name() -> None:
    header = p.content_disposition(b'evil"; filename="x.exe\r\nSet-Cookie: a=b\\.txt')
    assert "\r" not in header and "\n" not in header
    fallback = header.split("; filename*=")[0]
    assert fallback.count('"') == 2
    assert header.endswith(
        "filename*=UTF-8''evil%22%3B%20filename%3D%22x.exe%0D%0ASet-Cookie%3A%20a%3Db%5C.txt"
    )
    assert p.content_disposition("résumé.pdf".encode()) == (
        "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    )


def test_an_entity_tag_matches_if_none_match_lists() -> None:
    tag = p.entity_tag(bytes(32))
    assert tag == '"' + "00" * 32 + '"'
    assert p.matches_entity_tag(tag, tag)
    assert p.matches_entity_tag(f'"other", W/{tag}', tag)
    assert p.matches_entity_tag("*", tag)
    assert not p.matches_entity_tag(None, tag)
    assert not p.matches_entity_tag('"other"', tag)


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_basic_credentials_give_their_password_and_anything_else_none() -> None:
    assert p.parse_basic_password(basic(":open sesame")) == "open sesame"
    assert p.parse_basic_password(basic("anyone:pass:with:colons")) == "pass:with:colons"
    assert p.parse_basic_password(basic("no-colon")) is None
    assert p.parse_basic_password(basic("user:")) is None
    assert p.parse_basic_password("Bearer abc") is None
    assert p.parse_basic_password("Basic !!!not-base64") is None
    assert p.parse_basic_password(None) is None


def test_an_upload_keeps_the_last_name_a_browser_sent() -> None:
    assert p.upload_name("report.pdf") == b"report.pdf"
    assert p.upload_name("C:\\Users\\me\\report.pdf") == b"report.pdf"
    assert p.upload_name("../../etc/passwd") == b"passwd"
    for bad in ["", None, "dir/", "..", "a\0b", "x" * 256]:
        with pytest.raises(p.InvalidNameError):
            p.upload_name(bad)


def test_a_link_request_is_bounded() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        p.LinkCreateRequest(password="short")  # noqa: S106
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        p.LinkCreateRequest(expires_in_s=0)
    secret = "long enough secret"  # noqa: S105
    assert secret not in repr(p.LinkCreateRequest(password=secret))
    assert p.is_link_token(TOKEN)
    assert not p.is_link_token(TOKEN + "x")
