"""Config loading: defaults, _base_ inheritance, --opts overrides, and clear errors naming the key."""
import glob
import os
import re

import pytest
import yaml
from cityscapesscripts.helpers.labels import labels as cs_labels
from cityscapesscripts.helpers.labels import name2label
from folder_trees import voc_palette
from torchvision.models import ResNet50_Weights

from seg.config import SCHEMA, ConfigError, default_config, dump_config, key_spec, load_config
from seg.data import with_defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, data):
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return str(path)


def test_defaults_cover_everykey_spec():
    cfg = load_config(None)
    assert set(cfg) == set(SCHEMA)
    for section, keys in SCHEMA.items():
        if "kind" in keys:  # top-level key
            continue
        assert set(cfg[section]) == set(keys), section
    assert cfg["model"] == {"encoder": "resnet50", "num_classes": 19, "output_stride": 8, "padding": "zeros",
                            "pretrained": None, "norm": "bn"}
    assert cfg["data"]["train_sets"] == ["fine/train"] and cfg["data"]["crop_size"] == 896
    assert cfg == default_config()


def test_base_inheritance_merges_nested_and_child_wins(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "a.yaml", {"train": {"lr": 0.5, "iterations": 10}, "data": {"scale_range": [1, 3]}})
    write(tmp_path / "base" / "b.yaml", {"_base_": "a.yaml", "train": {"iterations": 20}})
    child = write(tmp_path / "child.yaml", {"_base_": ["base/b.yaml"], "train": {"momentum": 0.5},
                                            "data": {"scale_range": [0.75, 1.25]}})
    cfg = load_config(child)
    assert cfg["train"]["lr"] == 0.5 and cfg["train"]["iterations"] == 20 and cfg["train"]["momentum"] == 0.5
    assert cfg["data"]["scale_range"] == [0.75, 1.25]  # lists are replaced, not merged
    assert cfg["train"]["weight_decay"] == 1e-4  # untouched keys keep the schema default
    assert isinstance(cfg["data"]["scale_range"][0], float)


def test_opts_override_parsed_as_yaml(tmp_path):
    cfg = load_config(None, ["train.lr=2e-3", "data.train_sets=[fine/train, coarse/train_extra]",
                             "model.pretrained=null", "train.amp=bf16", "train.no_wd_norm_bias=true",
                             "train.class_weights=[1, 2.5]"])
    assert cfg["train"]["lr"] == 0.002 and cfg["train"]["amp"] == "bf16" and cfg["train"]["no_wd_norm_bias"] is True
    assert cfg["data"]["train_sets"] == ["fine/train", "coarse/train_extra"]
    assert cfg["model"]["pretrained"] is None and cfg["train"]["class_weights"] == [1.0, 2.5]


def test_unknown_key_in_file_names_file_andkey_spec(tmp_path):
    path = write(tmp_path / "bad.yaml", {"train": {"lr": 0.1, "learning_rate": 0.1}})
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key 'train\.learning_rate'"):
        load_config(path)
    path = write(tmp_path / "bad2.yaml", {"optim": {"lr": 0.1}})
    with pytest.raises(ConfigError, match=r"unknown key 'optim'"):
        load_config(path)


def test_unknown_key_in_base_names_the_base_file(tmp_path):
    write(tmp_path / "base.yaml", {"model": {"depth": 50}})
    child = write(tmp_path / "child.yaml", {"_base_": "base.yaml"})
    with pytest.raises(ConfigError, match=r"base\.yaml: unknown key 'model\.depth'"):
        load_config(child)


@pytest.mark.parametrize("override, pattern", [
    ("train.iterations=1.5", r"'train\.iterations' expects int, got float"),
    ("train.iterations=true", r"'train\.iterations' expects int, got bool"),
    ("train.lr=fast", r"'train\.lr' expects float, got str"),
    ("data.scale_range=0.5", r"'data\.scale_range' expects list\[float\]"),
    ("data.scale_range=[2.0, 0.5]", r"'data\.scale_range': expected \[low, high\] with 0 < low <= high, got \[2\.0,"),
    ("data.scale_range=[1.0]", r"'data\.scale_range': expected \[low, high\]"),
    ("model.padding=circular", r"'model\.padding' must be one of \['zeros', 'reflect', 'replicate', 'partial'\]"),
    ("model.encoder=null", r"'model\.encoder' expects str, got NoneType"),
    ("train.ckpt_interval=0", r"'train\.ckpt_interval' must be >= 1, got 0"),
    ("train.lr=-0.1", r"'train\.lr' must be >= 0"),
])
def test_wrong_type_nameskey_spec(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_wrong_type_in_file(tmp_path):
    path = write(tmp_path / "t.yaml", {"data": {"crop_size": "896"}})
    with pytest.raises(ConfigError, match=r"t\.yaml.*'data\.crop_size' expects int, got str '896'"):
        load_config(path)
    path = write(tmp_path / "s.yaml", {"data": 5})
    with pytest.raises(ConfigError, match=r"'data' is a section"):
        load_config(path)


@pytest.mark.parametrize("override, pattern", [
    ("train.lr", r"bad override 'train\.lr': expected key=value"),
    ("=3", r"bad override '=3'"),
    ("train.lr=[0.1", r"cannot parse value of 'train\.lr'"),
    ("train.lr.x=1", r"unknown key 'train\.lr\.x'"),
    ("trian.lr=1", r"unknown key 'trian'"),
    ("train=1", r"'train' is a section"),
])
def test_bad_opts_syntax(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_missing_file_circular_base_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))
    write(tmp_path / "a.yaml", {"_base_": "b.yaml"})
    write(tmp_path / "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match="circular _base_"):
        load_config(str(tmp_path / "a.yaml"))
    with pytest.raises(ConfigError, match=r"y\.yaml: invalid YAML"):
        load_config(write(tmp_path / "y.yaml", "train: {lr: [}\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path / "l.yaml", "- 1\n- 2\n"))


@pytest.mark.parametrize("text", ["", "\n", "# a comment and nothing else\n"])
def test_empty_config_file_is_an_error_not_all_defaults(tmp_path, text):
    empty = write(tmp_path / "empty.yaml", text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(empty)}: config file is empty"):
        load_config(empty)
    with pytest.raises(ConfigError, match=rf"^{re.escape(empty)}: config file is empty"):  # as a _base_ too
        load_config(write(tmp_path / "child.yaml", {"_base_": "empty.yaml", "train": {"lr": 0.1}}))
    assert load_config(write(tmp_path / "braces.yaml", "{}\n")) == default_config()  # an explicit empty mapping


def test_missing_base_file_names_the_file_that_includes_it(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "top.yaml", {"_base_": "sub/middle.yaml"})
    middle = write(tmp_path / "sub" / "middle.yaml", {"_base_": ["../gone.yaml"]})
    gone = re.escape(str(tmp_path / "gone.yaml"))  # resolved against the folder of the file that names it
    with pytest.raises(ConfigError, match=rf"^{re.escape(middle)}: _base_ file not found: {gone}$"):
        load_config(str(tmp_path / "top.yaml"))


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, ["train.lr=0.123", "model.padding=partial"])
    dump_config(cfg, str(tmp_path / "config.yaml"))
    assert load_config(str(tmp_path / "config.yaml")) == cfg


PAPER = {"deeplabv3plus_r50": ("resnet50", 896), "deeplabv3plus_wrn38": ("wider_resnet38", 736)}


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "cityscapes", "*.yaml"))))
def test_cityscapes_configs_follow_the_paper(path):
    cfg = load_config(path)
    name = os.path.basename(path)
    encoder, crop = PAPER["_".join(name.split("_")[:2])]
    assert cfg["model"]["encoder"] == encoder and cfg["data"]["crop_size"] == crop
    assert cfg["model"]["padding"] == ("partial" if "_partial_" in name else "zeros")
    assert cfg["model"]["output_stride"] == 8 and cfg["model"]["num_classes"] == 19
    assert cfg["train"]["iterations"] == 31000 and cfg["train"]["momentum"] == 0.9
    assert cfg["train"]["weight_decay"] > 0 and cfg["train"]["poly_power"] > 0 and cfg["train"]["sync_bn"]
    assert cfg["data"]["train_sets"] == ["fine/train", "coarse/train_extra"] and cfg["data"]["class_balance"] > 0


def test_shipped_config_set_is_complete():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(REPO, "configs", "cityscapes", "*.yaml"))}
    assert names == {f"deeplabv3plus_{m}_{p}_{c}.yaml" for m, c in (("r50", 896), ("wrn38", 736))
                     for p in ("zeros", "partial")}
    demo = sorted(glob.glob(os.path.join(REPO, "configs", "demo", "*.yaml")))
    assert demo
    for path in demo:
        cfg = load_config(path)
        assert cfg["train"]["device"] == "cpu" and cfg["data"]["crop_size"] <= 128


def test_other_schema_through_the_same_loader(tmp_path):
    schema = {"net": {"depth": key_spec(18, "int"), "act": key_spec("relu", "str", ("relu", "gelu"))}}
    path = write(tmp_path / "c.yaml", {"net": {"act": "gelu"}})
    assert load_config(path, ["net.depth=50"], schema=schema) == {"net": {"depth": 50, "act": "gelu"}}
    with pytest.raises(ConfigError, match=r"unknown key 'train'"):
        load_config(None, ["train.lr=1"], schema=schema)
    with pytest.raises(ConfigError, match=r"c2\.yaml.*unknown key 'model'"):
        load_config(write(tmp_path / "c2.yaml", {"model": {}}), schema=schema)


@pytest.mark.parametrize("name, lr", [("deeplabv3plus_r50_zeros_896", 0.01), ("deeplabv3plus_r50_partial_896", 0.01),
                                      ("deeplabv3plus_wrn38_zeros_736", 0.002),
                                      ("deeplabv3plus_wrn38_partial_736", 0.002)])
def test_paper_configs_set_the_protocol_choices(name, lr):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_config(os.path.join(root, "configs", "cityscapes", f"{name}.yaml"))
    assert cfg["train"]["lr"] == lr  # per encoder: NVIDIA's WRN-38 default 0.002; ResNet-50 our 0.01
    assert cfg["data"]["coarse_mode"] == "boost" and cfg["data"]["crop_placement"] == "anywhere"
    assert cfg["data"]["coarse_boost_classes"] == [14, 15, 16, 3, 12, 17, 4] and cfg["data"]["cv_split"] == 0


def test_data_defaults_are_the_builders_and_match_their_independent_sources():
    cfg = load_config(None)
    data = cfg["data"]
    # a config's data section is what the dataset builders fill in for a section that omits every key: a key
    # given a default of its own in the schema, or known to only one side, breaks this
    assert data == with_defaults(None)
    # the ImageNet statistics the default (torchvision) encoder's pretrained weights were trained with
    imagenet = ResNet50_Weights.IMAGENET1K_V1.transforms()
    assert (cfg["model"]["encoder"], data["mean"], data["std"]) == ("resnet50", imagenet.mean, imagenet.std)
    # the trainId cityscapesscripts gives every class it leaves out of evaluation
    assert {data["ignore_index"]} == {label.trainId for label in cs_labels if label.ignoreInEval and label.id >= 0}
    # NVIDIA's semantic-segmentation repo boosts these rare classes with coarse crops, in this order
    nvidia = ("truck", "bus", "train", "wall", "rider", "motorcycle", "fence")
    assert data["coarse_boost_classes"] == [name2label[name].trainId for name in nvidia]
    # the defaults are the paper's ResNet-50 setting
    assert PAPER["deeplabv3plus_r50"] == (cfg["model"]["encoder"], data["crop_size"])


def test_encoder_names_checked_by_the_model_builder():
    assert load_config(None, ["model.encoder=timm/resnet18"])["model"]["encoder"] == "timm/resnet18"
    with pytest.raises(ConfigError, match=r"key 'model\.encoder': unknown encoder 'resnet5'; expected one of"):
        load_config(None, ["model.encoder=resnet5"])


def test_eval_modes():
    assert load_config(None, ["eval.mode=overlap"])["eval"]["mode"] == "overlap"
    with pytest.raises(ConfigError, match=r"'eval\.mode' must be one of \['regular', 'tile', 'overlap'\]"):
        load_config(None, ["eval.mode=tile_overlap"])


FOLDER = {"model": {"num_classes": 3}, "data": {"format": "folder", "class_names": ["a", "b", "c"]}}


def test_folder_class_names_must_match_model_num_classes(tmp_path):
    assert load_config(write(tmp_path / "ok.yaml", FOLDER))["data"]["class_names"] == ["a", "b", "c"]
    with pytest.raises(ConfigError, match=r"ok\.yaml \+ --opts: data\.class_names lists 3 classes but "
                                          r"model\.num_classes is 4"):
        load_config(str(tmp_path / "ok.yaml"), ["model.num_classes=4"])
    with pytest.raises(ConfigError, match=r"bad\.yaml: data\.palette: expected 3 \[r, g, b\]"):
        load_config(write(tmp_path / "bad.yaml", dict(FOLDER, data=dict(FOLDER["data"], palette=[[1, 2, 3]]))))
    with pytest.raises(ConfigError, match=r"data\.class_names: data\.format=folder needs"):
        load_config(None, ["data.format=folder"])


def test_label_map_and_palette_kinds(tmp_path):
    path = write(tmp_path / "m.yaml", "model: {num_classes: 3}\ndata: {format: folder, class_names: [a, b, c], "
                                      "label_map: {7: 2, 9: 255}, palette: [[0, 0, 0], [1, 1, 1], [2, 2, 2]]}\n")
    cfg = load_config(path)
    assert cfg["data"]["label_map"] == {7: 2, 9: 255} and cfg["data"]["palette"][2] == [2, 2, 2]
    assert load_config(path, ["data.label_map={3: 1}"])["data"]["label_map"] == {3: 1}  # replaced, as lists are
    child = write(tmp_path / "child.yaml", {"_base_": "m.yaml", "data": {"label_map": {4: 0}}})
    assert load_config(child)["data"]["label_map"] == {4: 0}
    with pytest.raises(ConfigError, match=r"key 'data\.label_map' expects dict\[int,int\]\?"):
        load_config(path, ["data.label_map=[1, 2]"])
    with pytest.raises(ConfigError, match=r"key 'data\.palette' expects list\[list\[int\]\]\?"):
        load_config(path, ["data.palette=[1, 2, 3]"])


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "ade20k", "*.yaml")) +
                                        glob.glob(os.path.join(REPO, "configs", "voc", "*.yaml"))))
def test_ade20k_and_voc_configs(path):
    cfg = load_config(path)
    name, data = os.path.basename(path), cfg["data"]
    assert cfg["model"]["encoder"] == "resnet50" and data["crop_size"] == 512 and data["format"] == "folder"
    assert cfg["model"]["padding"] == ("partial" if "_partial_" in name else "zeros")
    assert cfg["model"]["pretrained"] == f"torchvision:{ResNet50_Weights.IMAGENET1K_V1}"  # ImageNet, as mmseg's
    if "ade20k" in path:
        assert cfg["model"]["num_classes"] == 150 and len(set(data["class_names"])) == 150
        assert data["reduce_zero_label"] and data["train_sets"] == ["training"] and data["val_split"] == "validation"
        assert data["class_names"][:3] == ["wall", "building", "sky"] and data["class_names"][-1] == "flag"
        assert (data["img_dir"], data["ann_dir"]) == ("images/{split}", "annotations/{split}")
    else:
        assert cfg["model"]["num_classes"] == 21 and data["class_names"][0] == "background"
        assert not data["reduce_zero_label"] and data["ignore_index"] == 255
        assert data["split_list"] == "ImageSets/Segmentation/{split}.txt"
        assert sum(data["palette"], []) == voc_palette()[:63]
    assert len(data["palette"]) == cfg["model"]["num_classes"]


@pytest.mark.parametrize("opts, suggestion", [
    (["train.lrr=1"], "train.lr"),
    (["trian.lr=1"], "train"),
    (["model.paddding=partial"], "model.padding"),
    (["data.crop_sise=[8, 8]"], "data.crop_size"),
])
def test_unknown_override_key_suggests_the_close_one(opts, suggestion):
    with pytest.raises(ConfigError, match=re.escape(f"(did you mean '{suggestion}'?)")):
        load_config(None, opts)


def test_unknown_key_in_file_suggests_the_close_one_and_nothing_when_none_is_close(tmp_path):
    path = write(tmp_path / "typo.yaml", {"train": {"iteratons": 10}})
    expected = "unknown key 'train.iteratons' (did you mean 'train.iterations'?)"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(path)
    path = write(tmp_path / "far.yaml", {"train": {"zzzzqqq": 10}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "did you mean" not in str(err.value)


def test_missing_config_name_suggests_the_shipped_config():
    shipped = os.path.join(REPO, "configs", "demo", "deeplabv3plus_r18_zeros.yaml")
    assert os.path.isfile(shipped)
    expected = "(did you mean the shipped config 'demo/deeplabv3plus_r18_zeros'?)"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config("demo/deeplabv3plus_r18_zros")
    with pytest.raises(ConfigError) as err:
        load_config("no/such_thing_at_all")
    assert "did you mean" not in str(err.value)
