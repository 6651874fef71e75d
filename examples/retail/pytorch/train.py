#!/usr/bin/env python3
"""Train a tailor next-product, timing or channel model in PyTorch.

It reads a training set written by `tailor export` (CSV) and its manifest,
trains what `tailor train` trains (multinomial logistic regression, or an
MLP with one hidden ReLU layer) with the same time-based holdout, and writes
NAME.onnx and NAME.yaml that `tailor models register` accepts.

The encoding of the inputs mirrors training-export/trainset (set.go and
fit.go) exactly, because the server does not run this script: it assembles
each request's input vector from model.yaml alone. Any difference between
how this script encodes a row and what serving/assemble builds from the
yaml would go unnoticed at registration and silently skew every prediction.

Needs Debian's interpreter and packages, not a virtualenv:
    apt-get install python3-torch python3-onnx python3-numpy
    /usr/bin/python3 examples/retail/pytorch/train.py --task channel \\
        --export /tmp/pt/channel.csv --out /tmp/pt/torch
(tested with torch 1.13, onnx 1.12, numpy 1.24). The CSV is read with the
csv module, so neither pandas nor pyarrow is needed.
"""

import argparse
import calendar
import csv
import io
import json
import math
import os
import re
import sys
import time

import numpy as np
import onnx
import torch
from torch import nn

# Feature types that become one position (plus a missing indicator);
# string is one-hot; timestamps and arrays are left out, as trainset does.
NUMERIC_TYPES = ("int32", "int64", "float32", "float64", "bool")

# The task's name in model.yaml (registry/spec.go).
REGISTRY_TASK = {"next-product": "next_product", "timing": "timing", "channel": "channel"}

K = 5  # the k of hit@k

NS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
    "d": 24 * 3600 * 1_000_000_000,
    "w": 7 * 24 * 3600 * 1_000_000_000,
}
DAY_NS = NS_PER_UNIT["d"]
HOUR_NS = NS_PER_UNIT["h"]


def fail(msg):
    print(f"train.py: {msg}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------- durations


def parse_duration(s):
    """Nanoseconds of a bucket bound, read as registry.ParseDuration reads
    it (Go durations plus d and w), so the labels written to model.yaml
    parse back to the same bounds on the server."""
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)(d|w)", s)
    if m:
        return int(float(m.group(1)) * NS_PER_UNIT[m.group(2)])
    parts = re.findall(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(s)
    return int(sum(float(n) * NS_PER_UNIT[u] for n, u in parts))


def format_bucket(ns):
    """Names a bucket as trainset.formatDays does: whole days as "Nd",
    anything else in Go's duration notation (whole seconds only)."""
    if ns % DAY_NS == 0:
        return f"{ns // DAY_NS}d"
    if ns % 1_000_000_000:
        return f"{ns}ns"
    h, rest = divmod(ns // 1_000_000_000, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m}m{s}s" if h else f"{m}m{s}s" if m else f"{s}s"


# ------------------------------------------------------------- reading rows

RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)$")


def parse_time(s):
    """An RFC 3339 timestamp as integer nanoseconds since the epoch: exact,
    so rows within one second keep their order as in Go."""
    m = RFC3339.match(s)
    if not m:
        raise ValueError(f"timestamp {s!r} is not RFC 3339")
    y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
    secs = calendar.timegm((y, mo, d, h, mi, sec))
    frac = (m.group(7) or "").ljust(9, "0")[:9]
    zone = m.group(8)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        secs -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return secs * 1_000_000_000 + int(frac)


def parse_number(text, typ):
    """A numeric cell as trainset's number() sees it: None for null, and
    NaN and infinities count as null too (Go reads them as missing)."""
    if text == "":
        return None
    if typ == "bool":
        # strconv.ParseBool, which reads the export's bool cells.
        if text in ("1", "t", "T", "true", "TRUE", "True"):
            return 1.0
        if text in ("0", "f", "F", "false", "FALSE", "False"):
            return 0.0
        raise ValueError(f"{text!r} is not a bool")
    if typ in ("int32", "int64"):
        return float(int(text))
    v = float(text)
    if typ == "float32":
        # A float32 column widens exactly as Go's float64(float32) does.
        v = float(np.float32(v))
    if math.isnan(v) or math.isinf(v):
        return None
    return v


class Feature:
    def __init__(self, ref, column, typ):
        self.ref, self.column, self.type = ref, column, typ
        self.values = []  # float or None; text ("" is null) for strings
        self.vocabulary = None
        self.missing = False

    @property
    def width(self):
        if self.type == "string":
            return len(self.vocabulary)
        return 2 if self.missing else 1

    def finish(self, vocab):
        """Fixes the encoding from every row of the set, as trainset's
        finish does: the whole file, not only the training rows, so the
        yaml does not depend on where the holdout falls."""
        if self.type != "string":
            self.missing = any(v is None for v in self.values)
            return
        counts = {}
        for t in self.values:
            if t != "":
                counts[t] = counts.get(t, 0) + 1
        # Ties broken by value, in code-point order like Go's string <
        # (Python compares str by code point, Go by UTF-8 bytes: the same
        # order).
        self.vocabulary = sorted(counts, key=lambda t: (-counts[t], t))[:vocab]

    def encode(self, rows):
        if self.type == "string":
            index = {t: i for i, t in enumerate(self.vocabulary)}
            x = np.zeros((len(rows), len(self.vocabulary)), dtype=np.float64)
            for r, i in enumerate(rows):
                k = index.get(self.values[i])
                if k is not None:
                    x[r, k] = 1
            return x
        x = np.zeros((len(rows), self.width), dtype=np.float64)
        for r, i in enumerate(rows):
            v = self.values[i]
            if v is not None:
                x[r, 0] = v
            elif self.missing:
                x[r, 1] = 1
        return x


class TrainingSet:
    def __init__(self, path, manifest, label_col, time_col, vocab):
        self.manifest = manifest
        self.features, self.skipped = [], []
        self.labels, self.times = [], []
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                fail(f"{path} is empty")
            col = {name: i for i, name in reversed(list(enumerate(header)))}

            def index(name, what):
                if name not in col:
                    fail(f"{what}: {path} has no column {name!r} (columns: {header})")
                return col[name]

            label_idx = index(label_col, "label")
            time_idx = index(time_col, "timestamp")
            cols = []
            for mf in manifest["features"]:
                t = mf["type"]
                if t.startswith("array<") or t == "timestamp":
                    self.skipped.append(mf["ref"])
                    continue
                cols.append(index(mf["column"], f"feature {mf['ref']}"))
                self.features.append(Feature(mf["ref"], mf["column"], t))
            if not self.features:
                fail(f"{path}: no feature the trainers can use (numbers, booleans and text)")
            for n, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    fail(f"{path} line {n}: {len(row)} fields, the header has {len(header)}")
                self.labels.append(row[label_idx])
                try:
                    self.times.append(parse_time(row[time_idx]))
                except ValueError as e:
                    fail(f"{path} line {n}: {e}")
                for feat, c in zip(self.features, cols):
                    text = row[c]
                    if feat.type == "string":
                        feat.values.append(text)
                        continue
                    try:
                        feat.values.append(parse_number(text, feat.type))
                    except ValueError:
                        fail(f"{path} line {n}: feature {feat.ref}: {text!r} is not a {feat.type}")
        if not self.labels:
            fail(f"{path} has no rows")
        usable = []
        for feat in self.features:
            feat.finish(vocab)
            if feat.width == 0:
                self.skipped.append(feat.ref)  # text that is always null
                continue
            usable.append(feat)
        self.features = usable

    @property
    def rows(self):
        return len(self.labels)

    @property
    def width(self):
        return sum(f.width for f in self.features)

    def matrix(self, rows):
        """The rows' input vectors, laid out as serving lays out model.yaml's
        elements, rounded to float32 once, as Go does."""
        return np.concatenate([f.encode(rows) for f in self.features], axis=1).astype(np.float32)

    def split_by_time(self, valid, test):
        """The latest test fraction is the test set and the latest valid
        fraction of the rest the validation set, so the metrics are measured
        on rows later than any the model learnt from. The sort is stable, so
        rows at one instant stay in file order, as with Go's SliceStable."""
        idx = sorted(range(self.rows), key=lambda i: self.times[i])
        n_test = int(len(idx) * test)
        rest = idx[: len(idx) - n_test]
        n_valid = int(len(rest) * valid)
        return rest[: len(rest) - n_valid], rest[len(rest) - n_valid :], idx[len(idx) - n_test :]


# ------------------------------------------------------------------- labels


def numeric_label(s):
    try:
        v = float(s)
    except ValueError:
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def bucket_of(days, buckets):
    # The same float expression as trainset.bucketOf, so a label right on
    # a bound falls on the same side.
    for i, b in enumerate(buckets):
        if days * 24 * float(HOUR_NS) <= float(b):
            return i
    return len(buckets) - 1


def classes(ts, task, buckets):
    """Every row's class (-1: no label) and the class names."""
    if task == "timing":
        out = []
        for label in ts.labels:
            days = numeric_label(label)
            out.append(-1 if days is None else bucket_of(days, buckets))
        return np.array(out), [format_bucket(b) for b in buckets]
    counts = {}
    for label in ts.labels:
        if label != "":
            counts[label] = counts.get(label, 0) + 1
    if len(counts) < 2:
        fail(f"the label column has {len(counts)} distinct values: nothing to learn")
    names = sorted(counts, key=lambda n: (-counts[n], n))
    index = {n: i for i, n in enumerate(names)}
    return np.array([index.get(label, -1) for label in ts.labels]), names


# ------------------------------------------------------------------ metrics


def rank_scores(probs, y):
    """Per row, how many classes score above the true one and how many tie
    with it: tied classes share their ranks, as in training-export/train's
    metrics, so a model that ranks nothing scores like a random guess."""
    p = probs[np.arange(len(y)), y][:, None]
    greater = (probs > p).sum(axis=1)
    ties = (probs == p).sum(axis=1) - 1
    return greater, ties


def hit_at_k(probs, y, k):
    greater, ties = rank_scores(probs, y)
    return float(np.mean(np.clip(k - greater, 0, ties + 1) / (ties + 1)))


def mrr(probs, y):
    greater, ties = rank_scores(probs, y)
    total = 0.0
    for g, t in zip(greater, ties):
        total += sum(1 / r for r in range(g + 1, g + t + 2)) / (t + 1)
    return total / len(y)


def log_loss(probs, y):
    p = probs[np.arange(len(y)), y].astype(np.float64)
    return float(-np.mean(np.log(np.maximum(p, 1e-15))))


def timing_mae(probs, rows, labels, buckets):
    """Mean absolute error in days of the expected bucket, each bucket at
    the middle of its range (trainset.timingMAE)."""
    mid, lo = [], 0.0
    for b in buckets:
        hi = b / DAY_NS
        mid.append((lo + hi) / 2)
        lo = hi
    mid = np.array(mid)
    total, n = 0.0, 0
    for r, row in enumerate(rows):
        days = numeric_label(labels[row])
        if days is None:
            continue
        total += abs(float(probs[r].astype(np.float64) @ mid) - days)
        n += 1
    return total / n if n else float("nan")


def measure(probs, y, task, k_classes, test_rows, ts, buckets):
    m = {"accuracy": hit_at_k(probs, y, 1), "log_loss": log_loss(probs, y)}
    if k_classes > K:
        m[f"hit_at_{K}"] = hit_at_k(probs, y, K)
        m["mrr"] = mrr(probs, y)
    if task == "timing":
        m["mae_days"] = timing_mae(probs, test_rows, ts.labels, buckets)
    return m


def class_freq(y, k_classes):
    """Class frequencies with add-one smoothing, so no class has
    probability 0: the popularity baseline, and the output bias the model
    starts from (train.classFreq)."""
    counts = np.bincount(y, minlength=k_classes).astype(np.float64)
    return (counts + 1) / (len(y) + k_classes)


# -------------------------------------------------------------------- model


class Classifier(nn.Module):
    """Standardises inside the graph rather than folding mean/std into the
    first layer: the exported model still takes the raw encoded vector
    serving assembles, and keeps the precision folding loses when a
    feature's |mean|/std is large."""

    def __init__(self, mean, std, hidden, k_classes, log_prior, generator):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("inv", torch.tensor(1 / std, dtype=torch.float32))
        d = len(mean)
        layers = []
        if hidden:
            first = nn.Linear(d, hidden)
            # He initialisation for the ReLU layer, zero bias, as
            # training-export/train does.
            with torch.no_grad():
                first.weight.normal_(0, math.sqrt(2 / d), generator=generator)
                first.bias.zero_()
            layers += [first, nn.ReLU()]
            d = hidden
        last = nn.Linear(d, k_classes)
        # The output starts at the class prior, so the first epochs refine
        # the popularity baseline instead of climbing out of uniform.
        a = math.sqrt(6 / (d + k_classes))
        with torch.no_grad():
            last.weight.uniform_(-a, a, generator=generator)
            last.bias.copy_(torch.tensor(log_prior, dtype=torch.float32))
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def logits(self, x):
        return self.net((x - self.mean) * self.inv)

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=1)


def standardisation(x):
    """Per-column mean and population std of the training rows in float64;
    constant columns keep std 1 so they pass through as a constant."""
    x = x.astype(np.float64)
    mean = x.mean(axis=0)
    std = np.sqrt(((x - mean) ** 2).mean(axis=0))
    std[(std == 0) | ~np.isfinite(std)] = 1
    return mean, std


def fit(model, x_train, y_train, x_valid, y_valid, args, generator):
    """Mini-batch Adam on the cross-entropy plus l2/2·||W||² over the weights
    (not the biases), stopping when the validation loss has not improved for
    --patience epochs and keeping the best epoch's weights."""
    opt = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    xv = torch.from_numpy(x_valid) if len(y_valid) else None
    yv = torch.from_numpy(y_valid).long() if len(y_valid) else None
    ce = nn.CrossEntropyLoss()
    best_loss, best_epoch, best_state, bad = math.inf, 0, None, 0
    history, early = [], False
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(yt), generator=generator)
        loss_sum = 0.0
        for start in range(0, len(yt), args.batch_size):
            b = perm[start : start + args.batch_size]
            loss = ce(model.logits(xt[b]), yt[b])
            total = loss
            if args.l2 > 0:
                total = loss + args.l2 / 2 * sum((w * w).sum() for w in weights)
            opt.zero_grad()
            total.backward()
            opt.step()
            loss_sum += loss.item() * len(b)
        valid_loss = math.nan
        if xv is not None:
            model.eval()
            with torch.no_grad():
                valid_loss = ce(model.logits(xv), yv).item()
        history.append((epoch, loss_sum / len(yt), valid_loss))
        print(f"  epoch {epoch:3d}  train loss {loss_sum / len(yt):.4f}  validation loss {valid_loss:.4f}", file=sys.stderr)
        if xv is None:
            best_epoch = epoch
            continue
        if valid_loss < best_loss or best_epoch == 0:
            best_loss, best_epoch, bad = valid_loss, epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
            continue
        bad += 1
        if bad >= args.patience and epoch < args.epochs:
            early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history, best_epoch, early


# ------------------------------------------------------------------- output


def export_onnx(model, width, task, snapshot):
    buf = io.BytesIO()
    # The registry refuses a fixed batch: serving batches requests, so axis
    # 0 must stay dynamic.
    torch.onnx.export(
        model,
        torch.zeros(1, width),
        buf,
        input_names=["features"],
        output_names=["probabilities"],
        dynamic_axes={"features": {0: "batch"}, "probabilities": {0: "batch"}},
        opset_version=13,
        do_constant_folding=True,
    )
    m = onnx.load_from_string(buf.getvalue())
    m.doc_string = f"train.py (PyTorch) {task}"
    for key, value in (("task", task), ("snapshot", snapshot), ("trainer", "pytorch")):
        p = m.metadata_props.add()
        p.key, p.value = key, value
    onnx.checker.check_model(m)
    return m.SerializeToString()


def yaml_str(s):
    """A YAML double-quoted scalar. JSON's escapes are YAML's; the
    characters JSON leaves raw but YAML forbids unescaped (DEL, C1
    controls, line and paragraph separators) are escaped too."""
    out = json.dumps(s, ensure_ascii=False)
    return re.sub("[\x7f-\x9f\u2028\u2029\ufeff]", lambda m: f"\\u{ord(m.group()):04x}", out)


def spec_yaml(name, task, description, features, class_names, metrics, tags, snapshot):
    """model.yaml as registry/spec.go parses it; the elements follow the
    features in manifest order, each saying how serving fills its
    positions, which is what makes the served input equal the trained one."""
    lines = [
        f"name: {yaml_str(name)}",
        f"task: {REGISTRY_TASK[task]}",
        f"description: {yaml_str(description)}",
        "inputs:",
        "  - name: features",
        "    elements:",
    ]
    for f in features:
        lines.append(f"      - feature: {yaml_str(f.ref)}")
        if f.vocabulary is not None:
            lines.append("        encoding: one_hot")
            lines.append(f"        vocabulary: [{', '.join(yaml_str(v) for v in f.vocabulary)}]")
        if f.missing:
            lines.append("        missing_indicator: true")
    lines += [
        "outputs:",
        "  - name: probabilities",
        f"    labels: [{', '.join(yaml_str(c) for c in class_names)}]",
        "metrics:",
    ]
    for k in sorted(metrics):
        v = metrics[k]
        if math.isfinite(v):
            lines.append(f"  {k}: {v:.6f}")
    lines.append("tags:")
    for k in sorted(tags):
        lines.append(f"  {k}: {yaml_str(tags[k])}")
    lines += ["lineage:", f"  snapshot: {yaml_str(snapshot)}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(
        description="Train a next-product, timing or channel model in PyTorch on a `tailor export` CSV "
        "and write NAME.onnx and NAME.yaml for `tailor models register`."
    )
    ap.add_argument("--task", required=True, choices=sorted(REGISTRY_TASK))
    ap.add_argument("--export", required=True, help="training set CSV written by tailor export")
    ap.add_argument("--manifest", help="its manifest (default: EXPORT.manifest.json)")
    ap.add_argument("--out", required=True, help="directory for NAME.onnx and NAME.yaml")
    ap.add_argument("--name", help="model name (default: the task, next_product, timing or channel)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden ReLU units; 0: logistic regression")
    ap.add_argument("--epochs", type=int, default=20, help="most passes (early stopping may end sooner)")
    ap.add_argument("--buckets", default="1d,3d,7d,14d,30d,60d", help="timing: the buckets' upper bounds")
    ap.add_argument("--seed", type=int, default=1)
    # The rest default to tailor train's flags, so that the two trainers
    # differ in implementation, not in settings.
    ap.add_argument("--learning-rate", type=float, default=0.003)
    ap.add_argument("--l2", type=float, default=1e-5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--valid", type=float, default=0.1)
    ap.add_argument("--test", type=float, default=0.2)
    ap.add_argument("--vocab", type=int, default=256, help="most values one-hot encoded per text feature")
    ap.add_argument("--label", default="label")
    ap.add_argument("--timestamp-column", default="event_timestamp")
    args = ap.parse_args()

    if not (0 < args.test < 1 and 0 <= args.valid < 1):
        fail(f"holdout fractions must be in (0, 1): test {args.test}, valid {args.valid}")
    if args.hidden < 0 or args.epochs <= 0 or args.batch_size <= 0 or args.vocab <= 0:
        fail("--hidden, --epochs, --batch-size and --vocab must be positive (--hidden may be 0)")
    name = args.name or args.task.replace("-", "_")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
        fail(f"--name {name!r}: use letters, digits, _ . - (not starting with a digit)")
    buckets = []
    if args.task == "timing":
        try:
            buckets = [parse_duration(b.strip()) for b in args.buckets.split(",") if b.strip()]
        except ValueError as e:
            fail(f"--buckets: {e} is not a duration")
        if len(buckets) < 2 or any(b <= 0 for b in buckets):
            fail("timing needs at least two positive buckets")
        if buckets != sorted(buckets):
            fail("--buckets must increase")

    start = time.time()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    manifest_path = args.manifest or args.export + ".manifest.json"
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    snapshot = manifest.get("snapshot_id", "")
    ts = TrainingSet(args.export, manifest, args.label, args.timestamp_column, args.vocab)
    labels, class_names = classes(ts, args.task, buckets)
    k_classes = len(class_names)

    train_rows, valid_rows, test_rows = ts.split_by_time(args.valid, args.test)
    train_rows, valid_rows, test_rows = ([r for r in rows if labels[r] >= 0] for rows in (train_rows, valid_rows, test_rows))
    if not train_rows or not test_rows:
        n = len(train_rows) + len(valid_rows) + len(test_rows)
        fail(f"{n} labelled rows: too few to hold out the latest {100 * args.test:.0f}%")
    x_train, y_train = ts.matrix(train_rows), labels[train_rows]
    x_valid, y_valid = (ts.matrix(valid_rows), labels[valid_rows]) if valid_rows else (np.zeros((0, ts.width), np.float32), labels[:0])
    x_test, y_test = ts.matrix(test_rows), labels[test_rows]

    mean, std = standardisation(x_train)
    prior = class_freq(y_train, k_classes)
    model = Classifier(mean, std, args.hidden, k_classes, np.log(prior), generator)
    history, best_epoch, _ = fit(model, x_train, y_train, x_valid, y_valid, args, generator)

    with torch.no_grad():
        probs = model(torch.from_numpy(x_test)).numpy()
    metrics = measure(probs, y_test, args.task, k_classes, test_rows, ts, buckets)
    pop = np.tile(prior.astype(np.float32), (len(y_test), 1))
    for k, v in measure(pop, y_test, args.task, k_classes, test_rows, ts, buckets).items():
        metrics["popularity_" + k] = v

    kind = f"mlp_{args.hidden}" if args.hidden else "logistic_regression"
    onnx_bytes = export_onnx(model, ts.width, args.task, snapshot)
    description = f"{args.task} trained by PyTorch (examples/retail/pytorch/train.py) on {snapshot} ({ts.rows} rows)"
    spec = spec_yaml(name, args.task, description, ts.features, class_names, metrics, {"trainer": "pytorch", "model": kind}, snapshot)
    os.makedirs(args.out, exist_ok=True)
    onnx_path, yaml_path = os.path.join(args.out, name + ".onnx"), os.path.join(args.out, name + ".yaml")
    with open(onnx_path, "wb") as f:
        f.write(onnx_bytes)
    with open(yaml_path, "w", encoding="utf-8") as f:
        f.write(spec)

    print(
        f"{name}: {args.task} on {ts.rows} rows ({len(train_rows)} train, {len(valid_rows)} validation, "
        f"{len(test_rows)} test, by time), {ts.width} inputs, {k_classes} classes, {kind}, "
        f"{len(history)} epochs (best {best_epoch}) in {time.time() - start:.1f}s"
    )
    if ts.skipped:
        print("not used (timestamps, arrays, always null): " + ", ".join(ts.skipped))
    print(f"{'test metric':<12} {'model':>10} {'popularity':>12}")
    for k in sorted(m for m in metrics if not m.startswith("popularity_")):
        print(f"{k:<12} {metrics[k]:10.4f} {metrics['popularity_' + k]:12.4f}")
    print(f"wrote {onnx_path} and {yaml_path}")


if __name__ == "__main__":
    main()
