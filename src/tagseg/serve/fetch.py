"""Fetch an image from an http(s) URL without letting a client reach what it should not.

Every hop (redirects included) is checked: scheme, host allow-list, and every address the host
resolves to must be public unless private addresses are allowed. The connection goes to the
address that was checked (no second DNS lookup to rebind), with the original name for TLS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from tagseg.serve.errors import ApiError

if TYPE_CHECKING:
    import httpx

MAX_REDIRECTS = 3


@dataclass(frozen=True)
class FetchPolicy:
    """Which URLs may be fetched, and how much and how long."""

    allow_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    timeout: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    trusted_origin: str | None = None
    trusted_headers: tuple[tuple[str, str], ...] = ()


def host_allowed(host: str, allow_hosts: tuple[str, ...]) -> bool:
    """Whether ``host`` is on the allow-list (empty list: every host); ``*.x.org`` matches sub-domains."""
    if not allow_hosts:
        return True
    host = host.lower().rstrip(".")
    for entry in allow_hosts:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return True
        if host == entry:
            return True
    return False


def address_is_public(address: str) -> bool:
    """Whether an IP address is globally routable (not private, loopback, link-local, reserved, ...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{parts.port or _default_port(parts.scheme)}"


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


async def fetch_image_bytes(url: str, policy: FetchPolicy) -> bytes:
    """The body of ``url`` (at most ``policy.max_bytes``), or an :class:`ApiError` saying why not."""
    try:
        return await asyncio.wait_for(_fetch(url, policy), policy.timeout)
    except (TimeoutError, asyncio.TimeoutError):
        raise ApiError(504, "url_fetch_timeout", f"Fetching the image URL took longer than {policy.timeout:g} s.") from None


async def _fetch(url: str, policy: FetchPolicy) -> bytes:
    import httpx

    async with httpx.AsyncClient(follow_redirects=False, timeout=policy.timeout, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            request = await _pinned_request(client, url, policy)
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as error:
                raise ApiError(502, "url_fetch_failed", f"The image URL could not be fetched: {error}") from None
            try:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise ApiError(502, "url_fetch_failed", f"The image URL answered HTTP {response.status_code}.")
                return await _read_limited(response, policy.max_bytes)
            except httpx.HTTPError as error:
                raise ApiError(502, "url_fetch_failed", f"Reading the image URL failed: {error}") from None
            finally:
                await response.aclose()
    raise ApiError(502, "url_fetch_failed", f"The image URL redirected more than {MAX_REDIRECTS} times.")


async def _pinned_request(client: httpx.AsyncClient, url: str, policy: FetchPolicy) -> httpx.Request:
    """A request to the checked address of ``url``'s host, or :class:`ApiError` if the URL is refused."""
    try:
        parts = urlsplit(url)
        explicit_port = parts.port
    except ValueError as error:
        raise ApiError(400, "url_refused", f"The URL is malformed: {error}.") from None
    if parts.scheme not in ("http", "https"):
        raise ApiError(400, "url_refused", f"Only http and https URLs are fetched, not {parts.scheme or 'this'!r}.")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ApiError(400, "url_refused", "The URL needs a host name and must not carry credentials.")
    host = parts.hostname
    port = explicit_port or _default_port(parts.scheme)
    trusted = policy.trusted_origin is not None and _origin(url) == _origin(policy.trusted_origin)
    if not trusted and not host_allowed(host, policy.allow_hosts):
        raise ApiError(400, "url_refused", f"Host {host!r} is not on this server's allow-list.")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ApiError(502, "url_fetch_failed", f"Host {host!r} could not be resolved.") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not trusted and not policy.allow_private and not all(address_is_public(a) for a in addresses):
        raise ApiError(400, "url_refused", f"Host {host!r} resolves to a private, loopback or reserved address.")
    address = addresses[0]
    netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    target = parts._replace(netloc=netloc, fragment="").geturl()
    # Label Studio's media views answer 406 to a bare ``image/*``; any type is acceptable as a fallback.
    headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept": "image/*, */*;q=0.8"}
    if trusted:
        headers.update(policy.trusted_headers)
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return client.build_request("GET", target, headers=headers, extensions=extensions)


async def _read_limited(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, "image_too_large", f"The image at the URL is larger than {max_bytes:,} bytes.")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, "image_too_large", f"The image at the URL is larger than {max_bytes:,} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)
