"""Code the three services share: settings, logging, errors, metrics, health, artifacts, the inference protocol."""

import os

# onnxruntime (1.31) ships Microsoft's OneDS telemetry: seconds after an inference session is created, it
# resolves mobile.events.data.microsoft.com to upload usage events. A model server must not call out on its
# own (locked-down egress, DNS leaks), so it is off unless an operator turns it on. onnxruntime reads the
# variable once, when it is first imported, and every modelgate process imports this package before that;
# ``onnxruntime.disable_telemetry_events()`` does not stop the upload (both checked with strace).
if not os.environ.get("ORT_DISABLE_TELEMETRY", "").strip():  # unset or empty: onnxruntime reads "" as on
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
