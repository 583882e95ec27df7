"""The tutorial's Keras code, as the peer to compare with (TensorFlow/Keras on the CPU).

Sequential Conv2D(64, 3x3, relu) -> MaxPooling2D(2) -> Conv2D(64, 3x3, relu) -> MaxPooling2D(2) ->
Flatten -> Dense(64) -> Dense(10, softmax); Adam; batch 64; `model.fit` with the test set as
validation data. Same Fashion-MNIST files as fashion_jax (the tutorial's `keras.datasets` download
is replaced by reading the identical IDX files). Prints one JSON line per epoch:
{"epoch", "epoch_seconds", "test_accuracy", "test_loss"}.

  python benchmarks/keras_peer.py --epochs 10 [--batch_size 64]
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--idx_dir", default=None)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from fashion_jax import data

    tf.config.set_visible_devices([], "GPU")
    idx = data.resolve_idx_dir(args.idx_dir)
    train, test = data.read_idx(idx, "train"), data.read_idx(idx, "test")
    x_train, x_test = train.images / 255.0, test.images / 255.0

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D(2, 2),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D(2, 2),
            keras.layers.Flatten(),
            keras.layers.Dense(64),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class Report(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.t_train = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            print(
                json.dumps(
                    {
                        "epoch": epoch + 1,
                        "epoch_seconds": self.t_train - self.t,
                        "test_accuracy": float(logs["val_accuracy"]),
                        "test_loss": float(logs["val_loss"]),
                    }
                ),
                flush=True,
            )

    model.fit(
        x_train,
        train.labels,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(x_test, test.labels),
        callbacks=[Report()],
        verbose=0,
    )


if __name__ == "__main__":
    main()
