"""The HTML of the share-link pages: a folder's listing, the password form, the file-request
form, and the page of an error (404, 410, 401, 429, ...).

Every name from the drive is escaped (``html.escape``) where it shows and percent-encoded
(``protocol.LINK_SUBPAGE.fill``) where it is a link, so no name can add markup, a script or
another URL. A page shows nothing outside the link's path: no namespace, no owner, no
path above the link's root; a file-request page shows no name at all. The pages run no
script (``protocol.PAGE_CSP``). Pure functions returning text: called by
``server.routes.links`` on the event loop.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Final

from store import protocol
from store.objects import EntryKind, FileEntry
from store.paths import DrivePath

_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;width:100%}td{padding:.25rem .5rem}"
    "td.size{text-align:right;color:#555}a{text-decoration:none}"
)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<meta name=robots content=noindex><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _href(token: str, path: DrivePath | None, *, folder: bool = False) -> str:
    if path is None:
        return protocol.LINK_PAGE.fill(token=token)
    url = protocol.LINK_SUBPAGE.fill(token=token, subpath=path)
    return url + "/" if folder else url


def _human(size_bytes: int) -> str:
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def listing_page(
    token: str, title_name: bytes, below: DrivePath | None, entries: Sequence[FileEntry]
) -> str:
    """A folder of a link: its subfolders and files, each a link under the token, and the
    whole folder as a zip. ``below`` is the folder's path under the link's root."""
    title = protocol.show_name(title_name) if title_name else "Shared folder"
    rows = []
    if below is not None:
        parent = DrivePath(below.components[:-1]) if len(below.components) > 1 else None
        rows.append(f'<tr><td><a href="{html.escape(_href(token, parent, folder=True))}">..</a>')
    for entry in entries:
        path = below.child(entry.name) if below is not None else DrivePath((entry.name,))
        folder = entry.kind is EntryKind.DIR
        shown = html.escape(protocol.show_name(entry.name)) + ("/" if folder else "")
        size = "" if folder else _human(entry.size)
        href = html.escape(_href(token, path, folder=folder))
        rows.append(f'<tr><td><a href="{href}">{shown}</a><td class=size>{size}')
    zip_href = html.escape(_href(token, below, folder=below is not None) + "?format=zip")
    body = (
        f"<h1>{html.escape(title)}</h1>\n"
        f'<p><a href="{zip_href}">Download everything as a zip</a></p>\n'
        f"<table>\n{chr(10).join(rows) or '<tr><td>(empty folder)'}\n</table>"
    )
    return _page(title, body)


def password_page(token: str, *, wrong: bool) -> str:
    action = html.escape(protocol.LINK_UNLOCK.fill(token=token))
    notice = "<p><strong>Wrong password.</strong></p>\n" if wrong else ""
    body = (
        "<h1>This link needs a password</h1>\n"
        f'{notice}<form method=post action="{action}">'
        f'<input type=password name="{protocol.PASSWORD_FIELD}" autofocus required '
        f"minlength={protocol.LINK_PASSWORD_MIN_CHARS} autocomplete=current-password> "
        "<button type=submit>Open</button></form>"
    )
    return _page("Password needed", body)


def upload_page(token: str, *, limit_bytes: int, received: int | None = None) -> str:
    """The file-request form. It names no file: not those in the folder, and not even
    those just sent (a conflicted copy's name would tell that a name was taken)."""
    action = html.escape(protocol.LINK_UPLOAD.fill(token=token))
    notice = ""
    if received is not None:
        files = f"{received} file" + ("s" if received != 1 else "")
        notice = f"<p><strong>Thank you: {files} received.</strong></p>\n"
    limit = _human(limit_bytes)
    body = (
        "<h1>Send files</h1>\n"
        f"{notice}<p>Files sent here go to the person who shared this page. "
        "You cannot see what is in the folder.</p>\n"
        f'<form method=post action="{action}" enctype="multipart/form-data">'
        f'<input type=file name="{protocol.UPLOAD_FIELD}" multiple required> '
        f"<button type=submit>Send</button></form>\n<p>Up to {limit} at once.</p>"
    )
    return _page("Send files", body)


_TITLES: Final[dict[str, str]] = {
    "not_found": "Not found",
    "gone": "This link is no longer available",
    "unauthorized": "Password needed",
    "rate_limited": "Too many attempts",
    "body_too_large": "Too large",
    "range_not_satisfiable": "Range not satisfiable",
    "conflict": "Not possible now",
}


def error_page(code: str, message: str) -> str:
    """The page of an error. A link that does not exist says only that; the message of a
    server error is never shown (``protocol.body_for`` already made it generic)."""
    title = _TITLES.get(code, "Something went wrong")
    if code == "not_found":
        message = "There is nothing here. The link may be mistyped, or what it shared is gone."
    return _page(title, f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(message)}</p>")
