import numpy as np
import pytest

from spin.data.mixed_dataset import MixedDataset
from spin.data.spin_dataset import SpinDataset


class _Items:
    """A stand-in dataset: item i is (name, i)."""

    def __init__(self, name, size):
        self.name, self.size, self.epoch = name, size, None

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return (self.name, index)

    def set_epoch(self, epoch):
        self.epoch = epoch


def test_draws_follow_the_ratios_within_sampling_error():
    datasets = [_Items("a", 50), _Items("b", 7), _Items("c", 1000)]
    ratios = [0.3, 0.6, 0.1]  # the paper's 30 / 60 / 10 mix
    mixed = MixedDataset(datasets, ratios, length=20_000, seed=1)
    sources = np.array([mixed.source(i) for i in range(len(mixed))])
    counts = np.bincount(sources[:, 0], minlength=3)
    p = np.array(ratios)
    sigma = np.sqrt(len(mixed) * p * (1 - p))
    assert (np.abs(counts - len(mixed) * p) < 3 * sigma).all(), counts
    # uniform within a dataset: every sample of the small one appears, none out of range
    small = sources[sources[:, 0] == 1, 1]
    assert set(small.tolist()) == set(range(7))
    per_sample = np.bincount(small, minlength=7)
    assert per_sample.min() > 0.8 * per_sample.mean()


def test_ratios_are_normalised_and_zero_ratio_is_never_drawn():
    mixed = MixedDataset([_Items("a", 3), _Items("b", 3)], [0.0, 5.0], length=200)
    np.testing.assert_allclose(mixed.probabilities, [0.0, 1.0])
    assert all(mixed[i][0] == "b" for i in range(len(mixed)))


def test_default_length_is_the_largest_dataset():
    assert len(MixedDataset([_Items("a", 3), _Items("b", 11)], [1, 1])) == 11


def test_draws_are_deterministic_per_seed_and_epoch():
    datasets = [_Items("a", 100), _Items("b", 100)]
    first = MixedDataset(datasets, [1, 1], seed=0)
    again = MixedDataset(datasets, [1, 1], seed=0)
    other = MixedDataset(datasets, [1, 1], seed=1)
    draws = [first[i] for i in range(100)]
    assert draws == [again[i] for i in range(100)]
    assert draws != [other[i] for i in range(100)]
    first.set_epoch(2)
    assert datasets[0].epoch == 2 and datasets[1].epoch == 2
    assert draws != [first[i] for i in range(100)]


@pytest.mark.parametrize(
    "ratios, message",
    [
        ([1.0], "one ratio per dataset"),
        ([1.0, -0.5], "non-negative"),
        ([0.0, 0.0], "not all be zero"),
        ([1.0, float("nan")], "finite"),
    ],
)
def test_bad_ratios_are_rejected(ratios, message):
    with pytest.raises(ValueError, match=message):
        MixedDataset([_Items("a", 3), _Items("b", 3)], ratios)


def test_empty_dataset_with_positive_ratio_is_rejected():
    with pytest.raises(ValueError, match="'empty'|empty"):
        MixedDataset([_Items("a", 3), _Items("empty", 0)], [1, 1])
    assert len(MixedDataset([_Items("a", 3), _Items("empty", 0)], [1, 0])) == 3


def test_repeated_draws_of_a_sample_get_independent_augmentations(tiny_dataset_path):
    npz, folder = tiny_dataset_path
    spin = SpinDataset(npz, folder, name="tiny", img_size=32, seed=0)
    mixed = MixedDataset([spin], [1.0], length=40)
    by_sample = {}
    for i in range(len(mixed)):
        item = mixed[i]
        params = (bool(item["is_flipped"]), float(item["rot_angle"]), float(item["scale_factor"]))
        by_sample.setdefault(item["sample_index"], set()).add(params)
    assert all(len(p) > 1 for p in by_sample.values())
    assert "tiny" in mixed.summary() and mixed.skipped == 0
