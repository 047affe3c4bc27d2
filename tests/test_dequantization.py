import math

import pytest
import torch

from f2d2_diffusers.dequantization import (
    bits_per_dim,
    dequantize,
    discrete_log_prob,
    levels_to_model_space,
    standard_normal_log_prob,
)


def test_standard_normal_log_prob_by_hand():
    x = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    expected = torch.tensor([-math.log(2 * math.pi), -2.5 - math.log(2 * math.pi)])
    torch.testing.assert_close(standard_normal_log_prob(x), expected)


def test_levels_map_to_bin_centres_and_edges():
    levels = torch.tensor([[0, 16]])
    torch.testing.assert_close(levels_to_model_space(levels, 17), torch.tensor([[2 * 0.5 / 17 - 1, 2 * 16.5 / 17 - 1]]))
    torch.testing.assert_close(levels_to_model_space(levels, 17, noise=torch.zeros(1, 2)), torch.tensor([[-1.0, 2 * 16 / 17 - 1]]))


def test_dequantized_values_stay_inside_their_bins_and_are_reproducible():
    levels = torch.randint(0, 256, (8, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    z = dequantize(levels, 256, generator=torch.Generator().manual_seed(1))
    y = (z + 1) / 2 * 256
    assert ((y >= levels) & (y < levels + 1)).all()
    torch.testing.assert_close(z, dequantize(levels, 256, generator=torch.Generator().manual_seed(1)))


def test_per_sample_generators_make_each_sample_independent_of_the_batch():
    levels = torch.randint(0, 17, (3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    batch = dequantize(levels, 17, generator=[torch.Generator().manual_seed(i) for i in range(3)])
    single = dequantize(levels[1:2], 17, generator=[torch.Generator().manual_seed(1)])
    torch.testing.assert_close(batch[1:2], single)


def test_bits_per_dim_by_hand():
    # d = 2, L = 4: log P = log p + 2 log 2 - 2 log 4 = log p - 2 log 2.
    log_p = torch.tensor([1.0])
    torch.testing.assert_close(discrete_log_prob(log_p, 2, 4), torch.tensor([1.0 - 2 * math.log(2)]))
    torch.testing.assert_close(bits_per_dim(log_p, 2, 4), torch.tensor([-(1.0 - 2 * math.log(2)) / (2 * math.log(2))]))
    # Continuous: no offset.
    torch.testing.assert_close(bits_per_dim(log_p, 2), torch.tensor([-1.0 / (2 * math.log(2))]))


def test_uniform_model_on_the_data_cube_is_exactly_log2_L_bits():
    # The uniform density on [-1, 1]^d has log p = -d log 2: every grey level then has probability 1/L.
    d, levels = 64, 17
    bpd = bits_per_dim(torch.tensor([-d * math.log(2)]), d, levels)
    torch.testing.assert_close(bpd, torch.tensor([math.log2(levels)]))


def test_out_of_range_levels_are_rejected():
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 16\]"):
        dequantize(torch.tensor([[17]]), 17)
    with pytest.raises(ValueError, match="integer levels"):
        dequantize(torch.tensor([[0.5]]), 17)


def test_bad_levels_and_log_probs_get_clear_errors():
    from f2d2_diffusers.dequantization import check_num_levels

    assert check_num_levels(17) == 17 and check_num_levels(None) is None
    for bad in (1, 2.5, True, "256"):
        with pytest.raises(ValueError, match="num_levels must be an integer >= 2"):
            check_num_levels(bad)
    with pytest.raises(ValueError, match=r"log_prob contains NaN or infinite values \(sample \[1\]\)"):
        bits_per_dim(torch.tensor([1.0, float("nan")]), 2, 4)
    with pytest.raises(TypeError, match="log_prob must be a floating-point"):
        bits_per_dim(torch.tensor([1]), 2, 4)
    with pytest.raises(ValueError, match="num_dims must be a positive integer"):
        bits_per_dim(torch.tensor([1.0]), 0)
    with pytest.raises(TypeError, match="levels must hold integer grey levels"):
        dequantize(torch.ones(1, 2, dtype=torch.bool), 17)
    with pytest.raises(ValueError, match=r"levels must have shape \(batch, \*dims\)"):
        dequantize(torch.zeros(0, 2, dtype=torch.long), 17)
    with pytest.raises(ValueError, match="integer levels"):
        dequantize(torch.tensor([[float("inf")]]), 17)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        dequantize(torch.zeros(1, 2, dtype=torch.long), 17, generator=0)
    # Any integer dtype is read as its values (min/max have no uint16 kernels).
    levels = torch.tensor([[0, 5, 16]])
    torch.testing.assert_close(
        dequantize(levels.to(torch.uint16), 17, torch.Generator().manual_seed(0)),
        dequantize(levels, 17, torch.Generator().manual_seed(0)),
    )


def test_pixels_to_levels_scales_8_and_16_bit_pixels():
    import numpy as np

    from f2d2_diffusers.dequantization import pixels_to_levels

    pixels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(pixels_to_levels(pixels, 256), pixels)
    # A 16-bit copy of an 8-bit image (p * 257) gets the same levels.
    for levels in (17, 256):
        np.testing.assert_array_equal(pixels_to_levels(pixels.astype(np.uint16) * 257, levels, 65535), pixels_to_levels(pixels, levels))
    with pytest.raises(ValueError, match=r"pixels must lie in \[0, 255\]"):
        pixels_to_levels(np.array([300]), 17)
    with pytest.raises(ValueError, match="max_value must be a positive integer"):
        pixels_to_levels(pixels, 17, max_value=0)
