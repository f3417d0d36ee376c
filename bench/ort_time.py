"""onnxruntime's time on a model, for `just bench`: one JSON line of every run's ms.

    python bench/ort_time.py MODEL THREADS RUNS

Every input value 0.1 (dense convolutions take the same time on any values), one warm-up run,
intra-op threads as given, default graph optimisations: what a user of onnxruntime gets.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, threads, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
feed = session.get_inputs()[0]
x = np.full([d if isinstance(d, int) else 1 for d in feed.shape], 0.1, np.float32)
session.run(None, {feed.name: x})
times = []
for _ in range(runs):
    t = time.perf_counter()
    session.run(None, {feed.name: x})
    times.append((time.perf_counter() - t) * 1000)
print(json.dumps({"runs_ms": times, "onnxruntime": ort.__version__}))
