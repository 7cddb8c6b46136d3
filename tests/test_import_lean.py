import subprocess
import sys


def test_import_deepshrink_does_not_import_heavy_modules():
    code = (
        "import sys, deepshrink; "
        "heavy = [m for m in ('torch', 'matplotlib', 'onnx', 'onnxruntime', 'transformers', 'constriction') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
