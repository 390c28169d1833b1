#!/usr/bin/env python3
"""Generate the dermagate demonstration model: model.onnx and manifest.json.

THIS IS A DEMONSTRATION MODEL, NOT FOR CLINICAL USE. Its weights are random
numbers, not the result of training: its outputs mean nothing medically.

Why it exists: the `inference` crate needs a real ONNX graph to load and run
(tract-onnx) in tests and demos, and the project must not download model
weights at run time or commit opaque binaries nobody can rebuild. So the model
is built here from a fixed seed, and rerunning this script gives the same
bytes (see README.md for the expected sha256).

Usage:
    python3 inference/models/demo/make_model.py           # (re)write both files
    python3 inference/models/demo/make_model.py --check   # also run onnxruntime checks

Needs `onnx` and `numpy`; `--check` also needs `onnxruntime`. Generation never
imports onnxruntime.
"""

import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_PATH = os.path.join(HERE, "model.onnx")
MANIFEST_PATH = os.path.join(HERE, "manifest.json")

# Kept small so the committed binary stays tiny and inference is fast in CI;
# the crate resizes whatever photo it gets down to this.
WIDTH = 64
HEIGHT = 64
CHANNELS = 3

# ImageNet statistics: the usual normalisation for RGB CNNs, so the Rust
# preprocessing written against this manifest also fits a real model later.
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]

# opset 13 / IR 7: old enough that every runtime we care about (tract-onnx
# 0.23, onnxruntime) reads it, new enough for Softmax's per-axis semantics.
OPSET = 13
IR_VERSION = 7

# Fixed producer identity instead of onnx's defaults, so that a different
# onnx version installed on the machine cannot change the bytes.
PRODUCER_NAME = "dermagate-make_model"
PRODUCER_VERSION = "1.0.0"
MODEL_VERSION = 1

SEED = 20240601

# Calibration of the untrained classifier (see build_weights): how many
# synthetic photos, and how peaked the softmax gets (larger = more confident).
CALIBRATION_IMAGES = 256
LOGIT_SCALE = 1.0

# One entry per output class, in output order: probabilities[:, i] is the
# score of LABELS[i]. Codes are ICD-11 MMS. "malignant" and "urgent_referral"
# drive the demo's triage wording only; BCC is malignant but, as in common
# referral guidance, not an urgent (suspected-cancer pathway) referral.
LABELS = [
    {"code": "2C30", "display": "Melanoma of skin", "malignant": True, "urgent_referral": True},
    {"code": "2C31", "display": "Squamous cell carcinoma of skin", "malignant": True, "urgent_referral": True},
    {"code": "2C32", "display": "Basal cell carcinoma of skin", "malignant": True, "urgent_referral": False},
    {"code": "EK90.0", "display": "Actinic keratosis", "malignant": False, "urgent_referral": False},
    {"code": "2F20", "display": "Melanocytic naevus", "malignant": False, "urgent_referral": False},
    {"code": "2F21.0", "display": "Seborrhoeic keratosis", "malignant": False, "urgent_referral": False},
    {"code": "EA90", "display": "Psoriasis", "malignant": False, "urgent_referral": False},
    {"code": "EA80", "display": "Atopic eczema", "malignant": False, "urgent_referral": False},
]
NUM_CLASSES = len(LABELS)

MANIFEST = {
    "schema_version": 1,
    "name": "dermagate-demo",
    "version": "1.0.0",
    "demonstration": True,
    "intended_use": (
        "Demonstration model, not for clinical use. Its weights are random, "
        "not trained: its outputs carry no medical meaning. It exists to "
        "exercise the dermagate inference pipeline end to end in tests and demos."
    ),
    "input": {
        "name": "input",
        "width": WIDTH,
        "height": HEIGHT,
        "channels": CHANNELS,
        "layout": "NCHW",
        "color": "RGB",
        # value fed to the model = (pixel_u8 * scale - mean[c]) / std[c]
        "scale": 1.0 / 255.0,
        "mean": MEAN,
        "std": STD,
    },
    "output": {"name": "probabilities", "kind": "softmax"},
    "min_resolution": {"width": 320, "height": 240},
    "labels": LABELS,
}


def he_normal(rng, shape, fan_in):
    # He scaling keeps ReLU activations from vanishing or exploding.
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def conv2d_s2(x, w, b):
    """3x3 stride-2 pad-1 convolution in float64 numpy, NCHW (calibration only)."""
    n, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h // 2, wd // 2))
    for ky in range(3):
        for kx in range(3):
            patch = xp[:, :, ky:ky + h:2, kx:kx + wd:2]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, ky, kx].astype(np.float64))
    return out + b.astype(np.float64).reshape(1, -1, 1, 1)


def synthetic_photos(rng, count):
    """Stand-in photos: a random overall colour with pixel noise on top, normalised
    like the real pipeline does. Only used to calibrate the untrained classifier."""
    tint = rng.uniform(0, 255, size=(count, CHANNELS, 1, 1))
    noise = rng.uniform(-60, 60, size=(count, CHANNELS, HEIGHT, WIDTH))
    pixels = np.clip(tint + noise, 0, 255).astype(np.uint8)
    mean = np.array(MEAN).reshape(1, 3, 1, 1)
    std = np.array(STD).reshape(1, 3, 1, 1)
    return (pixels / 255.0 - mean) / std


def build_weights(rng, calib_rng):
    """Random conv-net weights whose output visibly follows the image.

    After global average pooling, random ReLU features of any two photos share
    a large common offset and differ only a little, so a plain random
    classifier puts nearly every image in the same one or two classes. We
    therefore standardise the pooled features over a set of synthetic photos
    and fold that (a fixed BatchNorm, in effect) into the Gemm: then image
    differences, not the shared offset, decide which class wins.
    """
    w1 = he_normal(rng, (8, CHANNELS, 3, 3), CHANNELS * 9)
    b1 = (rng.standard_normal(8) * 0.1).astype(np.float32)
    w2 = he_normal(rng, (16, 8, 3, 3), 8 * 9)
    b2 = (rng.standard_normal(16) * 0.1).astype(np.float32)
    fc = rng.standard_normal((NUM_CLASSES, 16))
    fc_bias = rng.standard_normal(NUM_CLASSES) * 0.1

    x = synthetic_photos(calib_rng, CALIBRATION_IMAGES)
    h = np.maximum(conv2d_s2(np.maximum(conv2d_s2(x, w1, b1), 0.0), w2, b2), 0.0)
    feats = h.mean(axis=(2, 3))
    # Rounded so that last-bit differences between BLAS builds on different
    # machines cannot change the stored weights, and so the bytes stay the same.
    mu = np.round(feats.mean(axis=0), 3)
    sigma = np.maximum(np.round(feats.std(axis=0), 3), 1e-3)

    w3 = fc * LOGIT_SCALE / sigma
    # fsum: exactly rounded, so independent of summation order.
    b3 = [fc_bias[k] - math.fsum(w3[k, j] * mu[j] for j in range(16)) for k in range(NUM_CLASSES)]
    return {
        "conv1.weight": w1,
        "conv1.bias": b1,
        "conv2.weight": w2,
        "conv2.bias": b2,
        "fc.weight": w3.astype(np.float32),
        "fc.bias": np.array(b3).astype(np.float32),
    }


def build_model():
    # The legacy RandomState stream is guaranteed stable across numpy
    # versions; numpy's newer Generator API does not promise that.
    rng = np.random.RandomState(SEED)
    calib_rng = np.random.RandomState(SEED + 1)
    weights = build_weights(rng, calib_rng)
    initializers = [numpy_helper.from_array(v, name=k) for k, v in weights.items()]

    # Only basic ops, all of which tract-onnx implements.
    nodes = [
        # stride 2 with pad 1: 64x64 -> 32x32 -> 16x16
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1"],
                         name="conv1", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("Conv", ["relu1", "conv2.weight", "conv2.bias"], ["conv2"],
                         name="conv2", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["relu2"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["features"], name="flatten", axis=1),
        helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["logits"],
                         name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]

    graph = helper.make_graph(
        nodes,
        "dermagate_demo",
        inputs=[helper.make_tensor_value_info(
            "input", TensorProto.FLOAT, ["batch", CHANNELS, HEIGHT, WIDTH])],
        outputs=[helper.make_tensor_value_info(
            "probabilities", TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        initializer=initializers,
    )

    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        model_version=MODEL_VERSION,
        doc_string="dermagate demonstration model, not for clinical use (random weights).",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def write_manifest():
    # Stable key order and a trailing newline so reruns are byte-identical
    # and diffs stay readable.
    text = json.dumps(MANIFEST, indent=2, ensure_ascii=False) + "\n"
    with open(MANIFEST_PATH, "w", encoding="utf-8") as f:
        f.write(text)


def check(model_bytes):
    """Smoke test with an independent runtime (onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("--check needs onnxruntime: pip install onnxruntime", file=sys.stderr)
        return False

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])

    # Two different random photos, from a seed of their own (not the
    # calibration set's).
    batch = synthetic_photos(np.random.RandomState(7), 2).astype(np.float32)
    (probs,) = sess.run(["probabilities"], {"input": batch})
    ok = True
    if probs.shape != (2, NUM_CLASSES):
        print(f"FAIL: output shape {probs.shape}, want (2, {NUM_CLASSES})")
        ok = False
    sums = probs.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-5):
        print(f"FAIL: probabilities sum to {sums}, want 1")
        ok = False
    diff = float(np.abs(probs[0] - probs[1]).max())
    if diff < 0.01:
        print(f"FAIL: two different images give nearly the same output (max diff {diff:.6f})")
        ok = False
    np.set_printoptions(precision=4, suppress=True)
    print("image A:", probs[0])
    print("image B:", probs[1])
    print(f"max |A-B| = {diff:.4f}, sums = {sums}")

    # A reference output anyone can reproduce without random numbers: a
    # uniform mid-grey photo (every channel 128). Handy as a golden value
    # for the Rust tests.
    mean = np.array(MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(STD, dtype=np.float32).reshape(1, 3, 1, 1)
    grey = (np.full((1, 3, HEIGHT, WIDTH), 128 / 255.0, dtype=np.float32) - mean) / std
    (grey_probs,) = sess.run(["probabilities"], {"input": grey})
    print("grey 128:", [round(float(p), 4) for p in grey_probs[0]])
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="after writing, verify the model with onnxruntime")
    args = parser.parse_args()

    model = build_model()
    model_bytes = model.SerializeToString()
    with open(MODEL_PATH, "wb") as f:
        f.write(model_bytes)
    write_manifest()

    print(f"wrote {MODEL_PATH} ({len(model_bytes)} bytes)")
    print(f"sha256 {hashlib.sha256(model_bytes).hexdigest()}")
    print(f"wrote {MANIFEST_PATH}")

    if args.check and not check(model_bytes):
        sys.exit(1)


if __name__ == "__main__":
    main()
