"""benchmarks/gpu_check.sh --quick: the GPU check's code runs on CPU with tiny sizes, so it cannot rot."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_quick_prints_its_table():
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--quick", "--device", "cpu"],
                          capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    checks = [line.split(" | ")[0][2:] for line in table[1:]]
    assert checks == ["bf16 forward", "bf16 forward+backward", "fusion overhead (MER / encoders, forward)",
                      "6-step bf16 training, demo corpus", "pipeline batch 8 / batch 1"]
    training = next(line for line in table if "training" in line)
    assert "no NaN" in training and training.rstrip(" |").endswith("OK")  # the loss went down
    assert all("utt/s" in line and "peak" in line for line in table[1:3])
