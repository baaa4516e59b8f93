"""Reading a message off the broker: decode it once into its struct, or refuse
it with a reason a person can act on (:class:`MalformedMessage`, which the
consumers put on the dead-letter queue).

Before the body, a consumer checks what the broker says about it: its content
type must be JSON, its encoding UTF-8, and its size at most
:data:`MAX_BODY_BYTES`. msgspec then parses and validates in one pass. It
refuses JSON's ``NaN``/``Infinity``, numbers past a float's range, invalid
UTF-8 in any value it reads, strings holding lone UTF-16 surrogates and
nesting past the interpreter's recursion limit; those all parse in Python's
``json`` but nothing downstream (the database, the next JSON encoder) can
carry them. Only when a body is refused does this module look at it again, to
say why in the order a person would fix it: bytes, syntax, shape, version,
then the field that breaks its type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from tether.common import claims, messages
from tether.common.exceptions import MalformedMessage

#: Largest body a consumer reads. Work carries a whole resource tree, but the
#: API takes at most 1 MiB per change; past this, parsing alone would cost a
#: consumer more memory and time than any real message needs.
MAX_BODY_BYTES = 8 * 1024 * 1024

#: What tether's publishers set; absent is accepted for hand-made messages.
CONTENT_TYPE = "application/json"
#: kombu labels raw bytes "binary"; tether reads them as UTF-8 all the same.
_CONTENT_ENCODINGS = frozenset({"utf-8", "utf8", "binary"})

_WORK_DECODER = msgspec.json.Decoder(messages.Work)
_RESULT_DECODER = msgspec.json.Decoder(messages.Result)


class _Results(msgspec.Struct, frozen=True, kw_only=True):
    """A ``results`` message as read: each result still to be decoded."""

    version: int
    kind: Literal["results"]
    results: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=messages.MAX_RESULTS)]


_RESULTS_DECODER = msgspec.json.Decoder(_Results)
_CLAIMS_DECODER = msgspec.json.Decoder(claims.ClaimRequest)
_CLAIM_DECODER = msgspec.json.Decoder(claims.Claim)
_CLAIM_REPLY_DECODER = msgspec.json.Decoder(claims.ClaimReply)

M = TypeVar("M", messages.Work, messages.Result, _Results, claims.ClaimRequest, claims.ClaimReply)

# msgspec's wording: "<what> - at `$.task.attempt`", or no suffix at the top.
_AT = re.compile(r"^(?P<what>.*?)(?: - at `(?P<where>[^`]*)`)?$", re.DOTALL)
_TOP_LEVEL_TYPE = re.compile(r"^Expected `object`, got `(?P<type>\w+)`$")
_JSON_TYPES = {"array": "array", "str": "string", "int": "number", "float": "number", "bool": "boolean"}
_BYTE = re.compile(r"\(byte (\d+)\)")


def decode_work(
    raw: bytes | str, content_type: str | None = None, content_encoding: str | None = None
) -> messages.Work:
    """The work a message carries.

    :raises MalformedMessage: saying what is wrong with it.
    """
    return _decode(raw, _WORK_DECODER, "work", content_type, content_encoding, messages.WORK_VERSIONS)


def decode_result(
    raw: bytes | str, content_type: str | None = None, content_encoding: str | None = None
) -> messages.Result:
    """The result a message carries.

    :raises MalformedMessage: saying what is wrong with it.
    """
    return _decode(raw, _RESULT_DECODER, "result", content_type, content_encoding)


def decode_results(
    raw: bytes | str, content_type: str | None = None, content_encoding: str | None = None
) -> list[msgspec.Raw]:
    """The results a ``results`` message carries, each still to be read by
    :func:`decode_batched_result`: one malformed result is refused alone.

    :raises MalformedMessage: saying what is wrong with the message.
    """
    return _decode(raw, _RESULTS_DECODER, "results", content_type, content_encoding).results


def decode_batched_result(raw: msgspec.Raw, index: int) -> messages.Result:
    """:raises MalformedMessage: naming the result and what is wrong with it."""
    return _decode(bytes(raw), _RESULT_DECODER, f"results[{index}] of the results", None, None)


def decode_claims(
    raw: bytes | str, content_type: str | None = None, content_encoding: str | None = None
) -> list[msgspec.Raw]:
    """The claims a claims request carries, each still to be read by
    :func:`decode_claim`: one malformed claim is refused alone.

    :raises MalformedMessage: saying what is wrong with the request.
    """
    request = _decode(raw, _CLAIMS_DECODER, "claims", content_type, content_encoding, claims.KNOWN_VERSIONS)
    return request.claims


def decode_claim(raw: msgspec.Raw, index: int) -> claims.Claim:
    """:raises MalformedMessage: naming the claim and the field it breaks."""
    try:
        return _CLAIM_DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise MalformedMessage(reason=f"claims[{index}] of the claims message {_breaks(str(exc))}") from exc


def decode_claim_reply(raw: bytes | str) -> list[claims.ClaimAnswer]:
    """:raises MalformedMessage: saying what is wrong with the reply."""
    return _decode(raw, _CLAIM_REPLY_DECODER, "claim reply", None, None, claims.KNOWN_VERSIONS).answers


def check_content(kind: str, content_type: str | None, content_encoding: str | None) -> None:
    """Refuse a message whose properties say it is not UTF-8 JSON.

    :raises MalformedMessage: naming the property, its value and what tether sends.
    """
    if content_type:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != CONTENT_TYPE:
            raise MalformedMessage(
                reason=f"the {kind} message has content type {content_type[:100]!r}; "
                f"tether reads only {CONTENT_TYPE}"
            )
    if content_encoding and content_encoding.strip().lower() not in _CONTENT_ENCODINGS:
        raise MalformedMessage(
            reason=f"the {kind} message has content encoding {content_encoding[:100]!r}; "
            "tether reads only UTF-8"
        )


def undecodable_reason(kind: str, headers: dict[str, Any] | None, exc: Exception) -> str:
    """Why the broker client could not hand a message over, for its dead-letter header."""
    compression = (headers or {}).get("compression")
    hint = (
        f"; its 'compression' header says {_shorten(str(compression), 100)!r}, "
        "but tether never compresses messages"
        if compression
        else ""
    )
    return f"the {kind} message cannot be decoded ({type(exc).__name__}: {_shorten(str(exc))}){hint}"


def _decode(
    raw: bytes | str,
    decoder: msgspec.json.Decoder[M],
    kind: str,
    content_type: str | None,
    content_encoding: str | None,
    known: frozenset[int] = messages.KNOWN_VERSIONS,
) -> M:
    check_content(kind, content_type, content_encoding)
    size = len(raw.encode(errors="surrogatepass") if isinstance(raw, str) else raw)
    if size > MAX_BODY_BYTES:
        raise MalformedMessage(
            reason=f"the {kind} message is {size} bytes, more than the {MAX_BODY_BYTES} "
            "a consumer reads; nothing tether publishes is that large"
        )
    try:
        message = decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeEncodeError) as exc:
        raise MalformedMessage(reason=_refusal(kind, raw, exc, known)) from exc
    if message.version not in known:
        raise MalformedMessage(reason=_version_reason(kind, message.version, known))
    if not isinstance(message, messages.Work | messages.Result):
        return message
    missing = messages.unstated(message)
    if missing == "version":
        raise MalformedMessage(reason=_version_reason(kind, None, known))
    if missing is not None:
        raise MalformedMessage(
            reason=f"the {kind} message breaks its schema at $: Object missing required field `{missing}`"
        )
    return message


def _refusal(kind: str, raw: bytes | str, exc: Exception, known: frozenset[int]) -> str:
    """Why msgspec refused ``raw``, worded as a person would fix it."""
    if isinstance(exc, RecursionError):
        return f"the {kind} message is nested too deeply"
    try:
        data = raw.encode() if isinstance(raw, str) else raw
        data.decode("utf-8")
    except UnicodeError as error:
        # Strict: tether sends UTF-8 only, never UTF-16, UTF-32 or encoded surrogates.
        return f"the {kind} message is not JSON: its bytes are not UTF-8 ({error})"
    if not data.strip():
        return f"the {kind} message is empty"
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return _syntax_reason(kind, data, text)
    what, where = _split(text)
    top = _TOP_LEVEL_TYPE.match(what) if where == "$" else None
    if top:
        return f"the {kind} message is not a JSON object but a JSON {_JSON_TYPES.get(top['type'], 'null')}"
    try:
        body = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        body = None
    if isinstance(body, dict):
        version = body.get("version")
        if type(version) is not int or version not in known:
            return _version_reason(kind, version, known)
    return f"the {kind} message {_breaks(text)}"


def _breaks(text: str) -> str:
    """msgspec's validation error as "breaks its schema at <path>: <what>"."""
    what, where = _split(text)
    # The one pattern in messages is Id's; its regex would mean little to a reader.
    if what.startswith("Expected `str` matching regex"):
        what = "Expected `str` without control characters (U+0000 to U+001F)"
    return f"breaks its schema at {where}: {_shorten(what)}"


def _syntax_reason(kind: str, data: bytes, text: str) -> str:
    # msgspec calls a lone surrogate followed by a quote an unexpected end of the escape.
    if "surrogate" in text or ("hex escape" in text and _lone_surrogate(data) is not None):
        where = _lone_surrogate(data)
        return (
            f"the {kind} message holds a lone UTF-16 surrogate in a string at {where or _shorten(text)}; "
            "such a string cannot be stored or sent on"
        )
    at = _BYTE.search(text)
    if at is not None:
        offset = int(at.group(1))
        # msgspec points past the sign of -Infinity.
        start = offset - 1 if data[offset - 1 : offset] == b"-" else offset
        for constant in (b"NaN", b"Infinity", b"-Infinity"):
            if data.startswith(constant, start):
                return (
                    f"the {kind} message is not JSON: {constant.decode()} is not a JSON number {at.group()}"
                )
    return f"the {kind} message is not JSON: {_shorten(text)}"


def _version_reason(kind: str, version: Any, known: frozenset[int]) -> str:
    if version is None:
        return (
            f"the {kind} message has no schema version; tether's messages carry "
            f"'version' (this process knows {sorted(known)})"
        )
    return (
        f"{kind} message schema version {_shorten(repr(version))} is unknown to this "
        f"process (it knows {sorted(known)}); upgrade it to read the message"
    )


def _split(text: str) -> tuple[str, str]:
    match = _AT.match(text)
    assert match is not None  # the pattern matches any text
    return match["what"], match["where"] or "$"


def _shorten(text: str, limit: int = 300) -> str:
    """Keep reasons readable (and headers small) when a value is huge."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _lone_surrogate(data: bytes) -> str | None:
    """The JSON path of the first string (key or value) with a lone surrogate."""
    try:
        # Python's json takes lone surrogates, which is what finding one needs.
        body = json.loads(data)
    except (ValueError, RecursionError):
        return None
    for path, text in _strings(body):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return path
    return None


def _strings(body: Any) -> Iterator[tuple[str, str]]:
    # Iterative: the body may be nested as deep as json.loads allows.
    stack: list[tuple[str, Any]] = [("$", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            yield path, value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield path, key
                name = key if key.isascii() and key.isidentifier() else ascii(key)
                stack.append((f"{path}.{_shorten(name, 60)}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
