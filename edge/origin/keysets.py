"""JWKS for `[auth] type = "jwt"` at the origin: checked at upload, fetched, refreshed, shipped.

A bundle's `jwks_file` is checked when it is uploaded; a `jwks_url` is fetched then (an upload
whose URL does not answer with a usable key set is refused) and stored by URL. The desired state
carries, per function, the stored key set of every `jwks_url` its releases name, so nodes verify
tokens without reaching out. Every `jwks_refresh_s` the origin fetches each URL in use again; a
changed key set is stored and published as a new revision (a failed fetch keeps the last good one
and is logged).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from edge import bundle
from edge.control.jwks import JwksError, fetch_jwks, parse_jwks
from edge.origin.service import Origin
from isolates.manifest import MANIFEST_NAME, Manifest

__all__ = ["check_upload", "refresh", "refresh_forever"]

log = logging.getLogger("edge.origin")


def check_upload(path: Path, manifest: Manifest, limits: bundle.Limits) -> tuple[str, str] | None:
    """Check an uploaded bundle's key set; returns (jwks_url, key set) to store, if it names a URL.

    Blocking (reads the archive, fetches the URL). Raises BundleError naming edge.toml and the key.
    """
    auth = manifest.auth
    if auth is None or auth.type != "jwt":
        return None
    try:
        if auth.jwks_url:
            data = fetch_jwks(auth.jwks_url)
            parse_jwks(data, f"{MANIFEST_NAME}: `$.auth.jwks_url` {auth.jwks_url}")
            return auth.jwks_url, data.decode()
        content = bundle.read_member(path.read_bytes(), auth.jwks_file, limits)
        if content is None:
            raise bundle.BundleError(
                f"{MANIFEST_NAME}: `$.auth.jwks_file` {auth.jwks_file!r} is not in the bundle;"
                " put the JWKS file beside edge.toml"
            )
        parse_jwks(content, f"{MANIFEST_NAME}: `$.auth.jwks_file` {auth.jwks_file}")
    except JwksError as exc:
        message = str(exc)
        if not message.startswith(MANIFEST_NAME):
            message = f"{MANIFEST_NAME}: `$.auth.jwks_url`: {message}; make the URL answer with the JWKS"
        raise bundle.BundleError(message) from None
    except UnicodeDecodeError:
        raise bundle.BundleError(
            f"{MANIFEST_NAME}: `$.auth.jwks_url` {auth.jwks_url}: not UTF-8 JSON"
        ) from None
    return None


async def refresh(origin: Origin) -> int:
    """Fetch every `jwks_url` in use once; returns how many key sets changed (each bumps the revision)."""
    changed = 0
    for url in sorted(origin.jwks_urls()):
        try:
            data = await asyncio.to_thread(fetch_jwks, url)
            parse_jwks(data, url)
            body = data.decode()
        except (JwksError, UnicodeDecodeError) as exc:
            log.error("jwks refresh: keeping the last key set of %s: %s", url, exc)
            continue
        if origin.update_jwks(url, body):
            log.info("jwks refresh: %s changed; published as revision %d", url, origin.revision)
            changed += 1
    return changed


async def refresh_forever(origin: Origin, interval: float) -> None:
    """`refresh` every `interval` seconds until cancelled (the origin's lifespan runs it)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await refresh(origin)
        except Exception:  # a bad moment must not end the refreshing
            log.exception("jwks refresh")
