"""Reading a prediction request's image: the raw body or a multipart form's ``file``, refused as
soon as it passes the size limit (never buffered beyond it)."""

# Real annotations (no `from __future__ import annotations`), as in app.py.

from typing import Any

from fastapi import Request

from autopetl.serving.images import ALLOWED_CONTENT_TYPES, ImageError


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` (never buffered beyond it)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ImageError(400, "bad_content_length", "Content-Length is not a number") from None
        if size > limit:
            raise ImageError(413, "body_too_large", f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ImageError(413, "body_too_large", f"the body is over {limit} bytes")
    return bytes(body)


async def image_bytes(request: Request, limit: int) -> bytes:
    """The image of a request: the raw body, or the ``file`` field of a multipart form."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ALLOWED_CONTENT_TYPES:
        return await _read_body(request, limit)
    if media == "multipart/form-data":
        body = await _read_body(request, limit)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
        except Exception as exc:  # Starlette's parser raises HTTPException or MultiPartException
            detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
            raise ImageError(
                400, "invalid_form", f"cannot parse the multipart form: {detail}"
            ) from None
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ImageError(
                    400, "missing_file", "the multipart form needs the image in the field `file`"
                )
            return await upload.read()
        finally:
            await form.close()
    if not media:
        raise ImageError(
            415, "missing_content_type", "set Content-Type to the image's type or multipart"
        )
    raise ImageError(
        415,
        "unsupported_media_type",
        f"Content-Type {media} is not accepted; send {', '.join(sorted(ALLOWED_CONTENT_TYPES))} "
        f"or multipart/form-data with the field `file`",
    )
