"""Reading a namespace's head through the API, for tests that check what reached the server."""

from __future__ import annotations

from boxfs.remote import Remote
from store.ids import NamespaceId, TreeId
from store.objects import EntryKind, FileEntry, decode_commit, decode_tree


async def head_entries(remote: Remote, namespace: NamespaceId) -> dict[bytes, FileEntry]:
    """Every path of the head's tree (directories included), by walking it via the API."""
    head = await remote.head(namespace)
    if head.head is None:
        return {}
    commit_bytes = (await remote.commits(namespace, [head.head]))[head.head]
    assert commit_bytes is not None
    found: dict[bytes, FileEntry] = {}
    pending: list[tuple[bytes, TreeId]] = [(b"", decode_commit(commit_bytes, head.head).root)]
    while pending:
        prefix, tree_id = pending.pop()
        data = (await remote.trees(namespace, [tree_id]))[tree_id]
        assert data is not None
        for entry in decode_tree(data, tree_id):
            found[prefix + entry.name] = entry
            if entry.kind is EntryKind.DIR:
                assert entry.tree_id is not None
                pending.append((prefix + entry.name + b"/", entry.tree_id))
    return found
