import datetime as dt
import json

import pytest
import torch

from model import registry as reg
from model.artifacts import (
    TwoTower,
    load_encoder,
    load_item_tower,
    load_model,
    load_online,
    save_model,
)
from model.config import ModelConfig
from towerline.core.errors import InputError

CFG = ModelConfig(
    pin_buckets=32, interest_vocab=8, dim=8, d_model=8, heads=2, layers=1, ff=16,
    max_len=4, realtime_len=2, context_dim=4, head_hidden=16,
)  # fmt: skip
NOW = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)
WINDOW = {"start": "2025-06-01", "end": "2025-06-30", "holdout": "none"}


def _save(registry, seed=0, keep=3):
    model = TwoTower.build(CFG, seed=seed).eval()
    version = save_model(registry, model, WINDOW, {"loss": 1.0}, keep=keep, now=NOW)
    return version, model


def test_round_trip_loads_each_part_alone(tmp_path):
    version, model = _save(tmp_path)
    assert version == "v1"
    files = sorted(p.name for p in (tmp_path / "two_tower" / "v1").iterdir())
    assert files == sorted(
        ["encoder.pt", "online.pt", "item_tower.pt", "config.json", "window.json",
         "metrics.json", "manifest.json"]
    )  # fmt: skip
    manifest = json.loads((tmp_path / "two_tower" / "v1" / "manifest.json").read_text())
    assert set(manifest["files"]) == set(files) - {"manifest.json"}
    ids = torch.tensor([3, 5])
    interests, conf = torch.tensor([[0, 1, -1], [2, -1, -1]]), torch.rand(2, 3)
    with torch.no_grad():
        expected = model.item_tower(ids, interests, conf)
        loaded = load_item_tower(tmp_path, "v1")(ids, interests, conf)
    assert torch.equal(expected, loaded)
    for loader, original in ((load_encoder, model.encoder), (load_online, model.online)):
        part = loader(tmp_path, "latest")
        assert not part.training
        for (name, a), b in zip(
            original.state_dict().items(), part.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), name
    version, whole = load_model(tmp_path)
    assert version == "v1" and whole.cfg == CFG
    assert reg.load_document(tmp_path, "two_tower", "v1", "window") == WINDOW


def test_tampered_file_fails_with_a_clear_error(tmp_path):
    _save(tmp_path)
    path = tmp_path / "two_tower" / "v1" / "online.pt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(reg.IntegrityError, match="online.pt does not match its sha256"):
        load_online(tmp_path, "v1")
    with pytest.raises(reg.IntegrityError):  # any part: the whole version is untrusted
        load_encoder(tmp_path, "v1")
    (tmp_path / "two_tower" / "v1" / "metrics.json").unlink()
    with pytest.raises(reg.IntegrityError, match="missing"):
        reg.verify_version(tmp_path, "two_tower", "v1")


def test_only_the_last_n_versions_are_kept(tmp_path):
    versions = [_save(tmp_path, seed=i, keep=2)[0] for i in range(4)]
    assert versions == ["v1", "v2", "v3", "v4"]
    assert reg.list_versions(tmp_path, "two_tower") == ["v3", "v4"]
    listing = json.loads((tmp_path / "two_tower" / "versions.json").read_text())
    assert [row["version"] for row in listing["versions"]] == ["v3", "v4"]
    with pytest.raises(reg.RegistryError, match="no version 'v1'"):
        load_encoder(tmp_path, "v1")


def test_weights_load_with_weights_only(tmp_path, monkeypatch):
    _save(tmp_path)
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_model(tmp_path, "v1")
    assert seen and all(flag is True for flag in seen)
    monkeypatch.undo()
    # A pickle holding arbitrary objects is refused even with a matching sha256.
    root = tmp_path / "two_tower" / "v1"
    torch.save({"evil": dt.timedelta(days=1)}, root / "encoder.pt")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"]["encoder.pt"] = reg.sha256_file(root / "encoder.pt")
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_encoder(tmp_path, "v1")


def test_pinned_versions_survive_pruning_whatever_keep_says(tmp_path):
    for seed in range(3):
        _save(tmp_path, seed=seed)
    reg.pin_versions(tmp_path, "two_tower", {"serving": "v1", "previous": "v2", "x": None})
    assert reg.pinned_versions(tmp_path, "two_tower") == {"serving": "v1", "previous": "v2"}
    _save(tmp_path, seed=3, keep=1)  # v4; v3 is neither newest nor pinned
    assert reg.list_versions(tmp_path, "two_tower") == ["v1", "v2", "v4"]
    reg.pin_versions(tmp_path, "two_tower", {"serving": "v4"})
    assert reg.prune(tmp_path, "two_tower", 1) == ["v1", "v2"]


def test_an_unreadable_pin_list_stops_pruning(tmp_path):
    for seed in range(2):
        _save(tmp_path, seed=seed)
    (tmp_path / "two_tower" / reg.PINNED).write_text("{not json")
    with pytest.raises(reg.RegistryError, match="pinned.json is not a pin list"):
        reg.prune(tmp_path, "two_tower", 1)
    assert reg.list_versions(tmp_path, "two_tower") == ["v1", "v2"]


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "", ".hidden"])
def test_model_names_that_are_not_plain_names_never_become_paths(tmp_path, name):
    with pytest.raises(InputError, match="not a plain name"):
        reg.model_dir(tmp_path / "registry", name)
    with pytest.raises(InputError, match="not a plain name"):
        save_model(tmp_path / "registry", TwoTower.build(CFG), WINDOW, {}, model_name=name)
    with pytest.raises(InputError, match="not a plain name"):
        reg.prune(tmp_path / "registry", name, 1)
    assert not any(tmp_path.rglob("*"))  # nothing written anywhere


def test_versions_that_are_not_version_names_never_become_paths(tmp_path):
    _save(tmp_path)
    for version in ("../v1", "v1/../../x", "latest"):
        with pytest.raises(InputError, match="not a model version"):
            reg.verify_version(tmp_path, "two_tower", version)
    with pytest.raises(InputError, match="not a model version"):
        reg.pin_versions(tmp_path, "two_tower", {"serving": "../v1"})
