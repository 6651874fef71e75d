#!/usr/bin/env python3
"""Exports the small ONNX models that tailor's serving tests run.

    python3 scripts/models/export_test_models.py [OUTPUT_DIR]

OUTPUT_DIR defaults to serving/testdata/models. Needs Debian's python3-torch,
python3-onnx and python3-numpy (the system interpreter, /usr/bin/python3); the
Go tests only read the committed output and never need Python.

Every model is deterministic (fixed seeds, small weights) and comes with
<name>.expected.json: a few input rows drawn with a fixed seed and the outputs
computed by PyTorch itself (or numpy for the hand-built graphs), never by ONNX
Runtime, written with full precision (a float32 value is written as the exact
decimal of that float32).

  next_product.onnx          features f32 [batch,12] -> probabilities f32 [batch,8]
  timing.onnx                features f32 [batch,12] -> probabilities f32 [batch,6]
  channel.onnx               features f32 [batch,12], context f32 [batch,4]
                             -> probabilities f32 [batch,4] (email, sms, push, app)
  generic_int64_input.onnx   indices i64 [batch,3] -> score f32 [batch,1]
  zipmap_classifier.onnx     input f32 [batch,4] -> output_label string [batch],
                             output_probability seq(map(string,f32)) (skl2onnx style)
  zipmap_int64_classifier.onnx the same with int64 labels 3, 7, 11: output_label i64 [batch],
                             output_probability seq(map(int64,f32))
  all_types.onnx             one input and output per element type tailor carries, and a scalar
  misdeclared_shape.onnx     x f32 [batch,2] -> y declared [batch,2] but really [2*batch,2]
  fixed_batch.onnx           like next_product but the batch dimension is fixed to 1
  not_onnx.onnx              random bytes
  slow_loop.onnx             a Loop that runs ~forever, for cancellation tests
"""

import io
import json
import os
import sys

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

OPSET = 17
ROWS = 5
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO_ROOT, "serving", "testdata", "models")


def f32_list(a):
    """Flattens a float32 array into Python floats holding each float32 exactly."""
    return [float(x) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


def tensor_json(name, array):
    a = np.asarray(array)
    if a.dtype == np.float32:
        typ, data = "float32", f32_list(a)
    elif a.dtype == np.float64:
        typ, data = "float64", [float(x) for x in a.reshape(-1)]
    elif a.dtype == np.int64:
        typ, data = "int64", [int(x) for x in a.reshape(-1)]
    elif a.dtype == np.int32:
        typ, data = "int32", [int(x) for x in a.reshape(-1)]
    elif a.dtype == np.bool_:
        typ, data = "bool", [bool(x) for x in a.reshape(-1)]
    elif a.dtype.kind in ("U", "O"):
        typ, data = "string", [str(x) for x in a.reshape(-1)]
    else:
        raise ValueError(f"{name}: unsupported dtype {a.dtype}")
    return {"name": name, "type": typ, "shape": list(a.shape), "data": data}


def write_expected(out, model, inputs, outputs, note):
    doc = {
        "model": model + ".onnx",
        "computed_by": note,
        "inputs": inputs,
        "outputs": outputs,
    }
    # One tensor a line: small diffs when a model changes, still plain JSON.
    def tensors(ts):
        return "[\n  " + ",\n  ".join(json.dumps(t, ensure_ascii=False) for t in ts) + "\n ]"

    text = "{\n"
    text += f' "model": {json.dumps(doc["model"])},\n'
    text += f' "computed_by": {json.dumps(doc["computed_by"])},\n'
    text += f' "inputs": {tensors(inputs)},\n'
    text += f' "outputs": {tensors(outputs)}\n'
    text += "}\n"
    json.loads(text)
    path = os.path.join(out, model + ".expected.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def save_bytes(out, name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def export_torch(module, args, input_names, output_names, dynamic=True):
    """Exports module with torch.onnx.export and returns the model bytes."""
    buf = io.BytesIO()
    axes = None
    if dynamic:
        axes = {n: {0: "batch"} for n in list(input_names) + list(output_names)}
    torch.onnx.export(
        module,
        args,
        buf,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes=axes,
        opset_version=OPSET,
        do_constant_folding=True,
    )
    data = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def small_init(module, seed, scale=0.5):
    """Deterministic small weights: uniform in [-scale, scale]."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * scale)


class MLP(torch.nn.Module):
    def __init__(self, n_in, hidden, n_out, act):
        super().__init__()
        self.l1 = torch.nn.Linear(n_in, hidden)
        self.act = act
        self.l2 = torch.nn.Linear(hidden, n_out)

    def forward(self, features):
        return torch.softmax(self.l2(self.act(self.l1(features))), dim=1)


class ChannelModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(16, 16)
        self.l2 = torch.nn.Linear(16, 4)

    def forward(self, features, context):
        x = torch.cat([features, context], dim=1)
        return torch.softmax(self.l2(torch.relu(self.l1(x))), dim=1)


class EmbeddingScore(torch.nn.Module):
    def __init__(self, vocab=50, dim=8):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.out = torch.nn.Linear(dim, 1)

    def forward(self, indices):
        return torch.sigmoid(self.out(self.emb(indices).mean(dim=1)))


def torch_model(out, name, module, inputs, input_names, output_names, seed):
    """Exports module, writes <name>.onnx and its expected outputs."""
    small_init(module, seed)
    module.eval()
    data = export_torch(module, tuple(inputs), input_names, output_names)
    save_bytes(out, name + ".onnx", data)
    with torch.no_grad():
        result = module(*inputs)
    if not isinstance(result, (tuple, list)):
        result = (result,)
    write_expected(
        out,
        name,
        [tensor_json(n, t.numpy()) for n, t in zip(input_names, inputs)],
        [tensor_json(n, t.numpy()) for n, t in zip(output_names, result)],
        f"torch {torch.__version__} forward pass (float32)",
    )
    return module


def zipmap_classifier(out, name, classes, seed):
    """A skl2onnx-style classifier: Gemm -> Softmax -> ZipMap, plus the label.

    String classes give ZipMap classlabels_strings (map<string,float>), int
    classes classlabels_int64s (map<int64,float>).
    """
    rng = np.random.default_rng(seed)
    ints = isinstance(classes[0], int)
    w = rng.uniform(-1, 1, size=(4, 3)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, size=(3,)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["input", "coef", "intercept"], ["logits"], name="linear"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"),
        helper.make_node("ArgMax", ["probabilities"], ["label_index"], axis=1, keepdims=0, name="argmax"),
        helper.make_node(
            "ArrayFeatureExtractor", ["classes", "label_index"], ["label_2d"], domain="ai.onnx.ml", name="label_lookup"
        ),
        helper.make_node("Reshape", ["label_2d", "flat"], ["output_label"], name="label_flat"),
    ]
    if ints:
        zipmap = dict(classlabels_int64s=classes)
        label_type, key_type = TensorProto.INT64, TensorProto.INT64
        classes_tensor = helper.make_tensor("classes", TensorProto.INT64, [len(classes)], classes)
    else:
        zipmap = dict(classlabels_strings=classes)
        label_type, key_type = TensorProto.STRING, TensorProto.STRING
        classes_tensor = helper.make_tensor("classes", TensorProto.STRING, [len(classes)], [c.encode() for c in classes])
    nodes.append(
        helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml", name="zipmap", **zipmap)
    )
    inits = [
        helper.make_tensor("coef", TensorProto.FLOAT, w.shape, w.reshape(-1).tolist()),
        helper.make_tensor("intercept", TensorProto.FLOAT, b.shape, b.tolist()),
        classes_tensor,
        helper.make_tensor("flat", TensorProto.INT64, [1], [-1]),
    ]
    map_type = onnx.TypeProto()
    map_type.map_type.key_type = key_type
    map_type.map_type.value_type.CopyFrom(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    seq_of_maps = helper.make_sequence_type_proto(map_type)
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("output_label", label_type, ["batch"]),
            helper.make_value_info("output_probability", seq_of_maps),
        ],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", 1)],
        producer_name="tailor export_test_models.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    save_bytes(out, name + ".onnx", model.SerializeToString())

    x = rng.normal(size=(ROWS, 4)).astype(np.float32)
    logits = (x.astype(np.float64) @ w.astype(np.float64) + b.astype(np.float64))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    labels = np.array([classes[i] for i in p.argmax(axis=1)])
    # JSON object keys are strings: an int64 label is written in decimal.
    prob_maps = [{str(c): float(np.float32(row[j])) for j, c in enumerate(classes)} for row in p]
    write_expected(
        out,
        name,
        [tensor_json("input", x)],
        [
            tensor_json("output_label", labels),
            {
                "name": "output_probability",
                "type": "map(int64,float32)" if ints else "map(string,float32)",
                "shape": [ROWS],
                "maps": prob_maps,
            },
        ],
        f"numpy {np.__version__} (float64, rounded to float32)",
    )


def all_types(out):
    """One input and output per element type: f64*2, i32+1, i64 cast, bool not, string identity, scalar*3."""
    nodes = [
        helper.make_node("Mul", ["f64", "two"], ["f64_out"]),
        helper.make_node("Add", ["i32", "one"], ["i32_out"]),
        helper.make_node("Cast", ["i32"], ["i64_out"], to=TensorProto.INT64),
        helper.make_node("Not", ["flag"], ["flag_out"]),
        helper.make_node("Identity", ["text"], ["text_out"]),
        helper.make_node("Mul", ["scale", "three"], ["scale_out"]),
    ]
    inits = [
        helper.make_tensor("two", TensorProto.DOUBLE, [], [2.0]),
        helper.make_tensor("one", TensorProto.INT32, [], [1]),
        helper.make_tensor("three", TensorProto.FLOAT, [], [3.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "all_types",
        [
            helper.make_tensor_value_info("f64", TensorProto.DOUBLE, ["batch", 2]),
            helper.make_tensor_value_info("i32", TensorProto.INT32, ["batch", 2]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, ["batch", 2]),
            helper.make_tensor_value_info("text", TensorProto.STRING, ["batch", 1]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("f64_out", TensorProto.DOUBLE, ["batch", 2]),
            helper.make_tensor_value_info("i32_out", TensorProto.INT32, ["batch", 2]),
            helper.make_tensor_value_info("i64_out", TensorProto.INT64, ["batch", 2]),
            helper.make_tensor_value_info("flag_out", TensorProto.BOOL, ["batch", 2]),
            helper.make_tensor_value_info("text_out", TensorProto.STRING, ["batch", 1]),
            helper.make_tensor_value_info("scale_out", TensorProto.FLOAT, []),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tailor export_test_models.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    save_bytes(out, "all_types.onnx", model.SerializeToString())

    rng = np.random.default_rng(6)
    f64 = rng.normal(size=(3, 2))
    i32 = rng.integers(-1000, 1000, size=(3, 2)).astype(np.int32)
    flag = rng.integers(0, 2, size=(3, 2)).astype(np.bool_)
    text = np.array([["email"], ["sms"], ["päivää ✓"]])
    scale = np.array(0.1, dtype=np.float32)
    write_expected(
        out,
        "all_types",
        [tensor_json("f64", f64), tensor_json("i32", i32), tensor_json("flag", flag), tensor_json("text", text), tensor_json("scale", scale)],
        [
            tensor_json("f64_out", f64 * 2),
            tensor_json("i32_out", i32 + np.int32(1)),
            tensor_json("i64_out", i32.astype(np.int64)),
            tensor_json("flag_out", np.logical_not(flag)),
            tensor_json("text_out", text),
            tensor_json("scale_out", scale * np.float32(3)),
        ],
        f"numpy {np.__version__}",
    )


def misdeclared_shape(out):
    """x f32 [batch,2] -> y = Concat(x, x) on axis 0, declared [batch,2] though it is [2*batch,2].

    Checks that a server trusting the declared output shape recovers.
    """
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x", "x"], ["y"], axis=0)],
        "misdeclared_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tailor export_test_models.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    save_bytes(out, "misdeclared_shape.onnx", model.SerializeToString())
    x = np.random.default_rng(9).normal(size=(3, 2)).astype(np.float32)
    write_expected(
        out, "misdeclared_shape", [tensor_json("x", x)], [tensor_json("y", np.concatenate([x, x], axis=0))],
        f"numpy {np.__version__}",
    )


def slow_loop(out):
    """x f32 [1] -> y: adds 1 in a Loop of 2^50 iterations; only cancellation ends it."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "keep_going", "x"], ["y"], body=body)],
        "slow_loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [
            helper.make_tensor("trips", TensorProto.INT64, [], [1 << 50]),
            helper.make_tensor("keep_going", TensorProto.BOOL, [], [True]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tailor export_test_models.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    save_bytes(out, "slow_loop.onnx", model.SerializeToString())


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    def features(n=ROWS, width=12):
        return torch.randn(n, width, generator=g)

    torch_model(out, "next_product", MLP(12, 32, 8, torch.nn.ReLU()), [features()], ["features"], ["probabilities"], 11)
    torch_model(out, "timing", MLP(12, 16, 6, torch.nn.Tanh()), [features()], ["features"], ["probabilities"], 12)
    torch_model(
        out, "channel", ChannelModel(), [features(), features(width=4)], ["features", "context"], ["probabilities"], 13
    )
    indices = torch.randint(0, 50, (ROWS, 3), generator=g, dtype=torch.int64)
    torch_model(out, "generic_int64_input", EmbeddingScore(), [indices], ["indices"], ["score"], 14)

    # The same MLP as next_product, exported without a dynamic batch axis.
    fixed = MLP(12, 32, 8, torch.nn.ReLU())
    small_init(fixed, 11)
    fixed.eval()
    save_bytes(out, "fixed_batch.onnx", export_torch(fixed, (features(n=1),), ["features"], ["probabilities"], dynamic=False))

    rng = np.random.default_rng(7)
    save_bytes(out, "not_onnx.onnx", rng.integers(0, 256, size=512, dtype=np.uint8).tobytes())

    zipmap_classifier(out, "zipmap_classifier", ["a", "b", "c"], 5)
    zipmap_classifier(out, "zipmap_int64_classifier", [3, 7, 11], 8)
    all_types(out)
    misdeclared_shape(out)
    slow_loop(out)
    for f in sorted(os.listdir(out)):
        print(f"{f:40s} {os.path.getsize(os.path.join(out, f)):8d} bytes")


if __name__ == "__main__":
    main()
