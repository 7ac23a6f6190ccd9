"""The mux codec shared by the hybrid-vsock bridge and the in-guest relay (sans-IO, host only)."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from image.build.inside.mux import MAX_PAYLOAD, Frame, FrameDecoder, FrameError, Kind, encode

frames = st.builds(Frame, st.sampled_from(list(Kind)), st.integers(0, 2**32 - 1), st.binary(max_size=300))


@given(st.lists(frames, max_size=20), st.integers(1, 64))
def test_round_trip_in_any_chunking(fs: list[Frame], chunk: int) -> None:
    wire = b"".join(encode(f) for f in fs)
    dec = FrameDecoder()
    out: list[Frame] = []
    for i in range(0, len(wire), chunk):
        out += dec.receive_data(wire[i:i + chunk])
    assert out == fs


@given(st.binary(max_size=200))
def test_decoder_only_raises_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        FrameDecoder().receive_data(data)


def test_oversized_and_unknown_frames_are_refused() -> None:
    with pytest.raises(FrameError):
        FrameDecoder().receive_data(struct.pack(">BII", Kind.DATA, 1, MAX_PAYLOAD + 1))
    with pytest.raises(FrameError):
        FrameDecoder().receive_data(struct.pack(">BII", 99, 1, 0))
    with pytest.raises(FrameError):
        Frame(Kind.DATA, 1, b"x" * (MAX_PAYLOAD + 1))
