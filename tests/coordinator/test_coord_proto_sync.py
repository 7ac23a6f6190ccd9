"""The committed evidence protobuf modules equal a fresh protoc run."""

from pathlib import Path

from coordinator.proto import generate

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_in_sync(tmp_path: Path) -> None:
    for path in generate.generate(tmp_path):
        rel = path.relative_to(tmp_path)
        assert (REPO / rel).read_bytes() == path.read_bytes(), f"{rel} is stale: rerun {generate.__name__}"
