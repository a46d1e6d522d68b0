"""Plain-data encoding for values that cross between the candidate and the referee.

The referee must never hold an object the candidate built: such an object could carry an `__eq__`
that always says True. So values cross as tagged JSON and are rebuilt on the other side from
built-in types only. Subclasses (namedtuple, IntEnum, OrderedDict, ...) are coerced to their base
type with the base type's own methods, which is what a legitimate comparison would see anyway.

Runs inside the container under the system python3. Both sides import it; only the referee's copy
is trusted, and it treats what the candidate sends as hostile: frames are size-capped, text is
parsed by `ast.literal_eval` (literals only, never code), values are depth-bounded and rebuilt from
a whitelist of types. The candidate's side imports nothing beyond builtins (`marshal` is built in),
because its interpreter starts fresh for every job and `json`/`re` cost more than the job.

Wire: frames of a 4-byte big-endian length + payload. Referee -> candidate payloads are `marshal`
dumps (trusted data, the fastest decoder there is); candidate -> referee payloads are the `repr`
of a message built only from str/list/dict/None/bool.
"""

import marshal

MAX_DEPTH = 64


class CodecError(ValueError):
    """The value cannot cross as plain data (or the bytes received are not valid plain data)."""


def encode(value: object, depth: int = 0) -> object:
    """Turn a value into JSON-able tagged data. Strings are bare; every other kind is a tagged list."""
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    d = depth + 1
    # Exact types first; bool before int because bool is an int.
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):  # a bool subclass cannot exist, but be exact anyway
        return bool(int.__index__(value))
    if isinstance(value, int):
        return ["i", int.__repr__(value)]
    if isinstance(value, float):
        return ["f", float.__repr__(value)]
    if isinstance(value, complex):
        return [
            "c",
            float.__repr__(complex.real.__get__(value)),
            float.__repr__(complex.imag.__get__(value)),
        ]
    if isinstance(value, (bytes, bytearray)):
        return ["b", bytes(value).hex()]
    if isinstance(value, tuple):
        return ["t", [encode(v, d) for v in tuple.__iter__(value)]]
    if isinstance(value, list):
        return ["l", [encode(v, d) for v in list.__iter__(value)]]
    if isinstance(value, dict):
        return ["d", [[encode(k, d), encode(v, d)] for k, v in dict.items(value)]]
    if isinstance(value, frozenset):
        return ["z", [encode(v, d) for v in frozenset.__iter__(value)]]
    if isinstance(value, set):
        return ["s", [encode(v, d) for v in set.__iter__(value)]]
    raise CodecError(f"cannot pass a {type(value).__name__!s} as plain data")


def decode(data: object, depth: int = 0) -> object:
    """Rebuild a value from tagged data using built-in constructors only."""
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    d = depth + 1
    if data is None or data is True or data is False or type(data) is str:
        return data
    if type(data) is not list or len(data) < 2 or type(data[0]) is not str:
        raise CodecError("malformed value")
    tag, body = data[0], data[1]
    if tag == "i" and type(body) is str and len(body) < 100_000:
        return int(body)
    if tag == "f" and type(body) is str and len(body) < 64:
        return float(body)
    if tag == "c" and len(data) == 3 and type(body) is str and type(data[2]) is str:
        return complex(float(body), float(data[2]))
    if tag == "b" and type(body) is str:
        return bytes.fromhex(body)
    if type(body) is not list:
        raise CodecError("malformed value")
    if tag == "t":
        return tuple(decode(v, d) for v in body)
    if tag == "l":
        return [decode(v, d) for v in body]
    if tag == "d":
        out = {}
        for pair in body:
            if type(pair) is not list or len(pair) != 2:
                raise CodecError("malformed dict item")
            out[_hashable(decode(pair[0], d))] = decode(pair[1], d)
        return out
    if tag == "s":
        return {_hashable(decode(v, d)) for v in body}
    if tag == "z":
        return frozenset(_hashable(decode(v, d)) for v in body)
    raise CodecError(f"unknown tag {tag!r}")


def _hashable(value: object) -> object:
    try:
        hash(value)
    except TypeError as exc:
        raise CodecError("unhashable key") from exc
    return value


def write_frame(stream, payload: bytes) -> None:
    stream.write(len(payload).to_bytes(4, "big") + payload)
    stream.flush()


def read_frame(stream, limit: int) -> bytes | None:
    """One frame's payload; None at end of stream. Raises CodecError past `limit` bytes."""
    header = stream.read(4)
    if len(header) < 4:
        return None
    size = int.from_bytes(header, "big")
    if size > limit:
        raise CodecError(f"frame of {size} bytes exceeds the limit of {limit}")
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return payload


def pack_trusted(message: dict) -> bytes:
    return marshal.dumps(message)


def unpack_trusted(payload: bytes) -> dict:
    return marshal.loads(payload)


def pack_untrusted(message: dict) -> bytes:
    return repr(message).encode("utf-8", "surrogatepass")


def unpack_untrusted(payload: bytes) -> dict:
    """Parse a message from the candidate: Python literals only, never code."""
    import ast

    try:
        message = ast.literal_eval(payload.decode("utf-8", "surrogatepass"))
    except (
        ValueError,
        SyntaxError,
        TypeError,
        MemoryError,
        RecursionError,
        UnicodeDecodeError,
    ) as exc:
        raise CodecError(f"not a valid message: {type(exc).__name__}") from None
    if type(message) is not dict:
        raise CodecError("message is not a dict")
    return message
