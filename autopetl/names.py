"""User-given names (searches, trials) as folder names."""

from __future__ import annotations


def folder_name(name: str) -> str:
    """A name as one folder: ASCII letters, digits, ``-`` and ``_`` kept, every other byte of
    its UTF-8 as ``%XX``.

    Injective (``%`` itself is encoded, so two names never share a folder: ``a/b`` and ``a_b``
    did once) and never a path: no ``/``, no ``..``, never empty.
    """
    if not name:
        return "%"  # a real name's % is always %25: a bare one is only the empty name
    return "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-_") else f"%{b:02X}"
        for b in name.encode()
    )
