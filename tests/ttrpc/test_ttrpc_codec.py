"""Sans-IO core: frame layout, envelopes, connection events, with hypothesis properties."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guest.ttrpc import (
    NEED_DATA,
    Call,
    Closed,
    Code,
    Connection,
    FrameReader,
    LocalProtocolError,
    Rejected,
    Reply,
    Request,
    Response,
    Role,
    Status,
    encode_frame,
)
from guest.ttrpc import ttrpc_pb2 as pb
from guest.ttrpc.frames import Frame, Oversized
from guest.ttrpc.messages import decode_request, decode_response, encode_request, encode_response
from guest.ttrpc.status import Detail


def drain(conn: Connection) -> list[object]:
    out = []
    while (ev := conn.next_event()) is not NEED_DATA:
        out.append(ev)
        if isinstance(ev, Closed):
            break
    return out


def request_frame(sid: int, req: Request, type_: int = 1, flags: int = 0) -> bytes:
    return encode_frame(sid, type_, flags, encode_request(req))


REQ = Request("grpc.AgentService", "Echo", b"\x01\x02", 5_000_000, (("k", "v"),))


# -- frames ------------------------------------------------------------------------------------------------
def test_header_layout_is_big_endian_10_bytes() -> None:
    data = encode_frame(0x01020305, 0x02, 0x04, b"abc")
    assert data == b"\x00\x00\x00\x03" + b"\x01\x02\x03\x05" + b"\x02\x04" + b"abc"


def test_encode_refuses_oversize_and_bad_fields() -> None:
    with pytest.raises(LocalProtocolError, match="exceed maximum message size of 8"):
        encode_frame(1, 1, 0, b"x" * 9, max_size=8)
    with pytest.raises(LocalProtocolError):
        encode_frame(1 << 32, 1, 0, b"")
    with pytest.raises(LocalProtocolError):
        encode_frame(1, 256, 0, b"")


def test_reader_discards_oversize_body_without_buffering_it() -> None:
    r = FrameReader(max_message_size=16)
    r.feed(struct.pack(">IIBB", 1000, 7, 1, 0) + b"z" * 100)
    assert r.next() is None
    assert r.buffered == 0  # the body is dropped, not held
    r.feed(b"z" * 899)
    assert r.next() is None
    r.feed(b"z" + encode_frame(9, 1, 0, b"ok"))
    assert r.next() == Oversized(7, 1, 0, 1000)
    assert r.next() == Frame(9, 1, 0, b"ok")
    assert r.next() is None


def test_reader_limit_is_a_constructor_argument() -> None:
    r = FrameReader(max_message_size=4)
    r.feed(encode_frame(1, 1, 0, b"1234") + encode_frame(3, 1, 0, b"12345", max_size=5) + b"\x00")
    assert r.next() == Frame(1, 1, 0, b"1234")
    assert r.next() == Oversized(3, 1, 0, 5)


# -- envelopes ---------------------------------------------------------------------------------------------
def test_request_envelope_field_numbers() -> None:
    m = pb.Request()
    m.ParseFromString(encode_request(REQ))
    assert (m.service, m.method, m.payload, m.timeout_nano) == (
        "grpc.AgentService",
        "Echo",
        b"\x01\x02",
        5_000_000,
    )
    assert [(kv.key, kv.value) for kv in m.metadata] == [("k", "v")]
    # field 1 (service) is the first thing on the wire: tag 0x0a
    assert encode_request(REQ)[:2] == b"\x0a\x11"


def test_ok_response_carries_explicit_empty_status_like_ttrpc_rust() -> None:
    assert encode_response(Response(Status(Code.OK), b"")) == b"\x0a\x00"
    assert encode_response(Response(Status(Code.OK), b"ab")) == b"\x0a\x00\x12\x02ab"


def test_response_without_status_is_ok_and_unknown_codes_become_unknown() -> None:
    assert decode_response(pb.Response(payload=b"p").SerializeToString()) == Response(Status(Code.OK), b"p")
    raw = pb.Response(status=pb.Status(code=99, message="m")).SerializeToString()
    assert decode_response(raw).status == Status(Code.UNKNOWN, "m")


texts = st.text(max_size=20)
statuses = st.builds(
    Status,
    st.sampled_from(list(Code)),
    texts,
    st.lists(st.builds(Detail, texts, st.binary(max_size=8)), max_size=2).map(tuple),
)
requests = st.builds(
    Request,
    texts,
    texts,
    st.binary(max_size=64),
    st.integers(-(2**63), 2**63 - 1),
    st.lists(st.tuples(texts, texts), max_size=3).map(tuple),
)
responses = st.builds(Response, statuses, st.binary(max_size=300))


@given(requests)
def test_request_round_trip(req: Request) -> None:
    assert decode_request(encode_request(req)) == req


@given(responses)
def test_response_round_trip_and_fast_path_matches_protobuf(resp: Response) -> None:
    data = encode_response(resp)
    got = decode_response(data)
    assert got.payload == resp.payload
    assert got.status.code == resp.status.code and got.status.message == resp.status.message
    m = pb.Response(payload=resp.payload)
    m.status.SetInParent()
    m.status.code, m.status.message = int(resp.status.code), resp.status.message
    for d in resp.status.details:
        m.status.details.add(type_url=d.type_url, value=d.value)
    assert data == m.SerializeToString()


# -- connection --------------------------------------------------------------------------------------------
def test_client_stream_ids_are_odd_and_increase() -> None:
    c = Connection(Role.CLIENT)
    assert [c.new_stream_id() for _ in range(3)] == [1, 3, 5]
    with pytest.raises(LocalProtocolError):
        c.send(Call(2, REQ))
    with pytest.raises(LocalProtocolError):
        Connection(Role.SERVER).new_stream_id()


def test_server_decodes_calls_and_encodes_replies() -> None:
    s = Connection(Role.SERVER)
    s.receive_data(request_frame(1, REQ))
    assert drain(s) == [Call(1, REQ)]
    c = Connection(Role.CLIENT)
    c.receive_data(s.send(Reply(1, Response(Status(Code.NOT_FOUND, "gone"), b"x"))) + s.send_ok(3, b"y"))
    assert drain(c) == [
        Reply(1, Response(Status(Code.NOT_FOUND, "gone"), b"x")),
        Reply(3, Response(Status(Code.OK), b"y")),
    ]


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (lambda: request_frame(2, REQ), Rejected(2, Status(Code.INVALID_ARGUMENT, "stream id must be odd"))),
        (
            lambda: encode_frame(4, 9, 0, b""),
            Rejected(4, Status(Code.INVALID_ARGUMENT, "stream id must be odd")),
        ),
        (
            lambda: encode_frame(1, 3, 0, b"d"),
            Rejected(1, Status(Code.INVALID_ARGUMENT, "Stream is no longer active")),
        ),
        (
            lambda: encode_frame(5, 3, 1, b"d"),
            Rejected(5, Status(Code.INVALID_ARGUMENT, "Stream id 5: data close message connot include data")),
        ),
        (
            lambda: encode_frame(5, 3, 1, b""),
            Rejected(5, Status(Code.INVALID_ARGUMENT, "Stream is no longer active")),
        ),
        (
            lambda: struct.pack(">IIBB", 4 * 1024 * 1024 + 1, 7, 1, 0) + bytes(4 * 1024 * 1024 + 1),
            Rejected(
                7,
                Status(
                    Code.INVALID_ARGUMENT, "message length 4194305 exceed maximum message size of 4194304"
                ),
            ),
        ),
    ],
    ids=[
        "even-id",
        "even-id-unknown-type",
        "stray-data",
        "data-close-with-data",
        "data-close-empty",
        "oversize",
    ],
)
def test_server_rejections_match_ttrpc_rust(frame, expected) -> None:  # type: ignore[no-untyped-def]
    s = Connection(Role.SERVER)
    s.receive_data(frame() + request_frame(9, REQ))
    assert drain(s) == [expected, Call(9, REQ)]  # and the connection goes on


def test_server_ignores_unknown_types_and_responses_on_odd_ids() -> None:
    s = Connection(Role.SERVER)
    s.receive_data(encode_frame(1, 7, 0, b"?") + encode_frame(3, 2, 0, b"\x0a\x00") + request_frame(5, REQ))
    assert drain(s) == [Call(5, REQ)]


def test_garbage_envelope_is_invalid_argument() -> None:
    s = Connection(Role.SERVER)
    s.receive_data(encode_frame(1, 1, 0, b"\xff\xff\xff"))
    [ev] = drain(s)
    assert isinstance(ev, Rejected) and ev.stream_id == 1 and ev.status.code == Code.INVALID_ARGUMENT
    assert ev.status.message


def test_client_oversize_reply_fails_only_that_stream_like_go() -> None:
    c = Connection(Role.CLIENT, max_message_size=256)
    c.receive_data(struct.pack(">IIBB", 257, 1, 2, 0) + bytes(257) + encode_frame(3, 2, 0, b"\x0a\x00"))
    assert drain(c) == [
        Rejected(1, Status(Code.RESOURCE_EXHAUSTED, "message length 257 exceed maximum message size of 256")),
        Reply(3, Response(Status(Code.OK))),
    ]


def test_server_replaces_oversize_reply_with_error() -> None:
    s = Connection(Role.SERVER, max_message_size=256)
    c = Connection(Role.CLIENT, max_message_size=256)
    c.receive_data(s.send_ok(1, b"x" * 300))
    [ev] = drain(c)
    assert isinstance(ev, Reply) and ev.response.status.code == Code.INVALID_ARGUMENT
    assert ev.response.status.message == "message length 305 exceed maximum message size of 256"


def test_eof_mid_frame_is_reported_truncated() -> None:
    s = Connection(Role.SERVER)
    s.receive_data(request_frame(1, REQ)[:7])
    s.receive_data(b"")
    assert drain(s) == [Closed(truncated=True)]
    with pytest.raises(LocalProtocolError):
        s.receive_data(b"more")


@given(st.lists(requests, min_size=1, max_size=5), st.data())
def test_same_events_however_the_bytes_are_split(reqs: list[Request], data: st.DataObject) -> None:
    wire = b"".join(request_frame(2 * i + 1, r) for i, r in enumerate(reqs))
    whole = Connection(Role.SERVER)
    whole.receive_data(wire)
    expected = drain(whole)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    split = Connection(Role.SERVER)
    got: list[object] = []
    for p in pieces:
        if p:
            split.receive_data(p)
        got.extend(drain(split))
    assert got == expected == [Call(2 * i + 1, r) for i, r in enumerate(reqs)]


@settings(max_examples=300)
@given(st.binary(max_size=400), st.sampled_from([Role.SERVER, Role.CLIENT]), st.integers(256, 300))
def test_arbitrary_bytes_only_ever_produce_events(data: bytes, role: Role, limit: int) -> None:
    conn = Connection(role, max_message_size=limit)
    conn.receive_data(data)
    conn.receive_data(b"")
    events = drain(conn)
    assert isinstance(events[-1], Closed)
    assert all(isinstance(e, Call | Reply | Rejected | Closed) for e in events)
    assert conn.buffered <= len(data)


def test_error_reply_for_a_huge_service_name_still_fits() -> None:
    s = Connection(Role.SERVER, max_message_size=256)
    s.receive_data(request_frame(1, Request("s" * 240, "m", b"")))
    [ev] = drain(s)
    assert isinstance(ev, Call)
    from guest.ttrpc import unknown_service_status

    c = Connection(Role.CLIENT, max_message_size=256)
    c.receive_data(s.send(Rejected(1, unknown_service_status(ev.request.service))))
    [reply] = drain(c)
    assert isinstance(reply, Reply) and reply.response.status.code == Code.INVALID_ARGUMENT
    assert reply.response.status.message.startswith("message length")


def test_connection_refuses_a_limit_too_small_for_its_own_replies() -> None:
    with pytest.raises(ValueError, match="within 256"):
        Connection(Role.SERVER, max_message_size=255)
