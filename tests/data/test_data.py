import numpy as np
import pytest
import torch

from f2d2_diffusers.data import DIGITS_NUM_LEVELS, TOY_DATASETS, load_digits_levels, load_toy, load_vectors, sample_toy


def test_digits_splits():
    train, test = load_digits_levels("train"), load_digits_levels("test")
    assert train.shape == (1500, 1, 8, 8) and test.shape == (297, 1, 8, 8)
    assert train.dtype == torch.uint8 and int(train.max()) == DIGITS_NUM_LEVELS - 1 and int(train.min()) == 0
    torch.testing.assert_close(torch.cat([train, test]), load_digits_levels("all"))
    with pytest.raises(ValueError, match="split"):
        load_digits_levels("validation")


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toys_are_deterministic_and_splits_differ(name):
    a, b = load_toy(name, "train", 500), load_toy(name, "train", 500)
    torch.testing.assert_close(a, b)
    assert a.shape == (500, 2) and torch.isfinite(a).all() and a.abs().max() < 6
    assert not torch.allclose(a, load_toy(name, "test", 500))


def test_checkerboard_fills_alternate_squares():
    points = sample_toy("checkerboard", 4000, torch.Generator().manual_seed(0)) / 2
    cells = torch.floor(points).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()


def test_load_vectors_from_npy_and_csv(tmp_path):
    data = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    np.savetxt(tmp_path / "x.csv", data, delimiter=",", header="a,b,c", comments="")
    np.testing.assert_allclose(load_vectors(tmp_path / "x.npy").numpy(), data)
    np.testing.assert_allclose(load_vectors(tmp_path / "x.csv").numpy(), data, rtol=1e-6)


def test_load_vectors_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no data file"):
        load_vectors(tmp_path / "missing.npy")
    (tmp_path / "x.txt").write_text("1,2")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_vectors(tmp_path / "x.txt")
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="NaN"):
        load_vectors(tmp_path / "nan.npy")
    np.save(tmp_path / "flat.npy", np.zeros(4))
    with pytest.raises(ValueError, match="2-D"):
        load_vectors(tmp_path / "flat.npy")
    (tmp_path / "words.csv").write_text("a,b\nc,d\n")
    with pytest.raises(ValueError, match="comma-separated numbers"):
        load_vectors(tmp_path / "words.csv")


def test_load_vectors_refuses_complex_arrays(tmp_path):
    """The imaginary part used to be dropped silently."""
    np.save(tmp_path / "c.npy", np.ones((3, 2)) * (1 + 2j))
    with pytest.raises(ValueError, match=r"c\.npy: holds complex numbers \(complex128\); vectors must be real"):
        load_vectors(tmp_path / "c.npy")
    np.save(tmp_path / "o.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"o\.npy: cannot read it as a \.npy array"):
        load_vectors(tmp_path / "o.npy")


def test_csv_header_only_when_the_first_row_has_no_number(tmp_path):
    """A first row with one text cell used to be dropped as a "header", losing a data row."""
    (tmp_path / "typo.csv").write_text("1,abc,3\n4,5,6\n")
    with pytest.raises(ValueError, match=r"typo\.csv: row 1 has 'abc', which is not a number"):
        load_vectors(tmp_path / "typo.csv")
    (tmp_path / "later.csv").write_text("x,y\n1,2\n3,oops\n")
    with pytest.raises(ValueError, match="row 3 has 'oops'"):
        load_vectors(tmp_path / "later.csv")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(ValueError, match=r"row 2 has 1 value\(s\); the rows before it have 2"):
        load_vectors(tmp_path / "ragged.csv")
    (tmp_path / "header.csv").write_text("# my points\nx,y\n1,2 # first\n\n3,4\n")
    assert load_vectors(tmp_path / "header.csv").tolist() == [[1.0, 2.0], [3.0, 4.0]]
    (tmp_path / "no-header.csv").write_text("1,2\n3,4\n")
    assert load_vectors(tmp_path / "no-header.csv").tolist() == [[1.0, 2.0], [3.0, 4.0]]
    (tmp_path / "only-header.csv").write_text("x,y\n")
    with pytest.raises(ValueError, match="no data rows"):
        load_vectors(tmp_path / "only-header.csv")
    np.save(tmp_path / "big.npy", np.array([[1e300, 0.0]]))
    with pytest.raises(ValueError, match="beyond the float32 range"):
        load_vectors(tmp_path / "big.npy")
