"""`conclave measure snp` against AMD's launch sequence as sev-snp-measure (PyPI, virtee) computes
it: an independent implementation, run on inputs neither project publishes digests for (random
kernels, initrds and command lines; several vCPU counts, types and guest features). QEMU/KVM
guests only: that is what `measure snp` computes (see the conclave binary's launch_digest module)."""

import json
import random

import pytest
from sevsnpmeasure import guest, vcpu_types
from sevsnpmeasure.sev_mode import SevMode
from sevsnpmeasure.vmm_types import VMMType

from conftest import ROOT, conclave

OVMF = ROOT / "crates" / "conclave" / "tests" / "data" / "ovmf"
AUTHORITY = "https://shared.weu.attest.azure.net"


def conclave_digest(args):
    out = json.loads(conclave("measure", "snp", *args, "--authority", AUTHORITY, "--json"))
    return out["values"]["x-ms-sevsnpvm-launchmeasurement"]


CASES = [
    # (vcpus, vcpu type, guest features, with kernel, with initrd, with append)
    (1, "EPYC-v4", 0x1, True, True, True),
    (2, "EPYC-Milan", 0x21, True, True, True),
    (8, "EPYC-Genoa", 0x1, True, False, True),
    (4, "EPYC-Rome", 0x21, True, True, False),
    (3, "EPYC-Milan-v2", 0x1, True, True, True),
    (2, "EPYC-Turin", 0x21, False, False, False),
    (16, "EPYC-Genoa-v1", 0x1, False, False, False),
]


@pytest.mark.parametrize("vcpus,vcpu_type,features,kernel,initrd,append", CASES)
def test_snp_launch_digest_matches_sev_snp_measure(tmp_path, vcpus, vcpu_type, features, kernel, initrd, append):
    rng = random.Random(f"{vcpus}{vcpu_type}{features}")
    ovmf = OVMF / "ovmf_AmdSev_suffix.bin"
    args = ["--ovmf", str(ovmf), "--vcpus", str(vcpus), "--vcpu-type", vcpu_type,
            "--guest-features", hex(features)]
    kernel_path = initrd_path = None
    cmdline = None
    if kernel:
        kernel_path = tmp_path / "vmlinuz"
        kernel_path.write_bytes(rng.randbytes(rng.randrange(1, 300_000)))
        args += ["--kernel", str(kernel_path)]
        if initrd:
            initrd_path = tmp_path / "initrd.img"
            initrd_path.write_bytes(rng.randbytes(rng.randrange(1, 300_000)))
            args += ["--initrd", str(initrd_path)]
        if append:
            cmdline = f"console=ttyS0 root=/dev/vda{rng.randrange(9)} conclave.id={rng.getrandbits(64):x}"
            args += ["--append", cmdline]
    expected = guest.calc_launch_digest(
        SevMode.SEV_SNP,
        vcpus,
        vcpu_types.CPU_SIGS[vcpu_type],
        str(ovmf),
        str(kernel_path) if kernel_path else None,
        str(initrd_path) if initrd_path else None,
        cmdline,
        features,
        vmm_type=VMMType.QEMU,
    ).hex()
    assert conclave_digest(args) == expected


def test_a_precomputed_ovmf_hash_gives_the_same_digest(tmp_path):
    ovmf = str(OVMF / "ovmf_AmdSev_suffix.bin")
    ovmf_hash = guest.calc_snp_ovmf_hash(ovmf).hex()
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\x7fELF" + bytes(4096))
    common = ["--ovmf", ovmf, "--vcpus", "2", "--vcpu-type", "EPYC-Milan", "--kernel", str(kernel)]
    assert conclave_digest(common + ["--ovmf-hash", ovmf_hash]) == conclave_digest(common)
