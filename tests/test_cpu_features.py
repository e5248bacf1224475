"""trainer/cpu_features.py: reading the CPU's flags, and the one-line warning a bfloat16 run gets on
a CPU that only emulates bfloat16."""
import pytest

from trainer.cpu_features import bf16_warning, cpu_flags, cpu_model, describe_cpu, native_bf16

ZEN3 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n\nprocessor\t: 1\n"
ZEN5 = "model name\t: AMD EPYC 9B45\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16\n"


@pytest.mark.parametrize("text, flags, native", [
    (ZEN3, {"fpu", "sse2", "avx", "fma", "avx2", "bmi2"}, False),
    (ZEN5, {"fpu", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"}, True),
    (ARM, {"fp", "asimd", "bf16"}, False),  # arm's bf16 is not what oneDNN's x86 kernels use
])
def test_flags_and_native_bf16(tmp_path, text, flags, native):
    (tmp_path / "cpuinfo").write_text(text)
    assert cpu_flags(tmp_path / "cpuinfo") == flags
    assert native_bf16(cpu_flags(tmp_path / "cpuinfo")) is native


def test_unknown_flags_are_none_and_give_no_warning(tmp_path):
    assert cpu_flags(tmp_path / "missing") is None
    (tmp_path / "cpuinfo").write_text("processor\t: 0\n")
    assert cpu_flags(tmp_path / "cpuinfo") is None and native_bf16(set()) is False
    (tmp_path / "model").write_text(ZEN3)
    assert cpu_model(tmp_path / "model") == "AMD EPYC 7B13"


def test_bf16_warning_only_for_bfloat16_on_an_emulating_cpu():
    avx2, bf16 = {"avx2"}, {"avx2", "avx512f", "avx512_bf16"}
    warning = bf16_warning("mixed_bfloat16", on_gpu=False, flags=avx2)
    assert warning.startswith("warning: train.precision=mixed_bfloat16 on a CPU without AVX-512 BF16")
    assert "\n" not in warning
    assert bf16_warning("mixed_bfloat16", on_gpu=False, flags=bf16) is None
    assert bf16_warning("mixed_bfloat16", on_gpu=True, flags=avx2) is None
    assert bf16_warning("float32", on_gpu=False, flags=avx2) is None


def test_this_machine_is_described_with_its_cores():
    text = describe_cpu(2)
    assert ", 2 cores, " in text and text.split(", ")[0]


@pytest.mark.parametrize("chosen, enabled", [(None, True), ("0", False)])
def test_importing_the_package_turns_onednn_on_unless_the_user_chose(chosen, enabled):
    """TensorFlow's own default is on only for AVX-512 VNNI/BF16 or AMX CPUs; the package makes it on
    everywhere (1.66× faster training steps on an AVX2 CPU, experiments/bench_onednn.py) and keeps a
    user's TF_ENABLE_ONEDNN_OPTS=0. Checked in a fresh process: the setting is read when TF loads."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if chosen is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = chosen
    code = ("import serving, os, tensorflow\nfrom tensorflow.python.util import _pywrap_util_port as port\n"
            "print('RESULT', os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")][-1]
    assert line == f"RESULT {chosen or '1'} {enabled}"
