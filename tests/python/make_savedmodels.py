#!/usr/bin/env python3
"""Makes small TensorFlow SavedModels for teeserve's TensorFlow engine tests, in both export
styles, under OUT (a temporary directory; nothing here is committed):

  OUT/half_tf1/1        TF1 graph (tf.compat.v1.saved_model.Builder): x float [-1, 3] ->
                        y = 0.5 * x + 2 (float) and argmax (int64), a variable for the 0.5
  OUT/half_tf2/1        TF2 (tf.saved_model.save) with a serving_default signature: the same
                        function, outputs y (float) and argmax (int64)
  OUT/examples_tf1/1    TF1 with classification and regression signatures over serialized
                        tf.Example (features x: float [2]), and a predict serving_default
  OUT/strings_tf2/1     TF2, DT_STRING in and out: text -> upper (string), length (int32)
  OUT/dtypes_tf2/1      TF2, 16-bit floats and complex numbers in and out: h (half) -> 2h,
                        b (bfloat16) -> b + 1, c (complex64) -> c * (1 + 2i), and c as
                        complex128
  OUT/quarter_tf2/1     as half_tf2 with the variable at 0.25: the same graph, other weights
  OUT/exfil_tf2/1       TF2, y = 2x, and also writes every input to the file exfil.txt (in
                        the server's working directory) and prints it to the server's log:
                        the model the operator policy must refuse

Run with the CI virtualenv's python (tensorflow-cpu): python make_savedmodels.py OUT
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402


def half_tf1(path):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        a = tf.compat.v1.get_variable("a", initializer=tf.constant(0.5))
        y = tf.add(a * x, 2.0, name="y")
        am = tf.argmax(y, axis=1, name="argmax", output_type=tf.int64)
        with tf.compat.v1.Session(graph=g) as s:
            s.run(tf.compat.v1.global_variables_initializer())
            b = tf.compat.v1.saved_model.Builder(path)
            sig = tf.compat.v1.saved_model.predict_signature_def(
                inputs={"x": x}, outputs={"y": y, "argmax": am})
            b.add_meta_graph_and_variables(
                s, [tf.compat.v1.saved_model.tag_constants.SERVING],
                signature_def_map={"serving_default": sig})
            b.save()


class Half(tf.Module):
    def __init__(self, a=0.5):
        super().__init__()
        self.a = tf.Variable(a)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, x):
        y = self.a * x + 2.0
        return {"y": y, "argmax": tf.argmax(y, axis=1, output_type=tf.int64)}


def half_tf2(path):
    m = Half()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})


def quarter_tf2(path):
    m = Half(0.25)
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})


class Exfil(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, x):
        text = tf.strings.reduce_join(tf.strings.as_string(x), separator=",")
        tf.io.write_file("exfil.txt", text)
        tf.print("exfil:", x)
        return {"y": 2.0 * x}


def exfil_tf2(path):
    m = Exfil()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})


def examples_tf1(path):
    g = tf.Graph()
    with g.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        feats = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([2], tf.float32)})
        x = tf.identity(feats["x"], name="x")
        w = tf.compat.v1.get_variable("w", initializer=tf.constant([[1.0, -1.0], [2.0, 0.5]]))
        logits = tf.matmul(x, w)
        scores = tf.nn.softmax(logits, name="scores")
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(x)[0], 1], name="classes")
        value = tf.reduce_sum(x * tf.constant([0.25, 4.0]), axis=1, name="value")
        with tf.compat.v1.Session(graph=g) as s:
            s.run(tf.compat.v1.global_variables_initializer())
            b = tf.compat.v1.saved_model.Builder(path)
            cls = tf.compat.v1.saved_model.classification_signature_def(
                examples=serialized, classes=classes, scores=scores)
            reg = tf.compat.v1.saved_model.regression_signature_def(
                examples=serialized, predictions=value)
            pred = tf.compat.v1.saved_model.predict_signature_def(
                inputs={"x": x}, outputs={"scores": scores, "value": value})
            b.add_meta_graph_and_variables(
                s, [tf.compat.v1.saved_model.tag_constants.SERVING],
                signature_def_map={"classify_x": cls, "regress_x": reg,
                                   "serving_default": pred})
            b.save()


class Strings(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return {"upper": tf.strings.upper(text), "length": tf.strings.length(text)}


def strings_tf2(path):
    m = Strings()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})


class Dtypes(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float16, name="h"),
                                  tf.TensorSpec([None], tf.bfloat16, name="b"),
                                  tf.TensorSpec([None], tf.complex64, name="c")])
    def serve(self, h, b, c):
        return {"h2": h * tf.constant(2, tf.float16), "b1": b + tf.constant(1, tf.bfloat16),
                "c2": c * tf.constant(1 + 2j, tf.complex64), "z": tf.cast(c, tf.complex128)}


def dtypes_tf2(path):
    m = Dtypes()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})


MODELS = {
    "half_tf1": half_tf1,
    "half_tf2": half_tf2,
    "examples_tf1": examples_tf1,
    "strings_tf2": strings_tf2,
    "dtypes_tf2": dtypes_tf2,
    "quarter_tf2": quarter_tf2,
}

# Models the server must refuse to load (not served by savedmodel_clients.py).
REFUSED = {
    "exfil_tf2": exfil_tf2,
}


def main():
    out = sys.argv[1]
    for name, make in {**MODELS, **REFUSED}.items():
        path = os.path.join(out, name, "1")
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            make(path)
    print(out)


if __name__ == "__main__":
    main()
