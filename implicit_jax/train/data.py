"""Offline datasets and a deterministic, shuffling batch pipeline.

* :func:`fashion_mnist`: the 70,000 28x28 Fashion-MNIST images (60,000 train / 10,000
  test, the official split) from the IDX files of Debian's ``dataset-fashion-mnist``
  package (``/usr/share/datasets/fashion-mnist``), or any folder holding the same files.
* :func:`digits`: scikit-learn's bundled 8x8 digits (1,797 images), split 80/20 with a
  fixed seed.
* :func:`synthetic`: Gaussian class clusters, for smoke tests (seconds).

Images are float32 in ``[0, 1]`` standardised by the training set's mean and standard
deviation, shaped ``(n, height, width, channels)``; labels are int32. Batches are drawn
by :func:`batch_indices`: a permutation per epoch seeded by ``(seed, epoch)``, so the
batch at any step is a pure function of the step (a resumed run sees exactly the batches
an uninterrupted one would), and only the batch itself is gathered, never the dataset.
"""

from __future__ import annotations

import gzip
import os
from typing import NamedTuple

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
#: dataset names ``load`` (and the config's ``dataset``) accepts.
DATASETS = ("fashion_mnist", "digits", "synthetic")


class Dataset(NamedTuple):
    """Train and test arrays (images ``(n, h, w, c)`` float32, labels ``(n,)`` int32)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])


def check_dataset(dataset: Dataset) -> Dataset:
    """Raise a ValueError naming the problem if shapes, dtypes or labels do not fit together."""
    for split in ("train", "test"):
        images, labels = getattr(dataset, f"{split}_images"), getattr(dataset, f"{split}_labels")
        if images.ndim != 4:
            raise ValueError(f"{split} images must have shape (n, height, width, channels), got {images.shape}.")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{split} labels must have shape ({images.shape[0]},) to match the images, got {labels.shape}.")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= dataset.num_classes:
            raise ValueError(
                f"{split} labels must be integers in [0, {dataset.num_classes}), got dtype {labels.dtype} "
                f"and range [{labels.min()}, {labels.max()}]."
            )
    if dataset.test_images.shape[1:] != dataset.train_images.shape[1:]:
        raise ValueError(
            f"train and test images differ in shape: {dataset.train_images.shape[1:]} vs {dataset.test_images.shape[1:]}."
        )
    return dataset


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(), train.std()
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def read_idx(path: str) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex()}).")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {array.size} values, its header says {shape}.")
    return array.reshape(shape)


def fashion_mnist(path: str | None = None, train_subset: int = 0, test_subset: int = 0) -> Dataset:
    """Fashion-MNIST from IDX files in ``path`` (default: Debian's ``dataset-fashion-mnist``).

    ``train_subset``/``test_subset`` > 0 keep the first that many examples (fast runs).
    """
    path = path or FASHION_MNIST_DIR
    missing = [name for name in FASHION_MNIST_FILES.values() if not os.path.exists(os.path.join(path, name))]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files {missing} not found in {path}. Install them with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu; they land in "
            f"{FASHION_MNIST_DIR}), or pass data_dir= a folder holding {sorted(FASHION_MNIST_FILES.values())}."
        )
    arrays = {key: read_idx(os.path.join(path, name)) for key, name in FASHION_MNIST_FILES.items()}
    train_images, test_images = _standardize(arrays["train_images"] / 255.0, arrays["test_images"] / 255.0)
    dataset = Dataset(
        train_images[..., None],
        arrays["train_labels"].astype(np.int32),
        test_images[..., None],
        arrays["test_labels"].astype(np.int32),
        10,
    )
    return check_dataset(subset(dataset, train_subset, test_subset))


def digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 8x8 digits, split train/test with a fixed seed (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    x_train, x_test = _standardize(x_train, x_test)
    return check_dataset(Dataset(x_train[..., None], y_train.astype(np.int32), x_test[..., None], y_test.astype(np.int32), 10))


def synthetic(num_train: int = 512, num_test: int = 256, image_size: int = 8, num_classes: int = 4, seed: int = 0) -> Dataset:
    """Gaussian clusters around random class templates, as ``(n, size, size, 1)`` images."""
    rng = np.random.default_rng(seed)
    templates = rng.standard_normal((num_classes, image_size, image_size, 1)).astype(np.float32)

    def draw(n):
        labels = rng.integers(0, num_classes, n).astype(np.int32)
        return (templates[labels] + 1.5 * rng.standard_normal((n, image_size, image_size, 1))).astype(np.float32), labels

    (x_train, y_train), (x_test, y_test) = draw(num_train), draw(num_test)
    return check_dataset(Dataset(x_train, y_train, x_test, y_test, num_classes))


def subset(dataset: Dataset, train_subset: int = 0, test_subset: int = 0) -> Dataset:
    """Keep the first ``train_subset`` / ``test_subset`` examples (0 keeps all)."""
    n_train = train_subset or len(dataset.train_labels)
    n_test = test_subset or len(dataset.test_labels)
    return dataset._replace(
        train_images=dataset.train_images[:n_train],
        train_labels=dataset.train_labels[:n_train],
        test_images=dataset.test_images[:n_test],
        test_labels=dataset.test_labels[:n_test],
    )


def load(name: str, *, data_dir: str = "", train_subset: int = 0, test_subset: int = 0, seed: int = 0) -> Dataset:
    """Load a dataset by name (one of ``DATASETS``)."""
    if name == "fashion_mnist":
        return fashion_mnist(data_dir or None, train_subset, test_subset)
    if name == "digits":
        return subset(digits(seed), train_subset, test_subset)
    if name == "synthetic":
        return subset(synthetic(seed=seed), train_subset, test_subset)
    raise ValueError(f"unknown dataset {name!r}; valid names are {list(DATASETS)}.")


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped, so every batch shards evenly)."""
    if batch_size > num_examples:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} training examples.")
    return num_examples // batch_size


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the batch at global ``step``: epoch ``step // steps_per_epoch``, shuffled by ``(seed, epoch)``."""
    per_epoch = steps_per_epoch(num_examples, batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng((seed, epoch)).permutation(num_examples)
    return order[position * batch_size : (position + 1) * batch_size]


def eval_batches(images: np.ndarray, labels: np.ndarray, batch_size: int):
    """Yield ``(images, labels, num_valid)`` covering every example once; the last batch is zero-padded."""
    for start in range(0, len(labels), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        valid = len(y)
        if valid < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - valid,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, np.zeros(batch_size - valid, y.dtype)])
        yield x, y, valid
