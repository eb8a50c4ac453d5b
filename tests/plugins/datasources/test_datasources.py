"""The datasources plugins: image folders, text + tokenizer.json, WAV files and loader scripts.

Every file is made here: PNG / BMP through Pillow, a tokenizer.json through the tokenizers library, WAV
through the standard library's ``wave``, models through ``onnx.helper``. Sources are opened through the plugin
manager's ``onnxopt_open_dataset`` hook as the host opens them; bad data goes through the CLI.
"""

from __future__ import annotations

import re
import struct
import sys
import wave
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.cli import main
from onnxopt.errors import DataError, UsageError
from onnxopt.plugins import get_plugin_manager
from onnxopt_plugins.datasources import audio_reader, source, stream, text_reader

Image = pytest.importorskip("PIL.Image")
tokenizers = pytest.importorskip("tokenizers")

SILERO = Path("/root/.cache/onnx-real/models/silero-vad-6.2.3__silero_vad.onnx")
RNG = np.random.default_rng(0)


def _out(name: str, rank: int, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph output of known rank and open dims (the checker wants a shape on every output)."""
    return helper.make_tensor_value_info(name, dtype, [f"{name}_{i}" for i in range(rank)])


def _save(path: Path, nodes: list, inputs: list, outputs: list, initializers: list = ()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def conv_model(path: Path, dims: list, dtype: int = TensorProto.FLOAT) -> Path:
    """An image model: Conv + Relu on input ``x`` of ``dims`` (NCHW with 3 or 1 channels, or NHWC via Transpose)."""
    nhwc = dims[3] in (1, 3) and dims[1] not in (1, 3)
    channels = dims[3] if nhwc else dims[1]
    weight = numpy_helper.from_array(
        RNG.standard_normal((4, channels if isinstance(channels, int) else 3, 3, 3)).astype(np.float32), "w"
    )
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT)]
    nodes.append(
        helper.make_node("Transpose", ["xf"], ["xt"], perm=[0, 3, 1, 2])
        if nhwc
        else helper.make_node("Identity", ["xf"], ["xt"])
    )
    nodes += [helper.make_node("Conv", ["xt", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["out"])]
    return _save(path, nodes, [helper.make_tensor_value_info("x", dtype, dims)],
                 [_out("out", 4)], [weight])  # fmt: skip


def text_model(path: Path, rows: int, names: tuple[str, str, str] = ("input_ids", "attention_mask", "token_type_ids"),
               seq: str | int = "seq") -> Path:  # fmt: skip
    """An encoder stand-in: an embedding table of ``rows`` rows (Gather behind a Cast), masked, plus type ids."""
    ids, mask, types = names
    table = numpy_helper.from_array(RNG.standard_normal((rows, 4)).astype(np.float32), "word_embeddings")
    nodes = [
        helper.make_node("Cast", [ids], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Gather", ["word_embeddings", "ids32"], ["emb"]),
        helper.make_node("Cast", [mask], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", [types], ["typesf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["maskf", "typesf"], ["sum"]),
        helper.make_node("Unsqueeze", ["sum", "axis"], ["sum3"]),
        helper.make_node("Mul", ["emb", "sum3"], ["hidden"]),
    ]
    axis = numpy_helper.from_array(np.array([2], np.int64), "axis")
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", seq]) for n in names]
    return _save(path, nodes, inputs, [_out("hidden", 3)], [table, axis])


def vad_model(path: Path) -> Path:
    """silero-vad's input signature: input[?, ?] float, state[2, ?, 128] float, sr int64 scalar."""
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["srf", "zero"], ["sr0"]),
        helper.make_node("Add", ["mean", "sr0"], ["output"]),
        helper.make_node("Identity", ["state"], ["stateN"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero")]
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, None]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, None, 128]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
    ]
    outputs = [_out("output", 2), _out("stateN", 3)]
    return _save(path, nodes, inputs, outputs, inits)


def write_tokenizer(path: Path, words: list[str]) -> Path:
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.save(str(path))
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> Path:
    """``samples`` in [-1, 1] ([frames] or [frames, channels]) as PCM of ``width`` bytes."""
    frames = samples if samples.ndim == 2 else samples[:, None]
    scaled = np.round(frames * (2 ** (8 * width - 1) - 1)).astype(np.int64)
    if width == 1:  # 8-bit WAV is unsigned
        raw = (scaled + 128).astype(np.uint8).tobytes()
    elif width == 3:
        raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in scaled.ravel())
    else:
        raw = scaled.astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(frames.shape[1])
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(raw)
    return path


def write_images(folder: Path, count: int, size: tuple[int, int] = (20, 30), mode: str = "RGB") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        shape = (*size, 3) if mode == "RGB" else size
        paths.append(folder / f"img{i:02d}.png")
        Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8), mode).save(paths[-1])
    return paths


def open_data(src: str, model_path: Path, **options):
    options = {"seed": 0, "batch_size": 32, "shapes": {}, **options}
    dataset = get_plugin_manager().hook.onnxopt_open_dataset(
        source=str(src), model=ir.load(model_path), options=options
    )
    assert dataset is not None, f"no plugin claimed {src}"
    return dataset


def run_all(model_path: Path, dataset) -> list[list[np.ndarray]]:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in dataset.feeds()]


# --- the source string ------------------------------------------------------------------------------------------


def test_source_string_split_and_typed() -> None:
    assert source.split("pages/") == ("pages/", {})
    path, raw = source.split("pages/?preset=imagenet, size=480x640,mean=0.5:0.4:0.3,scale=1/255")
    assert path == "pages/" and raw["size"] == "480x640"
    values = source.parse(
        "s", "x", raw, {"preset": str, "size": source.size, "mean": source.numbers, "scale": source.number}
    )
    assert (
        values["size"] == (480, 640) and values["mean"] == (0.5, 0.4, 0.3) and values["scale"] == pytest.approx(1 / 255)
    )
    assert source.size("64") == (64, 64)


@pytest.mark.parametrize("text, message", [
    ("d/?bogus=1", "unknown option bogus for x (valid: samples, size)"),
    ("d/?size", "not key=value"),
    ("d/?size=1,size=2", "given twice"),
    ("d/?size=0x4", "expected N or HxW"),
    ("d/?samples=-3", "positive integer"),
])  # fmt: skip
def test_source_string_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        _, raw = source.split(text)
        source.parse(text, "x", raw, {**source.SAMPLES, "size": source.size})


def test_pick_is_a_seeded_choice() -> None:
    assert list(stream.pick(5, None, 0)) == list(range(5)) and list(stream.pick(5, 9, 0)) == list(range(5))
    first, again, other = stream.pick(1000, 10, 0), stream.pick(1000, 10, 0), stream.pick(1000, 10, 1)
    assert (
        len(first) == 10 and list(first) == sorted(first) and list(first) == list(again) and list(first) != list(other)
    )


# --- images ---------------------------------------------------------------------------------------------------


def test_images_defaults_read_off_a_fixed_nchw_input(tmp_path: Path) -> None:
    model = conv_model(tmp_path / "m.onnx", [1, 3, 8, 6])
    files = write_images(tmp_path / "imgs", 3)
    dataset = open_data(tmp_path / "imgs", model)
    assert (dataset.num_feeds, dataset.num_samples, dataset.is_batched("x")) == (3, 3, True)
    assert "NCHW 3ch 8x6 stretch, RGB, scale 1/255, mean 0, std 1 (preset 0-1)" in dataset.description
    assert dataset.name == str(tmp_path / "imgs") and not dataset.synthetic and dataset.labels is None
    first = dataset.first_feed()["x"]
    expected = (
        np.asarray(Image.open(files[0]).convert("RGB").resize((6, 8), Image.Resampling.BILINEAR), np.float32) / 255
    )
    np.testing.assert_allclose(first[0], expected.transpose(2, 0, 1), atol=1e-6)
    assert len(run_all(model, dataset)) == 3


def test_images_preset_order_and_nhwc(tmp_path: Path) -> None:
    model = conv_model(tmp_path / "m.onnx", ["N", 4, 5, 3])
    (file,) = write_images(tmp_path / "imgs", 1, size=(4, 5))
    dataset = open_data(f"{tmp_path / 'imgs'}?preset=imagenet,order=bgr", model)
    pixels = np.asarray(Image.open(file), np.float32)[:, :, ::-1] / 255
    expected = (pixels - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(dataset.first_feed()["x"][0], expected, atol=1e-5)
    assert "NHWC" in dataset.description and "BGR" in dataset.description and "preset imagenet" in dataset.description
    custom = open_data(f"{tmp_path / 'imgs'}?scale=1,mean=128,std=2", model)
    np.testing.assert_allclose(custom.first_feed()["x"][0], (pixels[:, :, ::-1] * 255 - 128) / 2, atol=1e-4)
    assert "preset" not in custom.description


def test_images_uint8_input_gets_raw_pixels(tmp_path: Path) -> None:
    model = conv_model(tmp_path / "m.onnx", ["N", 4, 5, 3], TensorProto.UINT8)
    (file,) = write_images(tmp_path / "imgs", 1, size=(4, 5))
    feed = open_data(tmp_path / "imgs", model).first_feed()["x"]
    assert feed.dtype == np.uint8
    np.testing.assert_array_equal(feed[0], np.asarray(Image.open(file)))
    with pytest.raises(UsageError, match="raw pixels only"):
        open_data(f"{tmp_path / 'imgs'}?preset=imagenet", model)


def test_images_letterbox_and_keep(tmp_path: Path) -> None:
    model = conv_model(tmp_path / "m.onnx", ["N", 3, "H", "W"])
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (10, 20), (255, 255, 255)).save(folder / "tall.png")  # width 10, height 20
    boxed = open_data(f"{folder}?size=8,resize=letterbox,fill=0", model).first_feed()["x"][0]
    assert boxed.shape == (3, 8, 8)
    assert np.all(boxed[:, :, 2:6] == 1) and np.all(boxed[:, :, :2] == 0) and np.all(boxed[:, :, 6:] == 0)
    kept = open_data(f"{folder}?resize=keep,multiple=16,fill=0", model)
    feed = kept.first_feed()["x"][0]
    assert (
        feed.shape == (3, 32, 16)
        and np.all(feed[:, :20, :10] == 1)
        and np.all(feed[:, 20:, :] == 0)
        and np.all(feed[:, :, 10:] == 0)
    )
    assert "aspect kept, padded to x16 with 0" in kept.description and kept.num_feeds == 1
    limited = open_data(f"{folder}?resize=keep,size=10", model).first_feed()["x"][0]
    assert limited.shape == (3, 32, 32)  # fit in 10x10 (5x10), then padded to 32


def test_images_gray_and_colour(tmp_path: Path) -> None:
    write_images(tmp_path / "gray", 2, mode="L")
    write_images(tmp_path / "rgb", 1)
    colour_model, gray_model = (
        conv_model(tmp_path / "c.onnx", [1, 3, 4, 4]),
        conv_model(tmp_path / "g.onnx", [1, 1, 4, 4]),
    )
    replicated = open_data(tmp_path / "gray", colour_model).first_feed()["x"][0]
    assert np.array_equal(replicated[0], replicated[1]) and np.array_equal(replicated[1], replicated[2])
    assert open_data(tmp_path / "gray", gray_model).first_feed()["x"].shape == (1, 1, 4, 4)
    with pytest.raises(DataError, match="colour image, but the model takes 1 channel"):
        open_data(tmp_path / "rgb", gray_model)


def test_images_recursive_batches_and_samples(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 6)
    (tmp_path / "imgs" / "sub").mkdir()
    Image.new("RGB", (5, 5)).save(tmp_path / "imgs" / "sub" / "deep.bmp")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    dynamic = conv_model(tmp_path / "d.onnx", ["N", 3, 4, 4])
    dataset = open_data(tmp_path / "imgs", dynamic, batch_size=3)
    assert (dataset.num_samples, dataset.num_feeds) == (7, 3)
    assert [f["x"].shape[0] for f in dataset.feeds()] == [3, 3, 1]
    fixed = conv_model(tmp_path / "f.onnx", [2, 3, 4, 4])
    assert [f["x"].shape[0] for f in open_data(tmp_path / "imgs", fixed).feeds()] == [2, 2, 2]  # the 7th is dropped
    a, b, c = (open_data(f"{tmp_path / 'imgs'}?samples=3", dynamic, seed=s) for s in (0, 0, 5))
    assert a.num_samples == 3 and "3 of 7 files" in a.description
    np.testing.assert_array_equal(a.first_feed()["x"], b.first_feed()["x"])
    assert not np.array_equal(a.first_feed()["x"], c.first_feed()["x"])


def test_images_stream_feed_by_feed(tmp_path: Path) -> None:
    """Decoding happens as feeds are read: a file broken after opening fails only the feed that holds it."""
    files = write_images(tmp_path / "imgs", 4)
    dataset = open_data(tmp_path / "imgs", conv_model(tmp_path / "m.onnx", [1, 3, 4, 4]))
    files[3].write_bytes(files[3].read_bytes()[:60])  # truncated pixel data, header intact
    feeds = dataset.feeds()
    for _ in range(3):
        next(feeds)
    with pytest.raises(DataError, match="img03.png: cannot decode"):
        next(feeds)


def test_images_sizes_the_model_leaves_open(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 1)
    model = conv_model(tmp_path / "m.onnx", ["N", 3, "H", "W"])
    with pytest.raises(UsageError, match="no fixed height and width: add size=HxW"):
        open_data(tmp_path / "imgs", model)
    assert open_data(tmp_path / "imgs", model, shapes={"x": (1, 3, 8, 16)}).first_feed()["x"].shape == (1, 3, 8, 16)
    with pytest.raises(UsageError, match="fixed at 4x4"):
        open_data(f"{tmp_path / 'imgs'}?size=8", conv_model(tmp_path / "f.onnx", [1, 3, 4, 4]))


def test_images_leave_npy_folders_and_other_files_to_the_host(tmp_path: Path) -> None:
    model = ir.load(conv_model(tmp_path / "m.onnx", [1, 3, 4, 4]))
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 4, 4), np.float32))
    write_images(tmp_path / "sub", 1)
    dataset = get_plugin_manager().hook.onnxopt_open_dataset(source=str(tmp_path), model=model, options={})
    assert type(dataset).__name__ == "Dataset" and dataset.num_samples == 2


@pytest.mark.parametrize("module, package, make", [
    ("PIL.Image", "pillow", lambda tmp: (write_images(tmp / "imgs", 1), str(tmp / "imgs"),
                                         conv_model(tmp / "m.onnx", [1, 3, 4, 4]))),
    ("tokenizers", "tokenizers", lambda tmp: ((tmp / "c.txt").write_text("a\n"),
                                              f"{tmp / 'c.txt'}?tokenizer={write_tokenizer(tmp / 't.json', [])}",
                                              text_model(tmp / "m.onnx", rows=8))),
])  # fmt: skip
def test_missing_extra_is_one_line_naming_it(
    module: str, package: str, make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, data, model = make(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if the package were not installed
    with pytest.raises(DataError, match=re.escape(f"needs {package}: pip install 'onnxopt[data]'")):
        open_data(data, model)


# --- text -----------------------------------------------------------------------------------------------------


WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog"]


@pytest.fixture
def tok(tmp_path: Path) -> Path:
    return write_tokenizer(tmp_path / "tokenizer.json", WORDS)


def test_text_lines_tokenized_and_padded_per_batch(tmp_path: Path, tok: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat\n\non the mat with a dog\na\n")
    model = text_model(tmp_path / "m.onnx", rows=len(WORDS) + 4)
    dataset = open_data(f"{corpus}?tokenizer={tok},padding=longest", model, batch_size=2)
    assert (dataset.num_samples, dataset.num_feeds) == (3, 2)
    first, second = dataset.feeds()
    np.testing.assert_array_equal(first["input_ids"], [[2, 4, 5, 6, 3, 0, 0, 0], [2, 7, 4, 8, 1, 9, 10, 3]])
    np.testing.assert_array_equal(first["attention_mask"][0], [1, 1, 1, 1, 1, 0, 0, 0])
    assert first["input_ids"].dtype == np.int64 and second["input_ids"].shape == (1, 3)
    assert "padding longest" in dataset.description and "3 examples" in dataset.description
    assert len(run_all(model, dataset)) == 2


def test_text_max_length_bucket_and_jsonl_pairs(tmp_path: Path, tok: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "the cat sat on the mat"}\n"a"\n{"text": ["the cat", "a dog"]}\n{"text": "dog"}\n')
    model = text_model(tmp_path / "m.onnx", rows=32)
    fixed = open_data(f"{corpus}?tokenizer={tok},max_length=6,padding=max", model, batch_size=4)
    ids = fixed.first_feed()["input_ids"]
    assert ids.shape == (4, 6) and list(ids[0]) == [2, 4, 5, 6, 7, 3]  # truncated to 6, [SEP] kept
    assert list(fixed.first_feed()["token_type_ids"][2]) == [0, 0, 0, 1, 1, 1]  # the pair: [CLS] the [SEP] a dog [SEP]
    bucketed = open_data(f"{corpus}?tokenizer={tok},padding=bucket", model, batch_size=2)
    assert [f["input_ids"].shape[1] for f in bucketed.feeds()] == [3, 8]  # short ones together (in file order: 8, 7)
    field = tmp_path / "f.jsonl"
    field.write_text('{"body": "the dog"}\n')
    assert open_data(f"{field}?tokenizer={tok},field=body", model).num_samples == 1


def test_text_inputs_mapped_by_name(tmp_path: Path, tok: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat\n")
    model = text_model(tmp_path / "m.onnx", rows=32, names=("ids", "input_mask", "segment_ids"))
    feed = open_data(f"{corpus}?tokenizer={tok},max_length=6", model).first_feed()
    assert list(feed["ids"][0]) == [2, 4, 5, 3, 0, 0] and list(feed["input_mask"][0]) == [
        1,
        1,
        1,
        1,
        0,
        0,
    ]  # padded to max_length
    fixed = text_model(tmp_path / "f.onnx", rows=32, seq=8)
    assert open_data(f"{corpus}?tokenizer={tok}", fixed).first_feed()["input_ids"].shape == (1, 8)
    with pytest.raises(UsageError, match="fixes the sequence length at 8"):
        open_data(f"{corpus}?tokenizer={tok},max_length=4", fixed)


def test_text_embedding_table_bound(tmp_path: Path, tok: Path) -> None:
    """The tokenizer has 11 ids: a table of 11 rows takes it, one of 10 does not."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat\n")
    model = ir.load(text_model(tmp_path / "ok.onnx", rows=11))
    assert text_reader.embedding_table(model, "input_ids") == ("word_embeddings", 11)
    assert open_data(f"{corpus}?tokenizer={tok}", tmp_path / "ok.onnx").num_samples == 1
    with pytest.raises(DataError, match="11 token ids, the model's embedding table 'word_embeddings' only 10 rows"):
        open_data(f"{corpus}?tokenizer={tok}", text_model(tmp_path / "small.onnx", rows=10))


# --- audio ----------------------------------------------------------------------------------------------------


def test_audio_windows_and_declared_inputs(tmp_path: Path) -> None:
    signal = np.sin(np.arange(1200) / 7).astype(np.float32) * 0.5
    write_wav(tmp_path / "a.wav", signal, 16000)
    model = vad_model(tmp_path / "vad.onnx")
    dataset = open_data(tmp_path / "a.wav", model)
    feeds = list(dataset.feeds())
    assert (dataset.num_feeds, dataset.num_samples, len(feeds)) == (3, 3, 3)  # 1200 samples in windows of 512
    assert (
        feeds[0]["input"].shape == (1, 512) and feeds[0]["state"].shape == (2, 1, 128) and not feeds[0]["state"].any()
    )
    assert feeds[0]["sr"].shape == () and feeds[0]["sr"].dtype == np.int64 and int(feeds[0]["sr"]) == 16000
    joined = np.concatenate([f["input"][0] for f in feeds])
    np.testing.assert_allclose(joined[:1200], signal, atol=1 / 32767)
    assert not joined[1200:].any()
    assert dataset.is_batched("input") and not dataset.is_batched("state")
    assert "3 windows of 512 samples at 16000 Hz" in dataset.description and "sr=16000" in dataset.description
    assert len(run_all(model, dataset)) == 3
    eight = open_data(f"{tmp_path / 'a.wav'}?rate=8000", model).first_feed()
    assert eight["input"].shape == (1, 256) and int(eight["sr"]) == 8000
    with_context = list(open_data(f"{tmp_path / 'a.wav'}?context=64", model).feeds())
    assert with_context[1]["input"].shape == (1, 576) and not with_context[0]["input"][0, :64].any()
    np.testing.assert_array_equal(with_context[1]["input"][0], joined[512 - 64 : 1024])  # 64 samples before the window


def test_audio_resampled_or_rejected(tmp_path: Path) -> None:
    t = np.arange(800) / 8000
    write_wav(tmp_path / "low.wav", np.sin(2 * np.pi * 200 * t) * 0.5, 8000)
    model = vad_model(tmp_path / "vad.onnx")
    dataset = open_data(tmp_path / "low.wav", model)
    up = np.concatenate([f["input"][0] for f in dataset.feeds()])
    assert dataset.num_samples == 4 and "1 resampled" in dataset.description  # 1600 samples at 16 kHz
    expected = np.sin(2 * np.pi * 200 * np.arange(1600) / 16000) * 0.5
    assert np.abs(up[100:1500] - expected[100:1500]).max() < 0.01
    with pytest.raises(DataError, match="8000 Hz, the model runs at 16000 Hz"):
        open_data(f"{tmp_path / 'low.wav'}?resample=no", model)


def test_audio_sample_widths_and_channels(tmp_path: Path) -> None:
    stereo = np.stack([np.linspace(-0.5, 0.5, 64), np.linspace(0.5, -0.1, 64)], axis=1)
    for width, tolerance in ((1, 1 / 100), (2, 1e-4), (3, 1e-6), (4, 1e-8)):
        values, rate = audio_reader.read_wav(write_wav(tmp_path / f"w{width}.wav", stereo, 8000, width))
        assert rate == 8000
        np.testing.assert_allclose(values, stereo.mean(axis=1), atol=tolerance)


def test_audio_batches_without_state(tmp_path: Path) -> None:
    model = _save(tmp_path / "m.onnx", [helper.make_node("Identity", ["wav"], ["y"])],
                  [helper.make_tensor_value_info("wav", TensorProto.FLOAT, ["N", 100])],
                  [_out("y", 2)])  # fmt: skip
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(3):
        write_wav(folder / f"{i}.wav", np.full(250, 0.25), 16000)
    dataset = open_data(f"{folder}?samples=7", model, batch_size=4)
    assert [f["wav"].shape for f in dataset.feeds()] == [(4, 100), (3, 100)]  # 3 windows a file, 7 of 9 chosen


@pytest.mark.slow
@pytest.mark.skipif(not SILERO.is_file(), reason="silero-vad model not fetched")
def test_audio_real_silero_vad(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000
    write_wav(tmp_path / "s.wav", np.sin(2 * np.pi * 220 * t) * (t > 0.5) * 0.6, 16000)
    dataset = open_data(tmp_path / "s.wav", SILERO)
    probabilities = np.concatenate([out[0].ravel() for out in run_all(SILERO, dataset)])
    assert (
        dataset.num_feeds == 32 and probabilities.shape == (32,) and np.all((probabilities >= 0) & (probabilities <= 1))
    )


# --- loader scripts -------------------------------------------------------------------------------------------


LOADER = """
import numpy as np
CALLS = []

def load_data():
    CALLS.append(1)
    for i in range(3):
        yield {"x": np.full((2, 3, 4, 4), i, np.float32)}

def as_list():
    return [{"x": np.zeros((1, 3, 4, 4), np.float32)}]
"""


def test_loader_script_and_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "loader.py").write_text(LOADER)
    model = conv_model(tmp_path / "m.onnx", ["N", 3, 4, 4])
    dataset = open_data(f"{tmp_path / 'loader.py'}:load_data", model)
    assert (dataset.num_feeds, dataset.num_samples, dataset.is_batched("x")) == (3, 6, True)
    assert [float(f["x"][0, 0, 0, 0]) for f in dataset.feeds()] == [0, 1, 2]
    assert [float(f["x"][0, 0, 0, 0]) for f in dataset.feeds()] == [0, 1, 2]  # a generator is made again
    assert len(run_all(model, dataset)) == 3
    monkeypatch.syspath_prepend(str(tmp_path))
    assert open_data("loader:as_list", model).num_samples == 1
    assert (
        get_plugin_manager().hook.onnxopt_open_dataset(source="synthetic:2", model=ir.load(model), options={}).synthetic
    )


def test_loader_not_imported_at_help_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "loader.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef load_data():\n    return []\n")
    with pytest.raises(SystemExit):
        main(["optimize", str(tmp_path / "m.onnx"), "--data", f"{tmp_path / 'loader.py'}:load_data", "--help"])
    assert "--data" in capsys.readouterr().out and not marker.exists()


# --- bad data, through the CLI: one line, exit 2, nothing written --------------------------------------------


def _bad_images(tmp_path: Path):
    write_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"this is not a jpeg")
    return (
        conv_model(tmp_path / "m.onnx", [1, 3, 4, 4]),
        f"{tmp_path / 'imgs'}",
        "imgs/broken.jpg: not a readable image",
    )


def _colour_for_gray(tmp_path: Path):
    write_images(tmp_path / "imgs", 2)
    return (
        conv_model(tmp_path / "m.onnx", [1, 1, 4, 4]),
        str(tmp_path / "imgs"),
        "RGB colour image, but the model takes 1 channel",
    )


def _two_channel_model(tmp_path: Path):
    write_images(tmp_path / "imgs", 1)
    model = _save(tmp_path / "m.onnx", [helper.make_node("Identity", ["x"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                  [_out("y", 2)])  # fmt: skip
    return model, str(tmp_path / "imgs"), "takes 2 channels; images give 1 (grayscale) or 3 (RGB)"


def _unknown_option(tmp_path: Path):
    write_images(tmp_path / "imgs", 1)
    return (
        conv_model(tmp_path / "m.onnx", [1, 3, 4, 4]),
        f"{tmp_path / 'imgs'}?prest=imagenet",
        "unknown option prest for an image folder (valid: fill, layout, mean",
    )


def _overrun(tmp_path: Path):
    tok = write_tokenizer(tmp_path / "tokenizer.json", WORDS)
    (tmp_path / "c.txt").write_text("the cat\n")
    return (
        text_model(tmp_path / "m.onnx", rows=8),
        f"{tmp_path / 'c.txt'}?tokenizer={tok}",
        "11 token ids, the model's embedding table",
    )


def _no_tokenizer(tmp_path: Path):
    (tmp_path / "c.txt").write_text("the cat\n")
    return text_model(tmp_path / "m.onnx", rows=8), str(tmp_path / "c.txt"), "text needs its tokenizer"


def _bad_tokenizer(tmp_path: Path):
    (tmp_path / "c.txt").write_text("the cat\n")
    (tmp_path / "tok.json").write_text("{}")
    return (
        text_model(tmp_path / "m.onnx", rows=8),
        f"{tmp_path / 'c.txt'}?tokenizer={tmp_path / 'tok.json'}",
        "not a readable tokenizer.json",
    )


def _bad_jsonl(tmp_path: Path):
    tok = write_tokenizer(tmp_path / "tokenizer.json", WORDS)
    (tmp_path / "c.jsonl").write_text('{"text": "a"}\n{"text": 3}\n')
    return (
        text_model(tmp_path / "m.onnx", rows=32),
        f"{tmp_path / 'c.jsonl'}?tokenizer={tok}",
        "c.jsonl:2: expected a string",
    )


def _not_a_wav(tmp_path: Path):
    (tmp_path / "a.wav").write_bytes(b"RIFF....WAVEjunk")
    return vad_model(tmp_path / "m.onnx"), str(tmp_path / "a.wav"), "a.wav: not a"


def _float_wav(tmp_path: Path):
    data = np.zeros(16, np.float32).tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)  # WAVE_FORMAT_IEEE_FLOAT
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    (tmp_path / "f.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return vad_model(tmp_path / "m.onnx"), str(tmp_path / "f.wav"), "f.wav: not a PCM WAV file"


def _rate_mismatch(tmp_path: Path):
    write_wav(tmp_path / "a.wav", np.zeros(100), 44100)
    return vad_model(tmp_path / "m.onnx"), f"{tmp_path / 'a.wav'}?resample=no", "44100 Hz, the model runs at 16000 Hz"


def _loader(body: str, message: str):
    def case(tmp_path: Path):
        (tmp_path / "loader.py").write_text("import numpy as np\n" + body)
        return conv_model(tmp_path / "m.onnx", ["N", 3, 4, 4]), f"{tmp_path / 'loader.py'}:load_data", message

    return case


BAD = {
    "unreadable image": _bad_images,
    "colour image, gray model": _colour_for_gray,
    "2-channel model": _two_channel_model,
    "unknown option": _unknown_option,
    "tokenizer overruns the table": _overrun,
    "text without tokenizer": _no_tokenizer,
    "broken tokenizer.json": _bad_tokenizer,
    "bad jsonl line": _bad_jsonl,
    "not a wav": _not_a_wav,
    "float wav": _float_wav,
    "rate mismatch": _rate_mismatch,
    "loader raises": _loader("def load_data():\n    raise RuntimeError('disk on fire')\n",
                             "load_data raised RuntimeError: disk on fire"),
    "loader raises mid-way": _loader(
        "def load_data():\n    yield {'x': np.zeros((1, 3, 4, 4), np.float32)}\n    raise KeyError('k')\n",
        "load_data raised KeyError: 'k' making feed 1"),
    "loader import fails": _loader("import no_such_module_here\n",
                                   "raised ModuleNotFoundError: No module named 'no_such_module_here' while importing"),
    "loader wrong names": _loader("def load_data():\n    return [{'image': np.zeros((1, 3, 4, 4), np.float32)}]\n",
                                  "feed 0: missing input(s) x; unknown name(s) image (model inputs: x)"),
    "loader wrong dtype": _loader("def load_data():\n    return [{'x': np.zeros((1, 3, 4, 4))}]\n",
                                  "input 'x' has dtype float64, the model expects float32"),
    "loader wrong shape": _loader("def load_data():\n    return [{'x': np.zeros((1, 4, 4), np.float32)}]\n",
                                  "input 'x' has shape [1, 4, 4]"),
    "loader not iterable": _loader("def load_data():\n    return 3\n", "returned a int, not an iterable of feed dicts"),
    "loader no function": _loader("", "has no function 'load_data'"),
    "loader module missing": lambda tmp_path: (conv_model(tmp_path / "m.onnx", ["N", 3, 4, 4]),
                                               "no_such_module_xyz.data:load_data",
                                               "no_such_module_xyz.data: no such module"),
    "loader yields nothing": _loader("def load_data():\n    return []\n", "yielded no feeds"),
}  # fmt: skip


@pytest.mark.parametrize("command", ["optimize", "validate"])
@pytest.mark.parametrize("case", BAD)
def test_bad_data_is_one_line_exit_2_nothing_written(case: str, command: str, tmp_path: Path, capsys) -> None:
    model, data, message = BAD[case](tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    args = (
        ["optimize", str(model), "-o", str(tmp_path / "out.onnx"), "--pass", "fold"]
        if command == "optimize"
        else ["validate", str(model), str(model)]
    )
    assert main([*args, "--data", data, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("onnxopt: error: ") and message in err, err
    assert "Traceback" not in err and sorted(p.name for p in tmp_path.rglob("*") if p.name != "__pycache__") == before


def test_bad_data_in_a_real_process(tmp_path: Path, run_cli) -> None:
    model, data, message = _overrun(tmp_path)
    result = run_cli("optimize", model, "-o", tmp_path / "out.onnx", "--pass", "fold", "--data", data)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_static_quantize_calibrates_from_an_image_folder(tmp_path: Path, capsys) -> None:
    """quantize's calibration reader takes the streamed dataset, its cap cutting the second feed of 4 to 1 row."""
    write_images(tmp_path / "imgs", 7)
    model = conv_model(tmp_path / "m.onnx", ["N", 3, 8, 8])
    args = [
        "optimize",
        str(model),
        "-o",
        str(tmp_path / "q.onnx"),
        "--pass",
        "quantize:calibration_samples=5",
        "--data",
        str(tmp_path / "imgs"),
    ]
    assert main([*args, "--batch-size", "4", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"calibration_samples": 5' in out and '"status": "kept"' in out
    assert {n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node} >= {"QuantizeLinear", "DequantizeLinear"}


def test_cli_reports_the_effective_settings(tmp_path: Path, run_cli) -> None:
    write_images(tmp_path / "imgs", 3)
    model = conv_model(tmp_path / "m.onnx", ["N", 3, 8, 8])
    result = run_cli(
        "optimize",
        model,
        "-o",
        tmp_path / "out.onnx",
        "--pass",
        "fold",
        "--data",
        f"{tmp_path / 'imgs'}?preset=imagenet",
    )
    assert result.returncode == 0, result.stderr
    assert "images: 3 files, NCHW 3ch 8x8 stretch, RGB, scale 1/255, mean 0.485:0.456:0.406" in result.stdout
    assert (tmp_path / "out.onnx").is_file()
