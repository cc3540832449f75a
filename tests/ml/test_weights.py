"""Weights specs: torchvision names, URLs and files; fetched once, verified on every use."""

from __future__ import annotations

import hashlib
import io

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from ml import weights as w
from ml.models import create_model
from ml.weights import (
    WeightsError,
    WeightsMissing,
    parse_weights_spec,
    resolve_weights,
    verify_weights,
)
from tests.weights_server import closed_port, weights_server

#: Not in the table on purpose (see ml.weights.TORCHVISION_WEIGHTS).
LEFT_OUT = {("vit_b_16", "IMAGENET1K_SWAG_E2E_V1")}


def small_cnn_bytes(seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    out = io.BytesIO()
    torch.save(create_model("small_cnn", 3, widths=(4, 8)).state_dict(), out)
    return out.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_table_of_torchvision_weights_is_torchvisions_own():
    for backbone, names in w.TORCHVISION_WEIGHTS.items():
        enum = torchvision.models.get_model_weights(backbone)
        assert enum.DEFAULT.name == w.TORCHVISION_DEFAULT[backbone]
        for member in enum:
            if (backbone, member.name) in LEFT_OUT:
                assert member.name not in names
                continue
            assert w.TORCHVISION_BASE_URL + names[member.name] == member.url
        assert set(names) <= {m.name for m in enum}
    assert set(w.TORCHVISION_DEFAULT) == set(w.TORCHVISION_WEIGHTS)


def test_a_torchvision_name_resolves_to_its_cache_file_url_and_hash_prefix(tmp_path):
    spec = parse_weights_spec("resnet50", "DEFAULT", cache_dir=tmp_path)
    assert spec.kind == "torchvision" and spec.path == tmp_path / "resnet50-11ad3fa6.pth"
    assert spec.url == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    assert spec.sha256_prefix == "11ad3fa6" and spec.text == "DEFAULT"
    mirror = parse_weights_spec(
        "vit_b_16", "IMAGENET1K_V1", cache_dir=tmp_path, base_url="http://127.0.0.1:9/models/"
    )
    assert mirror.url == "http://127.0.0.1:9/models/vit_b_16-c867db91.pth"


@pytest.mark.parametrize(
    ("backbone", "text", "message"),
    [
        ("resnet18", "IMAGENET1K_V2", "use one of DEFAULT, IMAGENET1K_V1"),
        ("small_cnn", "DEFAULT", "small_cnn has no torchvision weights"),
        ("resnet18", "https://example.org/r18.pth", "needs its sha256"),
        ("resnet18", "ftp://example.org/r18.pth#sha256=" + "0" * 64, "only http and https"),
        ("resnet18", "/weights/r18.pth#md5=abc", "sha256=<64 hex digits>"),
        ("resnet18", "   ", "empty"),
    ],
)
def test_a_bad_spec_is_refused_with_the_reason(tmp_path, backbone, text, message):
    with pytest.raises(WeightsError, match=message):
        parse_weights_spec(backbone, text, cache_dir=tmp_path)


def test_a_torchvision_name_is_fetched_from_the_mirror_once_then_read_from_the_cache(
    tmp_path, monkeypatch
):
    data = small_cnn_bytes()
    file_name = f"small_cnn-{sha(data)[:8]}.pth"  # torchvision's naming: hash prefix in the name
    monkeypatch.setitem(w.TORCHVISION_WEIGHTS, "small_cnn", {"IMAGENET1K_V1": file_name})
    monkeypatch.setitem(w.TORCHVISION_DEFAULT, "small_cnn", "IMAGENET1K_V1")
    with weights_server() as server:
        server.files[file_name] = data
        spec = parse_weights_spec(
            "small_cnn", "DEFAULT", cache_dir=tmp_path / "weights", base_url=server.base_url
        )
        first = resolve_weights(spec)
        again = resolve_weights(spec)
    assert server.requests == [f"/models/{file_name}"]  # the second resolve fetched nothing
    assert first.path == again.path == tmp_path / "weights" / file_name
    assert first.path.read_bytes() == data and first.sha256 == again.sha256 == sha(data)
    assert [p.name for p in (tmp_path / "weights").iterdir()] == [file_name]  # no .partial
    model = create_model("small_cnn", 3, first.path, widths=(4, 8))
    torch.manual_seed(0)
    source = create_model("small_cnn", 3, widths=(4, 8))
    assert torch.equal(model.features.block1[0].weight, source.features.block1[0].weight)


def test_a_tampered_download_is_refused_and_nothing_is_cached(tmp_path):
    data = small_cnn_bytes()
    with weights_server() as server:
        server.files["trunk.pth"] = data[:-1] + bytes([data[-1] ^ 1])  # one bit flipped
        spec = parse_weights_spec(
            "small_cnn", f"{server.url('trunk.pth')}#sha256={sha(data)}", cache_dir=tmp_path
        )
        with pytest.raises(WeightsError, match="hash mismatch.*nothing was kept"):
            resolve_weights(spec)
    assert not any(tmp_path.iterdir())


def test_a_tampered_file_in_the_cache_is_refused_on_use(tmp_path):
    data = small_cnn_bytes()
    with weights_server() as server:
        server.files["trunk.pth"] = data
        spec = parse_weights_spec(
            "small_cnn", f"{server.url('trunk.pth')}#sha256={sha(data)}", cache_dir=tmp_path
        )
        resolve_weights(spec)
        spec.path.write_bytes(small_cnn_bytes(seed=1))  # swapped after the download
        with pytest.raises(WeightsError, match=f"hash mismatch: its sha256 is .*{sha(data)}"):
            resolve_weights(spec)
    assert len(server.requests) == 1


def test_a_download_cut_short_is_refused_and_names_the_file_to_place(tmp_path):
    data = small_cnn_bytes()
    with weights_server() as server:
        server.files["trunk.pth"] = data
        server.short["trunk.pth"] = len(data) // 2
        spec = parse_weights_spec(
            "small_cnn", f"{server.url('trunk.pth')}#sha256={sha(data)}", cache_dir=tmp_path
        )
        with pytest.raises(WeightsMissing) as caught:
            resolve_weights(spec)
    assert str(spec.path) in str(caught.value)
    assert not any(tmp_path.iterdir())


def test_offline_the_message_names_the_file_and_the_cache_path_to_place_it_at(tmp_path):
    spec = parse_weights_spec(
        "resnet50",
        "IMAGENET1K_V2",
        cache_dir=tmp_path / "weights",
        base_url=f"http://127.0.0.1:{closed_port()}/models",
    )
    with pytest.raises(WeightsMissing) as caught:
        resolve_weights(spec, timeout=5)
    message = str(caught.value)
    assert "could not download" in message and "resnet50-11ad3fa6.pth" in message
    assert str(tmp_path / "weights" / "resnet50-11ad3fa6.pth") in message
    assert "sha256 starting with 11ad3fa6" in message
    # without fetching, the same missing file is named the same way
    with pytest.raises(WeightsMissing, match="not in the cache yet.*Place the file"):
        verify_weights(spec)


def test_a_truncated_torch_file_is_refused_clearly(tmp_path):
    data = small_cnn_bytes()
    path = tmp_path / "trunk.pth"
    path.write_bytes(data[: len(data) * 2 // 3])
    spec = parse_weights_spec("small_cnn", str(path), cache_dir=tmp_path)
    with pytest.raises(WeightsError, match="trunk.pth is truncated or damaged"):
        verify_weights(spec)


def test_a_truncated_safetensors_file_is_refused_clearly(tmp_path):
    path = tmp_path / "trunk.safetensors"
    torch.manual_seed(0)
    state = create_model("small_cnn", 3, widths=(4, 8)).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    whole = verify_weights(parse_weights_spec("small_cnn", str(path), cache_dir=tmp_path))
    assert whole.sha256 == sha(path.read_bytes())
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="trunk.safetensors is truncated"):
        verify_weights(parse_weights_spec("small_cnn", str(path), cache_dir=tmp_path))


def test_a_pinned_local_file_must_have_the_pinned_hash(tmp_path):
    path = tmp_path / "trunk.pth"
    path.write_bytes(small_cnn_bytes())
    good = parse_weights_spec(
        "small_cnn", f"{path}#sha256={sha(path.read_bytes())}", cache_dir=tmp_path
    )
    assert verify_weights(good).path == path
    bad = parse_weights_spec("small_cnn", f"{path}#sha256={'0' * 64}", cache_dir=tmp_path)
    with pytest.raises(WeightsError, match="hash mismatch"):
        verify_weights(bad)
    missing = parse_weights_spec("small_cnn", str(tmp_path / "nope.pth"), cache_dir=tmp_path)
    with pytest.raises(WeightsMissing, match=f"place it at {tmp_path / 'nope.pth'}"):
        verify_weights(missing)


def test_a_truncated_legacy_torch_file_is_refused_clearly_when_loaded(tmp_path):
    out = io.BytesIO()
    torch.manual_seed(0)
    state = create_model("small_cnn", 3, widths=(4, 8)).state_dict()
    torch.save(state, out, _use_new_zipfile_serialization=False)  # torchvision's older files
    path = tmp_path / "trunk.pth"
    path.write_bytes(out.getvalue()[: len(out.getvalue()) // 2])
    with pytest.raises(ValueError, match="refused to load trunk.pth: truncated, damaged"):
        create_model("small_cnn", 3, path, widths=(4, 8))
