"""What each loader declares, and the data settings a loader cannot read (loaders.check_config)."""
import pytest

import loaders
from sdmp_fast.config import ConfigError, load_config


def check(*overrides: str) -> None:
    loaders.check_config(load_config(None, list(overrides)))


def test_declarations():
    assert loaders.info("synthetic").reads == () and loaders.info("torch").evaluation
    assert loaders.readers("beton") == ["ffcv", "nvjpeg"] and loaders.readers("webdataset") == ["dali"]
    assert loaders.evaluation_loaders() == ["torch"]
    with pytest.raises(KeyError, match="unknown loader 'nope'"):
        loaders.info("nope")


@pytest.mark.parametrize("overrides, message", [
    (["data.loader=nope"], r"data.loader = 'nope': choose one of dali, ffcv, nvjpeg, synthetic, torch"),
    (["data.format=webdataset", "run.knn=false"],
     r"data.format = 'webdataset' is read by the dali loader only, not data.loader = 'torch'; use --loader dali"),
    (["data.format=webdataset", "data.loader=dali"], r"with data.format = 'webdataset' set run.knn=false"),
    (["data.beton=x.beton"],
     r"data.beton is read by the ffcv and nvjpeg loaders \(--loader ffcv / nvjpeg\), not data.loader = 'torch'"),
    (["data.loader=ffcv"], r"--loader ffcv reads an FFCV .beton: set data.beton=PATH"),
    (["data.augment_impl=triton"], r"data.augment_impl = 'triton' replaces the batched augmentation of the ffcv and "
                                   r"nvjpeg loaders; data.loader = 'torch' does not use it \(set data.augment_impl=torch "
                                   r"or --loader nvjpeg\)"),
])
def test_what_a_loader_cannot_read_is_an_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check(*overrides)


def test_what_a_loader_reads_passes():
    check("data.format=webdataset", "data.loader=dali", "run.knn=false")
    check("data.loader=ffcv", "data.beton=x.beton")
    check("data.loader=nvjpeg", "data.beton=x.beton", "data.augment_impl=triton")
    check("data.loader=synthetic")
    with pytest.raises(ConfigError, match="two different sources"):  # not a loader's matter: load_config refuses it
        load_config(None, ["data.beton=x.beton", "data.format=webdataset"])
