#!/usr/bin/env python3
"""Convert sklesion's trained HAM10000 classifier (Keras) into a dermagate model directory.

NOT FOR CLINICAL USE. Runs inside the throw-away virtual environment that
scripts/model-ham10000.sh creates (pinned TensorFlow, tf2onnx, onnx, onnxruntime,
pandas and sklesion itself); see docs/model-ham10000.md.

What it does:
  1. Loads sklesion's own `model.keras` (Xception image branch + a small dense branch over
     age, sex and body location; softmax over the 7 HAM10000 classes), and its pickled
     preprocessing constants, class map and test report, all shipped in the sklesion wheel.
  2. Wraps it for dermagate's one-input contract: input `input`, float32 [N, 3, 254, 254]
     (NCHW, RGB, raw 0-255 pixel values; the model's own Normalization layer stays in the
     graph), transposed to NHWC inside the graph. The metadata input is folded into the
     graph as a constant: sex "unknown", location "unknown", age missing, exactly what
     sklesion itself feeds when those are unknown (age = training mean / age_max, the
     age_missing flag set).
  3. Converts that function to ONNX with tf2onnx at a fixed opset, renames the output to
     `probabilities`, and checks it with onnx.checker.
  4. Checks the ONNX graph against Keras (onnxruntime, synthetic images) and against
     sklesion's own end-to-end pipeline (`SkinLesionClassifier.predict_P` on a JPEG with
     unknown metadata): the largest difference must stay below 1e-4.
  5. Writes model.onnx, manifest.json (schema_version 1, as inference/src/manifest.rs reads it),
     test-performance.json (the package's own test report) and README.md.

Usage: python model-ham10000.py --out DIR [--opset 13]
"""

import argparse
import hashlib
import io
import json
import os
import pickle
import re
import sys

import numpy as np

EXPECTED_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
WIDTH = HEIGHT = 254

# One label per model output, in the model's output order (sklesion's i_cl_map). Codes are
# ICD-11 MMS; see docs/model-ham10000.md for each choice and its confidence. "malignant"
# follows sklesion's own severity ("Malign" for akiec, bcc and mel: akiec pools actinic
# keratoses with intraepithelial carcinoma / Bowen's disease); "urgent_referral" only for
# melanoma, as in the demonstration model.
LABELS = {
    "akiec": {
        "code": "EK90.0",
        "display": "Actinic keratosis or intraepithelial carcinoma (Bowen's disease)",
        "malignant": True,
        "urgent_referral": False,
    },
    "bcc": {"code": "2C32", "display": "Basal cell carcinoma of skin", "malignant": True, "urgent_referral": False},
    "bkl": {
        "code": "2F21",
        "display": "Benign keratosis-like lesion (seborrhoeic keratosis, solar lentigo, lichen planus-like keratosis)",
        "malignant": False,
        "urgent_referral": False,
    },
    "df": {"code": "2F23.0", "display": "Dermatofibroma", "malignant": False, "urgent_referral": False},
    "mel": {"code": "2C30", "display": "Melanoma of skin", "malignant": True, "urgent_referral": True},
    "nv": {"code": "2F20", "display": "Melanocytic naevus", "malignant": False, "urgent_referral": False},
    "vasc": {
        "code": "2F25",
        "display": "Vascular lesion (cherry angioma, angiokeratoma, pyogenic granuloma, haemorrhage)",
        "malignant": False,
        "urgent_referral": False,
    },
}

TOLERANCE = 1e-4


def log(msg):
    print(f"model-ham10000: {msg}", file=sys.stderr, flush=True)


def load_package():
    import sklesion

    pkg = os.path.dirname(os.path.abspath(sklesion.__file__))

    def pkl(name):
        with open(os.path.join(pkg, name), "rb") as f:
            return pickle.load(f)

    props, report, info = pkl("model_props.pkl"), pkl("cr_test.pkl"), pkl("cl_info.pkl")
    classes = [props["i_cl_map"][i] for i in range(len(props["i_cl_map"]))]
    if classes != EXPECTED_CLASSES:
        sys.exit(f"model-ham10000: unexpected class order {classes}; the labels here assume {EXPECTED_CLASSES}")
    if list(props["img_shape"]) != [HEIGHT, WIDTH]:
        sys.exit(f"model-ham10000: unexpected image shape {list(props['img_shape'])}")
    return pkg, props, report, info, classes


def neutral_meta(props):
    """The metadata vector sklesion builds for sex, location and age all unknown."""
    oh = props["oh_map"]
    age = props["age_mean"] / props["age_max"]
    return list(oh["sex"]["unknown"]) + list(oh["loc"]["unknown"]) + [age, 1.0]


def convert(keras_model, meta, opset):
    import tensorflow as tf
    import tf2onnx

    meta_const = tf.constant([meta], dtype=tf.float32)
    spec = [tf.TensorSpec([None, 3, HEIGHT, WIDTH], tf.float32, name="input")]

    @tf.function(input_signature=spec)
    def wrapped(x):
        nhwc = tf.transpose(x, [0, 2, 3, 1])
        batch_meta = tf.tile(meta_const, [tf.shape(x)[0], 1])
        return keras_model([nhwc, batch_meta], training=False)

    proto, _ = tf2onnx.convert.from_function(wrapped, input_signature=spec, opset=opset)
    # Tensors the function captures by value (the metadata constant above, the Normalization
    # layer's mean and variance, which Keras 3 keeps as plain tensors, not variables) are not
    # frozen by tf2onnx: they come out as extra graph inputs named like their placeholders.
    # Turn each back into an initializer holding its value, so the graph has one input.
    from onnx import numpy_helper

    captured = {
        inner.name: outer.numpy()
        for outer, inner in wrapped.get_concrete_function().graph.captures
        if outer.dtype != tf.resource
    }
    g = proto.graph
    for graph_input in list(g.input):
        if graph_input.name in captured:
            g.initializer.append(numpy_helper.from_array(captured.pop(graph_input.name), graph_input.name))
            g.input.remove(graph_input)
    if captured:
        sys.exit(f"model-ham10000: captured tensors not found among the graph inputs: {sorted(captured)}")
    # Grappler may already have folded some of them into constants (1/sqrt(variance)): drop the
    # initializers that no node reads.
    used = {name for node in g.node for name in node.input}
    for init in list(g.initializer):
        if init.name not in used:
            g.initializer.remove(init)
    return proto


def rename_io(proto):
    """Names the graph's one input `input` and its one output `probabilities`."""
    g = proto.graph
    if len(g.input) != 1 or len(g.output) != 1:
        sys.exit(f"model-ham10000: expected one input and one output, got {len(g.input)} and {len(g.output)}")
    renames = {g.input[0].name: "input", g.output[0].name: "probabilities"}
    for node in g.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    g.input[0].name = "input"
    g.output[0].name = "probabilities"
    return proto


def canonical_names(proto):
    """Makes the bytes reproducible: tf2onnx names the constants it folds with a global counter
    (`const_fold_opt__654`, `const_axes__12`) whose values vary from run to run. Renames every
    such initializer after the position where the graph first reads it, and orders the
    initializers by that position."""
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    order = []
    for node in g.node:
        for name in node.input:
            if name in inits and name not in order:
                order.append(name)
    generated = re.compile(r"__\d+(:\d+)?$")
    renames = {name: f"const_{k:04d}" for k, name in enumerate(order) if generated.search(name)}
    if set(renames.values()) & set(inits):
        sys.exit("model-ham10000: canonical constant names collide with existing ones")
    for node in g.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
    for init in inits.values():
        init.name = renames.get(init.name, init.name)
    rank = {renames.get(n, n): k for k, n in enumerate(order)}
    ordered = sorted(g.initializer, key=lambda i: rank.get(i.name, len(rank)))
    del g.initializer[:]
    g.initializer.extend(ordered)
    return proto


def synthetic_images():
    """NHWC uint8 images: mid-grey (the node's softmax check), stripes, seeded noise, a blob."""
    grey = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    stripes = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    stripes[(np.arange(HEIGHT) // 8) % 2 == 0] = 250
    stripes[(np.arange(HEIGHT) // 8) % 2 == 1] = 10
    noise = np.random.RandomState(20241101).randint(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    blob = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    blob[...] = (205, 160, 140)  # skin-like background
    inside = (yy - HEIGHT / 2) ** 2 + (xx - WIDTH / 2) ** 2 < (HEIGHT / 4) ** 2
    blob[inside] = (95, 60, 45)  # a dark round lesion
    return {"grey": grey, "stripes": stripes, "noise": noise, "blob": blob}


def check(onnx_path, keras_model, meta, pkg):
    import onnxruntime as ort
    import tensorflow as tf

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    worst = 0.0
    reference = {}
    for name, img in synthetic_images().items():
        x = img.astype(np.float32)[None]
        want = keras_model([x, np.array([meta], np.float32)], training=False).numpy()[0]
        got = sess.run(["probabilities"], {"input": x.transpose(0, 3, 1, 2)})[0][0]
        diff = float(np.abs(want - got).max())
        worst = max(worst, diff)
        reference[name] = [round(float(v), 4) for v in got]
        log(f"{name:8s} onnx {[round(float(v), 4) for v in got]} (max |keras - onnx| = {diff:.2e}, sum {got.sum():.6f})")
        if abs(float(got.sum()) - 1.0) > 1e-4:
            sys.exit(f"model-ham10000: the outputs for {name} sum to {got.sum()}, not 1")
    if worst > TOLERANCE:
        sys.exit(f"model-ham10000: ONNX and Keras differ by {worst:.2e} (> {TOLERANCE})")

    # sklesion's own pipeline, end to end, on a JPEG with unknown age, sex and location.
    from PIL import Image
    from sklesion.model import SkinLesionClassifier

    buf = io.BytesIO()
    Image.fromarray(synthetic_images()["blob"]).resize((600, 450)).save(buf, format="JPEG", quality=95)
    jpeg = buf.getvalue()
    clf = SkinLesionClassifier()
    theirs = clf.predict_P({"image": jpeg, "meta": {"age": None, "sex": "unknown", "location": "unknown"}})[0]
    pixels = tf.image.resize(tf.image.decode_jpeg(jpeg, channels=3), (HEIGHT, WIDTH)).numpy()
    ours = sess.run(["probabilities"], {"input": pixels[None].transpose(0, 3, 1, 2).astype(np.float32)})[0][0]
    diff = float(np.abs(theirs - ours).max())
    log(f"sklesion.predict_P vs this ONNX on a 600x450 JPEG with unknown metadata: max diff {diff:.2e}")
    if diff > TOLERANCE:
        sys.exit(f"model-ham10000: the ONNX model does not reproduce sklesion's own pipeline ({diff:.2e})")
    return reference, worst


def performance_text(report):
    f1, rec, sup = report["f1-score"], report["recall"], report["support"]
    return (
        f"accuracy {f1['accuracy']:.3f}, macro-average F1 {f1['macro avg']:.3f}, "
        f"melanoma recall {rec['mel']:.3f} (n={sup['mel']}), basal cell carcinoma recall {rec['bcc']:.3f} "
        f"(n={sup['bcc']}), on {sup['accuracy']} held-out HAM10000 images"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="model directory to write")
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--sklesion-version", default="unknown")
    args = ap.parse_args()

    import onnx
    import tensorflow as tf
    import tf2onnx

    pkg, props, report, info, classes = load_package()
    meta = neutral_meta(props)
    log(f"sklesion package at {pkg}; classes {classes}; constant metadata {np.round(meta, 4).tolist()}")
    keras_model = tf.keras.models.load_model(os.path.join(pkg, "model.keras"), compile=False)

    proto = canonical_names(rename_io(convert(keras_model, meta, args.opset)))
    proto.producer_name = "dermagate-model-ham10000"
    proto.producer_version = f"tf2onnx-{tf2onnx.__version__}"
    proto.doc_string = "sklesion (MIT) HAM10000 classifier, converted for dermagate. NOT FOR CLINICAL USE."
    onnx.checker.check_model(proto, full_check=True)
    ops = sorted({n.op_type for n in proto.graph.node})
    log(f"ONNX opset {args.opset}, IR {proto.ir_version}, {len(proto.graph.node)} nodes, operators: {', '.join(ops)}")

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "model.onnx")
    with open(onnx_path, "wb") as f:
        f.write(proto.SerializeToString())
    reference, worst = check(onnx_path, keras_model, meta, pkg)

    perf = performance_text(report)
    manifest = {
        "schema_version": 1,
        "name": "sklesion-ham10000",
        "version": args.sklesion_version,
        "demonstration": True,
        "intended_use": (
            "Research and evaluation model, NOT FOR CLINICAL USE and not a medical device. "
            f"The trained classifier of the PyPI package sklesion {args.sklesion_version} (MIT licence, by Elio Pereira), "
            "converted to ONNX: an Xception network trained on the HAM10000 dermatoscopic images "
            "(Tschandl et al. 2018, CC BY-NC 4.0: non-commercial use). It expects a dermoscopic image of one "
            "pigmented skin lesion; clinical or smartphone photographs, other diseases and healthy skin are "
            "outside what it learnt. Age, sex and body location are fed as unknown. Reported test "
            f"performance by its author: {perf}."
        ),
        "input": {
            "name": "input",
            "width": WIDTH,
            "height": HEIGHT,
            "channels": 3,
            "layout": "NCHW",
            "color": "RGB",
            "scale": 1.0,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
        },
        "output": {"name": "probabilities", "kind": "softmax"},
        "min_resolution": {"width": WIDTH, "height": HEIGHT},
        "labels": [LABELS[c] for c in classes],
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(args.out, "test-performance.json"), "w") as f:
        json.dump({"source": "sklesion/cr_test.pkl", "report": report}, f, indent=2)
        f.write("\n")

    digest = hashlib.sha256(open(onnx_path, "rb").read()).hexdigest()
    rows = "\n".join(
        f"| {i} | `{c}` | {info[c]['name']} | `{LABELS[c]['code']}` | {report['precision'][c]:.3f} | "
        f"{report['recall'][c]:.3f} | {report['f1-score'][c]:.3f} | {report['support'][c]} |"
        for i, c in enumerate(classes)
    )
    refs = "\n".join(f"| {k} | `{v}` |" for k, v in reference.items())
    readme = f"""# sklesion HAM10000 model for dermagate

**NOT FOR CLINICAL USE.** Generated by `scripts/model-ham10000.sh`; see `docs/model-ham10000.md`.

- Source: PyPI `sklesion` {args.sklesion_version} (MIT licence, author Elio Pereira), its `model.keras`.
- Training data: HAM10000 (Tschandl, Rosendahl, Kittler, Sci. Data 5, 180161, 2018), CC BY-NC 4.0.
- Converted with tf2onnx {tf2onnx.__version__}, TensorFlow {tf.__version__}, onnx {onnx.__version__}, opset {args.opset}.
- Input `input`: float32 [N, 3, {HEIGHT}, {WIDTH}], RGB, raw pixel values 0-255 (the model normalises them itself).
- Age, sex and body location are folded in as constants: sex "unknown", location "unknown", age missing
  (as sklesion encodes them when unknown): `{[round(v, 6) for v in meta]}`.
- Output `probabilities`: softmax over the 7 classes below, in this order.
- sha256(model.onnx) = `{digest}`
- Largest difference to Keras on the reference images: {worst:.2e}.

## Classes and the package's own test report

| # | class | sklesion name | ICD-11 MMS | precision | recall | F1 | n |
| --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

{perf}.

## Reference outputs (onnxruntime, synthetic {WIDTH}x{HEIGHT} images)

| image | probabilities |
| --- | --- |
{refs}
"""
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(readme)
    log(f"wrote {args.out}: model.onnx ({os.path.getsize(onnx_path) / 1e6:.1f} MB, sha256 {digest}), manifest.json, "
        "test-performance.json, README.md")


if __name__ == "__main__":
    main()
