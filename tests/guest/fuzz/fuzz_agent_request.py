"""atheris target: arbitrary bytes as an agent request payload through decode -> policy input -> re-encode.

Invariant: either protobuf's DecodeError, or a policy input whose re-encoding decodes to the same JSON.
Run: python tests/guest/fuzz/fuzz_agent_request.py -max_total_time=15
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from google.protobuf.message import DecodeError

    from attestation import initdata
    from guest.policy.errors import PolicyInternalError
    from guest.policy.input import copy_file_input, to_policy_json
    from guest.protocols import agent_pb2

TYPES = [agent_pb2.CreateContainerRequest, agent_pb2.ExecProcessRequest, agent_pb2.CopyFileRequest,
         agent_pb2.UpdateInterfaceRequest, agent_pb2.MemAgentMemcgConfig]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    kind = TYPES[data[0] % len(TYPES)]
    body = data[1:]
    try:
        msg = kind.FromString(body)
    except DecodeError:
        pass
    else:
        msg.DiscardUnknownFields()
        first = to_policy_json(msg)
        again = to_policy_json(kind.FromString(msg.SerializeToString(deterministic=True)))
        if first != again:
            raise AssertionError("re-encoding changed the policy input")
        if kind is agent_pb2.CopyFileRequest:
            with contextlib.suppress(PolicyInternalError):
                copy_file_input(msg)
    with contextlib.suppress(initdata.InitdataError):
        initdata.parse(initdata.decode_device(b"initdata" + body))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
