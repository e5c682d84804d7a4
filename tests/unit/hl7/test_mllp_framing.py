"""MLLP block decoding (hl7/mllp.py): start block 0x0B, end block 0x1C 0x0D, and what peers really send."""

from __future__ import annotations

from pergamon.hl7.mllp import Block, BlockDecoder, frame


def test_several_blocks_in_one_read_and_one_block_over_several_reads() -> None:
    decoder = BlockDecoder(1000)
    assert decoder.feed(frame(b"MSH|one") + frame(b"MSH|two")) == [Block(b"MSH|one", 7), Block(b"MSH|two", 7)]
    assert decoder.feed(b"\x0bMSH|th") == []
    assert decoder.feed(b"ree\x1c") == [Block(b"MSH|three", 9)]
    assert decoder.feed(b"\r") == []
    assert decoder.pending() is None
    assert decoder.skipped == 0


def test_bytes_before_the_start_block_are_skipped_and_counted() -> None:
    decoder = BlockDecoder(1000)
    assert decoder.feed(b"GET / HTTP/1.0\r\n" + frame(b"MSH|x")) == [Block(b"MSH|x", 5)]
    assert decoder.skipped == len(b"GET / HTTP/1.0")


def test_a_block_cut_off_by_the_end_of_the_stream_is_pending() -> None:
    decoder = BlockDecoder(1000)
    assert decoder.feed(b"\x0bMSH|^~\\&|partial") == []
    assert decoder.pending() == Block(b"MSH|^~\\&|partial", 16, incomplete=True)
    assert decoder.pending() is None


def test_a_new_start_block_abandons_the_unfinished_one() -> None:
    decoder = BlockDecoder(1000)
    assert decoder.feed(b"\x0bMSH|lost" + frame(b"MSH|next")) == [
        Block(b"MSH|lost", 8, incomplete=True),
        Block(b"MSH|next", 8),
    ]


def test_an_oversized_block_is_cut_and_flagged_and_the_next_one_is_read() -> None:
    decoder = BlockDecoder(4)
    assert decoder.feed(frame(b"0123456789") + frame(b"ok")) == [
        Block(b"0123", 10, oversize=True),
        Block(b"ok", 2),
    ]


def test_end_block_without_carriage_return_still_ends_the_block() -> None:
    decoder = BlockDecoder(100)
    assert decoder.feed(b"\x0bMSH|a\x1c\x0bMSH|b\x1c") == [Block(b"MSH|a", 5), Block(b"MSH|b", 5)]
