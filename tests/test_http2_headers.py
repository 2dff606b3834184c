"""HPACK in ``snailjob.http2_headers``: what any encoder may send decodes to
the same headers (the ``hpack`` package, a test extra, is the oracle, with
Huffman coding and its dynamic table on), and hostile blocks end in a
``HeaderError`` naming the problem, never in another exception."""

from __future__ import annotations

import logging
from typing import List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snailjob.http2_headers import HeaderDecoder, HeaderError, encode_headers, huffman_decode

hpack = pytest.importorskip("hpack", reason="the oracle of these tests (a test extra)")

_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=60)
_NAMES = st.sampled_from([":path", ":authority", "content-type", "grpc-timeout", "te", "user-agent",
                          "x-custom", "sj-token", "cookie", "date"]) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=30)


def _oracle(blocks: List[List[Tuple[str, str]]], huffman: bool, table: int = 4096) -> List[bytes]:
    encoder = hpack.Encoder()
    encoder.header_table_size = table
    return [encoder.encode([(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers], huffman=huffman)
            for headers in blocks]


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.lists(st.tuples(_NAMES, _TEXT), max_size=12), min_size=1, max_size=6), st.booleans())
def test_whatever_the_encoder_sends_decodes_to_the_same_headers(blocks, huffman) -> None:
    decoder = HeaderDecoder()
    for headers, block in zip(blocks, _oracle(blocks, huffman)):
        assert decoder.decode(block) == headers


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=80))
def test_every_byte_string_huffman_codes_and_decodes(data: bytes) -> None:
    assert huffman_decode(hpack.huffman.HuffmanEncoder(
        hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH).encode(data)) == data


def test_a_smaller_table_evicts_as_the_encoder_expects() -> None:
    blocks = [[("x-a", "1" * 40)], [("x-b", "2" * 40)], [("x-a", "1" * 40), ("x-b", "2" * 40)]] * 3
    decoder = HeaderDecoder(max_table=100)
    encoded = _oracle(blocks, huffman=True, table=100)
    for headers, block in zip(blocks, encoded):
        assert decoder.decode(block) == headers


def test_our_encoding_decodes() -> None:
    headers = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-message", "a b%20c")]
    assert HeaderDecoder().decode(encode_headers(headers)) == headers
    assert hpack.Decoder().decode(encode_headers(headers)) == headers


@pytest.mark.parametrize("block,problem", [
    (b"\x80", "index 0"),
    (b"\xbe", "index 62"),  # past the static table, with an empty dynamic one
    (b"\x3f\xe2\x1f", "table size of 4097"),  # a size update over what was advertised
    (b"\x82\x20", "after a header field"),
    (b"\xff\xff\xff\xff\xff\xff\x01", "longer than 4 continuation bytes"),
    (b"\xff\xff", "truncated integer"),
    (b"\x00\x05abc", "past the end"),
    (b"\x00", "truncated header block"),
    (b"\x00\x81\x00\x81\x00", "bad padding"),  # 8 zero bits: a code, then padding of 0s
    (b"\x00\x84\xff\xff\xff\xff\x81\xff", "end-of-string"),
])
def test_hostile_blocks_are_named_errors(block: bytes, problem: str) -> None:
    with pytest.raises(HeaderError, match=problem):
        HeaderDecoder().decode(block)


def test_the_header_list_is_capped() -> None:
    block = encode_headers([("x-big", "v" * 1000)] * 5)
    assert len(HeaderDecoder(max_list=10_000).decode(block)) == 5
    with pytest.raises(HeaderError, match="header list over 4000 bytes"):
        HeaderDecoder(max_list=4000).decode(block)


@settings(max_examples=500, deadline=None, database=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_header_error(block: bytes) -> None:
    try:
        HeaderDecoder().decode(block)
    except HeaderError:
        pass


def test_nothing_is_logged_while_decoding(caplog: pytest.LogCaptureFixture) -> None:
    secret = "SJ_secret-token-value"
    block = _oracle([[("sj-token", secret)]], huffman=False)[0]
    caplog.set_level(logging.DEBUG)
    assert HeaderDecoder().decode(block) == [("sj-token", secret)]
    assert secret not in caplog.text
