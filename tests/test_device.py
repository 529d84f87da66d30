"""CPU capabilities: read from /proc/cpuinfo's words, the same on every vendor, maskable."""

from tenacia.device import cpu_features

INTEL = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw\n"
AMD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse4_2 avx avx2 fma sse4a\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 atomics\nCPU implementer\t: 0x48\n"


def test_instruction_sets_by_name_not_by_vendor():
    assert {"avx512f", "avx2", "fma"} <= cpu_features(INTEL, mask="")
    assert "avx2" in cpu_features(AMD, mask="") and "avx512f" not in cpu_features(AMD, mask="")
    assert "neon" in cpu_features(ARM, mask="") and "avx2" not in cpu_features(ARM, mask="")
    assert cpu_features("", mask="") == frozenset()


def test_a_mask_runs_as_on_a_cpu_without_them(monkeypatch):
    assert "avx512f" not in cpu_features(INTEL, mask="avx512f, avx512bw")
    monkeypatch.setenv("TENACIA_CPU_MASK", "avx512f")
    assert "avx512f" not in cpu_features(INTEL) and "avx2" in cpu_features(INTEL)


def test_the_cpu_model_is_named_for_the_record():
    from tenacia.device import cpu_model

    assert cpu_model(INTEL.replace("flags", "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags")) == \
        "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu_model(ARM) == "ARM implementer 0x48 part ?"
    assert cpu_model(ARM + "CPU part\t: 0xd01\n") == "ARM implementer 0x48 part 0xd01"
    assert cpu_model("") != ""  # platform's guess, never empty
