"""HPACK (RFC 7541): the header blocks of ``snailjob.http2``.

``encode_headers`` writes every field as a literal without indexing (or a
static-table index), so what the peer must remember never depends on this
side.  ``HeaderDecoder`` reads what a peer sends: indexed fields, literals
with and without indexing, Huffman-coded strings and dynamic-table size
updates, with the table capped at the size this side advertises.

It is written here rather than taken from a package so that nothing logs
the headers it decodes (they can carry credentials) and so that the
native transport and server need no dependency.  What a peer cannot make
it do (each is a ``HeaderError``, which ends the connection): index past
the tables, grow the table beyond ``max_table``, decode to a header list
over ``max_list`` bytes (as RFC 7541 counts them), send an integer of more
than 4 continuation bytes, a string past the end of its block, a Huffman
string with the end-of-string symbol or bad padding.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Iterable, List, Tuple

Headers = List[Tuple[str, str]]

# RFC 7541, Appendix A: the names, and the values of the first 16 entries
_STATIC_NAMES = (
    ":authority :method :method :path :path :scheme :scheme :status :status :status :status :status :status "
    ":status accept-charset accept-encoding accept-language accept-ranges accept access-control-allow-origin "
    "age allow authorization cache-control content-disposition content-encoding content-language "
    "content-length content-location content-range content-type cookie date etag expect expires from host "
    "if-match if-modified-since if-none-match if-range if-unmodified-since last-modified link location "
    "max-forwards proxy-authenticate proxy-authorization range referer refresh retry-after server set-cookie "
    "strict-transport-security transfer-encoding user-agent vary via www-authenticate").split()
_STATIC_VALUES = ("", "GET", "POST", "/", "/index.html", "http", "https", "200", "204", "206", "304", "400",
                  "404", "500", "", "gzip, deflate")
STATIC: Tuple[Tuple[str, str], ...] = tuple(
    (name, _STATIC_VALUES[i] if i < len(_STATIC_VALUES) else "") for i, name in enumerate(_STATIC_NAMES))

# RFC 7541, Appendix B: the bit length of each symbol's code (0-255, then EOS), one base-32
# digit each.  The code is canonical, so the lengths alone give the codes.
_LENGTHS = ("dnsssssssoussussssssssusssssssss6aacd68baa8b8666555666666678f6ca"
            "d67777777777777777777777878djde6f56565666577666567655677777fbeds"
            "kmkkmmmnmnnnnnonoomnonnnnlmnmnnomlkmmnnlnmmolmnnllmlnmnnkmmmnmmn"
            "qqkjmnmpqqqrrqopjlqrrqrollqqsrrrkoklmllnmmppooqnqrqqrrrrrsrrrrrq"
            "u")
EOS = 256


def _huffman_tables() -> Tuple[List[int], List[int], List[int], List[int], List[Tuple[int, int]]]:
    lengths = [int(ch, 32) for ch in _LENGTHS]
    symbols = sorted(range(257), key=lambda s: (lengths[s], s))
    first, count, offset = [0] * 32, [0] * 32, [0] * 32
    code, previous = 0, lengths[symbols[0]]
    codes = [0] * 257
    for i, symbol in enumerate(symbols):
        length = lengths[symbol]
        if i:
            code = (code + 1) << (length - previous)
            previous = length
        if not count[length]:
            first[length], offset[length] = code, i
        count[length] += 1
        codes[symbol] = code
    short: List[Tuple[int, int]] = [(-1, 0)] * 256  # the next 8 bits -> (symbol, length) for codes of <= 8 bits
    for symbol in range(256):
        length = lengths[symbol]
        if length <= 8:
            base = codes[symbol] << (8 - length)
            for low in range(1 << (8 - length)):
                short[base | low] = (symbol, length)
    return first, count, offset, symbols, short


_FIRST, _COUNT, _OFFSET, _SYMBOLS, _SHORT = _huffman_tables()


class HeaderError(ValueError):
    """A header block that does not decode (a COMPRESSION_ERROR)."""


def huffman_decode(data: bytes) -> bytes:
    """A Huffman-coded string (RFC 7541, 5.2)."""
    bits = int.from_bytes(data, "big")
    total = len(data) * 8
    pos = 0
    out = bytearray()
    short = _SHORT
    while pos < total:
        left = total - pos
        if left >= 8:
            symbol, length = short[(bits >> (left - 8)) & 0xFF]
            if length:
                out.append(symbol)
                pos += length
                continue
        code = 0
        for length in range(1, 31):
            if pos >= total:  # the end: what was read must be padding (1 bits, fewer than 8)
                if length - 1 > 7 or code != (1 << (length - 1)) - 1:
                    raise HeaderError("a Huffman string with bad padding")
                return bytes(out)
            code = (code << 1) | ((bits >> (total - 1 - pos)) & 1)
            pos += 1
            index = code - _FIRST[length]
            if _COUNT[length] and 0 <= index < _COUNT[length]:
                symbol = _SYMBOLS[_OFFSET[length] + index]
                if symbol == EOS:
                    raise HeaderError("a Huffman string with the end-of-string symbol")
                out.append(symbol)
                break
    return bytes(out)


class HeaderDecoder:
    """The decoding side of one connection's header compression."""

    def __init__(self, max_table: int = 4096, max_list: int = 128 * 1024) -> None:
        self.max_table = max_table  # what this side advertised (SETTINGS_HEADER_TABLE_SIZE)
        self.max_list = max_list
        self._table: Deque[Tuple[str, str, int]] = deque()  # newest first: (name, value, size)
        self._size = 0
        self._limit = max_table  # the peer's current choice, at most max_table

    def decode(self, block: bytes) -> Headers:
        headers: Headers = []
        listed = 0
        pos, end = 0, len(block)
        while pos < end:
            byte = block[pos]
            if byte & 0x80:  # indexed field
                index, pos = _integer(block, pos, 7)
                name, value = self._entry(index)
            elif byte & 0xE0 == 0x20:  # dynamic table size update
                if headers:
                    raise HeaderError("a table size update after a header field")
                size, pos = _integer(block, pos, 5)
                if size > self.max_table:
                    raise HeaderError(f"a table size of {size} (at most {self.max_table})")
                self._limit = size
                self._evict(0)
                continue
            else:
                indexing = bool(byte & 0x40)
                index, pos = _integer(block, pos, 6 if indexing else 4)
                if index:
                    name = self._entry(index)[0]
                else:
                    name, pos = _string(block, pos)
                value, pos = _string(block, pos)
                if indexing:
                    self._add(name, value)
            listed += len(name) + len(value) + 32
            if listed > self.max_list:
                raise HeaderError(f"a header list over {self.max_list} bytes")
            headers.append((name, value))
        return headers

    def _entry(self, index: int) -> Tuple[str, str]:
        if 0 < index <= len(STATIC):
            return STATIC[index - 1]
        at = index - len(STATIC) - 1
        if index == 0 or at >= len(self._table):
            raise HeaderError(f"header index {index} is not in the tables")
        name, value, _ = self._table[at]
        return name, value

    def _add(self, name: str, value: str) -> None:
        size = len(name) + len(value) + 32
        self._evict(size)
        if size <= self._limit:
            self._table.appendleft((name, value, size))
            self._size += size

    def _evict(self, room: int) -> None:
        while self._table and self._size + room > self._limit:
            self._size -= self._table.pop()[2]


def _integer(block: bytes, pos: int, prefix: int) -> Tuple[int, int]:
    limit = (1 << prefix) - 1
    value = block[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    for shift in range(0, 28, 7):
        if pos >= len(block):
            raise HeaderError("a truncated integer")
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise HeaderError("an integer longer than 4 continuation bytes")


def _string(block: bytes, pos: int) -> Tuple[str, int]:
    if pos >= len(block):
        raise HeaderError("a truncated header block")
    huffman = block[pos] & 0x80
    length, pos = _integer(block, pos, 7)
    end = pos + length
    if end > len(block):
        raise HeaderError("a string past the end of its header block")
    raw = block[pos:end]
    return str(huffman_decode(raw) if huffman else raw, "latin-1"), end


# --- encoding ---------------------------------------------------------------

_STATIC_PAIRS = {(":method", "POST"): 3, (":scheme", "http"): 6, (":scheme", "https"): 7, (":status", "200"): 8}
_NAME_INDEX = {":authority": 1, ":method": 2, ":path": 4, ":scheme": 6, ":status": 8, "content-type": 31,
               "user-agent": 58}


def _encode_integer(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_string(text: str) -> bytes:
    data = text.encode("latin-1")  # header values are ASCII; callers check
    return _encode_integer(len(data), 7, 0) + data


def encode_headers(headers: Iterable[Tuple[str, str]]) -> bytes:
    """A header block of ``(name, value)`` pairs (names in lower case)."""
    out = bytearray()
    for name, value in headers:
        index = _STATIC_PAIRS.get((name, value))
        if index is not None:
            out += _encode_integer(index, 7, 0x80)
            continue
        name_index = _NAME_INDEX.get(name)
        if name_index is not None:
            out += _encode_integer(name_index, 4, 0) + _encode_string(value)
        else:
            out += b"\x00" + _encode_string(name) + _encode_string(value)
    return bytes(out)
