import gzip

import numpy as np
import pytest

from implicit_jax.train import data


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def fake_fashion_mnist(folder, n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    for key, name in data.FASHION_MNIST_FILES.items():
        n = n_train if key.startswith("train") else n_test
        array = rng.integers(0, 256, (n, 28, 28)) if key.endswith("images") else rng.integers(0, 10, n)
        write_idx(folder / name, array)


def test_fashion_mnist_reader_parses_idx_files_and_standardises(tmp_path):
    fake_fashion_mnist(tmp_path)
    dataset = data.fashion_mnist(str(tmp_path))
    assert dataset.train_images.shape == (20, 28, 28, 1) and dataset.test_images.shape == (10, 28, 28, 1)
    assert dataset.train_images.dtype == np.float32 and dataset.train_labels.dtype == np.int32
    np.testing.assert_allclose(dataset.train_images.mean(), 0.0, atol=1e-5)
    assert data.fashion_mnist(str(tmp_path), train_subset=5).train_images.shape[0] == 5


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist(str(tmp_path))


def test_corrupt_idx_is_rejected(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")
    with pytest.raises(ValueError, match="its header says"):
        data.read_idx(str(path))


def test_digits_split_is_fixed_and_stratified():
    first, second = data.digits(), data.digits()
    assert first.image_shape == (8, 8, 1) and len(first.train_labels) + len(first.test_labels) == 1797
    np.testing.assert_array_equal(first.test_labels, second.test_labels)
    assert set(np.unique(first.test_labels)) == set(range(10))


def test_check_dataset_names_the_problem():
    good = data.synthetic(num_train=8, num_test=4)
    with pytest.raises(ValueError, match=r"images must have shape \(n, height, width, channels\)"):
        data.check_dataset(good._replace(train_images=good.train_images[..., 0]))
    with pytest.raises(ValueError, match="labels must have shape"):
        data.check_dataset(good._replace(test_labels=good.test_labels[:2]))
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 4\)"):
        data.check_dataset(good._replace(train_labels=good.train_labels + 10))
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("cifar")


def test_batches_are_a_pure_function_of_the_step_and_cover_each_epoch():
    n, batch = 50, 8
    per_epoch = data.steps_per_epoch(n, batch)
    epoch = np.concatenate([data.batch_indices(s, n, batch, seed=3) for s in range(per_epoch)])
    assert len(np.unique(epoch)) == per_epoch * batch
    np.testing.assert_array_equal(data.batch_indices(7, n, batch, 3), data.batch_indices(7, n, batch, 3))
    assert not np.array_equal(data.batch_indices(0, n, batch, 3), data.batch_indices(per_epoch, n, batch, 3))
    with pytest.raises(ValueError, match="exceeds"):
        data.steps_per_epoch(4, 8)


def test_eval_batches_cover_every_example_once_with_padding():
    images, labels = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1), np.arange(10)
    batches = list(data.eval_batches(images, labels, 4))
    assert [valid for _, _, valid in batches] == [4, 4, 2]
    assert batches[-1][0].shape == (4, 1, 1, 1)
