"""Simulated HOST_DATA from a TEE-less pod VM's kernel command line (the shim's simulated mode)."""

from __future__ import annotations

from pathlib import Path

import pytest

from attestation import parse_report, testing


def test_host_data_comes_from_the_one_cmdline_word(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    value = "ab" * 32
    cmdline.write_text(f"console=hvc0 root=/dev/dm-0 cg.test.hostdata={value} quiet\n")
    assert testing.host_data_from_cmdline(cmdline) == bytes.fromhex(value)
    provider = testing.snp_provider(tmp_path / "root", host_data=testing.host_data_from_cmdline(cmdline))
    report = parse_report(provider.get_evidence(bytes(64)).report)
    assert bytes(report.host_data) == bytes.fromhex(value)


@pytest.mark.parametrize("line", [
    "console=hvc0",  # none
    f"cg.test.hostdata={'ab' * 32} cg.test.hostdata={'cd' * 32}",  # two: which one would the CPU say?
    f"cg.test.hostdata={'AB' * 32}",  # not the shim's spelling
    f"cg.test.hostdata={'ab' * 31}",  # short
    "cg.test.hostdata=../../etc",
])
def test_malformed_cmdline_is_refused(tmp_path: Path, line: str) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(line)
    with pytest.raises(testing.CmdlineHostDataError, match=r"cg\.test\.hostdata"):
        testing.host_data_from_cmdline(cmdline)
