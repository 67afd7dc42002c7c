"""The optional backends work here: a tiny CPU DALI pipeline and a tiny FFCV write/read round trip.

With SDMP_REQUIRE=dali,ffcv (``make test``) a missing or broken install fails these tests instead of
skipping them; the DALI and FFCV loaders of later issues build on exactly these calls.
"""
import numpy as np
import pytest

from conftest import require


@pytest.mark.dali
def test_dali_cpu_pipeline_decodes_a_folder(image_folder):
    dali = require("nvidia.dali", "dali")
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=4, num_threads=1, device_id=None)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=str(image_folder / "train"), random_shuffle=False, name="Reader")
        images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
        crops = fn.random_resized_crop(images, size=24, random_area=[0.2, 1.0])
        return fn.crop_mirror_normalize(crops, dtype=types.FLOAT, output_layout="CHW", mean=[0.0] * 3, std=[255.0] * 3), labels

    p = pipe()
    p.build()
    images, labels = p.run()
    arr = np.stack([np.asarray(images[i]) for i in range(4)])
    assert arr.shape == (4, 3, 24, 24) and 0 <= arr.min() and arr.max() <= 1.0
    assert dali.__version__


@pytest.mark.ffcv
def test_ffcv_write_and_read_without_jit(image_folder, tmp_path):
    require("ffcv", "ffcv")
    from ffcv.fields import IntField, RGBImageField
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.pipeline.compiler import Compiler
    from ffcv.transforms import ToTensor
    from ffcv.writer import DatasetWriter
    from PIL import Image

    from sdmp_fast.data.folders import scan_folder

    split, _ = scan_folder(image_folder / "train")
    samples = [(np.asarray(Image.open(p).convert("RGB").resize((32, 32))), lab) for p, lab in split.samples[:8]]

    class DS:
        def __len__(self):
            return len(samples)

        def __getitem__(self, i):
            return samples[i]

    path = tmp_path / "tiny.beton"
    DatasetWriter(str(path), {"image": RGBImageField(write_mode="raw"), "label": IntField()}, num_workers=1).from_indexed_dataset(DS())
    Compiler.set_enabled(False)  # plain Python instead of numba: no JIT wait in unit tests
    try:
        loader = Loader(str(path), batch_size=4, num_workers=1, order=OrderOption.SEQUENTIAL,
                        pipelines={"image": [SimpleRGBImageDecoder(), ToTensor()], "label": [IntDecoder(), ToTensor()]})
        images, labels = next(iter(loader))
    finally:
        Compiler.set_enabled(True)
    assert tuple(images.shape) == (4, 32, 32, 3)
    assert np.array_equal(images[0].numpy(), samples[0][0])  # raw mode is exact
    assert labels.reshape(-1).tolist() == [s[1] for s in samples[:4]]
