"""``/.versions``: the names of the retained snapshots, one folder per commit.

Pure: the layers list the commits (``ViewBase._refresh_versions``) and name them here.
"""

from __future__ import annotations

import time


def version_names(times_ns: list[int]) -> list[str]:
    """Directory names for commits at ``times_ns`` (oldest first): their UTC second as
    ``YYYY-MM-DDTHH-MM-SSZ``, the second and later commit of one second with ``.2``, ``.3``
    ... (so a name, once given, stays the same when newer commits arrive)."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for time_ns in times_ns:
        base = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(time_ns // 1_000_000_000))
        count = seen.get(base, 0) + 1
        seen[base] = count
        names.append(base if count == 1 else f"{base}.{count}")
    return names
