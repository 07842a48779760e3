"""Augmentation draws and their meaning (netspec/protocol/augment.py, netspec/protocol/counter_hash.py), against an
independent reference: np.pad, a slice, [::-1] and a zeroed window, written here image by image."""
from __future__ import annotations

import numpy as np
import pytest

import netspec as ns
from netspec.protocol.augment import apply_plan, batch_plan, draw
from netspec.protocol.counter_hash import below, fmix32, hash32


def reference(x: np.ndarray, dy: int, dx: int, flip: bool, cy: int, cx: int, config: ns.spec.experiment.AugmentConfig) -> np.ndarray:
    """One image (C, H, W) augmented the plain way."""
    _, height, width = x.shape
    p = config.crop_padding
    padded = np.pad(x, ((0, 0), (p, p), (p, p)), mode="constant" if config.pad_mode == "zeros" else "reflect")
    out = padded[:, dy:dy + height, dx:dx + width]
    if flip:
        out = out[:, :, ::-1]
    out = out.copy()
    out[:, cy:cy + config.cutout, cx:cx + config.cutout] = 0
    return out


CONFIGS = [
    dict(crop_padding=4, pad_mode="zeros", flip=True, cutout=8),
    dict(crop_padding=3, pad_mode="reflect", flip=True, cutout=0),
    dict(crop_padding=0, flip=True, cutout=5),
    dict(crop_padding=2, pad_mode="reflect", flip=False, cutout=3),
]


@pytest.mark.parametrize("settings", CONFIGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_plan_applies_crop_flip_and_cutout_as_the_plain_reference(settings: dict) -> None:
    config = ns.spec.experiment.AugmentConfig(**settings)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3, 12, 10)).astype(np.float32)
    batches = rng.permutation(40).reshape(4, 10)
    draws = draw(config, seed=7, epoch=3, images=batches, height=12, width=10)
    p = batch_plan(config, 7, 3, batches, 12, 10)
    for step in range(4):
        out = apply_plan(x[batches[step]], type(p)(*(getattr(p, f)[step] for f in p.__dataclass_fields__)))
        for j, image in enumerate(batches[step]):
            want = reference(x[image], draws.dy[step, j], draws.dx[step, j], draws.flip[step, j], draws.cut_y[step, j],
                             draws.cut_x[step, j], config)
            assert np.array_equal(out[j], want)


def test_draws_are_a_function_of_seed_epoch_and_image_only() -> None:
    config = ns.spec.experiment.AugmentConfig(crop_padding=4, flip=True, cutout=8)
    images = np.arange(2000)
    a = draw(config, 1, 2, images, 32, 32)
    again = draw(config, 1, 2, images[::-1].copy(), 32, 32)  # another order: the same draw per image
    assert np.array_equal(a.dy, again.dy[::-1]) and np.array_equal(a.flip, again.flip[::-1])
    other_epoch, other_seed = draw(config, 1, 3, images, 32, 32), draw(config, 2, 2, images, 32, 32)
    assert (a.dx != other_epoch.dx).mean() > 0.8 and (a.dx != other_seed.dx).mean() > 0.8
    # Each draw covers its range evenly: 9 crop offsets, a fair flip, 25 cutout corners.
    assert set(np.unique(a.dy)) == set(range(9)) and set(np.unique(a.cut_x)) == set(range(25))
    assert abs(a.flip.mean() - 0.5) < 0.05 and abs(np.bincount(a.dx, minlength=9) / 2000 - 1 / 9).max() < 0.03
    assert abs(np.corrcoef(a.dy, a.dx)[0, 1]) < 0.06  # different slots are not the same draw


def test_counter_hash_bit_recipe() -> None:
    # MurmurHash3's fmix32 on known inputs (computed with Python integers, independently of numpy).
    def fmix(h: int) -> int:
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        return h ^ (h >> 16)

    words = [5, 1, 9, 123456, 4]
    h = fmix(words[0] ^ 0x9E3779B9)
    for w in words[1:]:
        h = fmix(h ^ ((w * 0x9E3779B9 + 0x7F4A7C15) & 0xFFFFFFFF))
    assert int(hash32(*words)) == h
    assert int(fmix32(np.uint32(1))) == fmix(1)
    assert int(below(10, np.uint32(h))) == (h * 10) >> 32


def test_augmentation_needs_images_and_fitting_sizes() -> None:
    mlp = ns.Network(input_shape=(3072,), layers=[ns.Linear(out_features=10)])
    with pytest.raises(ValueError, match="needs image input"):
        ns.Experiment(network=mlp, train=ns.TrainConfig(augment={"flip": True}))
    cnn = ns.Network(input_shape=(3, 8, 8), layers=[ns.Flatten(), ns.Linear(out_features=10)])
    with pytest.raises(ValueError, match="cutout 9 is larger"):
        ns.Experiment(network=cnn, train=ns.TrainConfig(augment={"cutout": 9}))
    with pytest.raises(ValueError, match="crop_padding 8 with pad_mode 'reflect'"):
        ns.Experiment(network=cnn, train=ns.TrainConfig(augment={"crop_padding": 8, "pad_mode": "reflect"}))


@pytest.mark.parametrize("settings", CONFIGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_the_plain_torch_references_augmentation_is_the_plans(settings: dict) -> None:
    import torch

    from benchmarks.plain_torch import pad_split, plain_augment

    config = ns.spec.experiment.AugmentConfig(**settings)
    x = np.random.default_rng(1).standard_normal((30, 3, 12, 10)).astype(np.float32)
    index = np.arange(30)[::-1].copy()
    draws = draw(config, 3, 2, index, 12, 10)
    plain = plain_augment(pad_split(torch.from_numpy(x), config), torch.from_numpy(index), draws, config, 12, 10)
    p = batch_plan(config, 3, 2, index[None], 12, 10)
    want = apply_plan(x[index], type(p)(*(getattr(p, f)[0] for f in p.__dataclass_fields__)))
    assert np.array_equal(plain.numpy(), want)
