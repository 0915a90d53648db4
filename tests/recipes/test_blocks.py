"""`detect_blocks` on Functional models built of residual units: the
keras.applications CNNs (ResNet50, MobileNetV3Small, EfficientNetB0) give
one block per residual unit / inverted residual, gates and norms stay in
their block, names break the ties the graph leaves, nested backbones are
expanded, and models without residual units keep one block per layer."""

import re

import keras
import pytest

import layerwise as lw


def _names(blocks):
    return [[layer.name for layer in block] for block in blocks]


def _expected(model, label):
    """The trainable layers of `model` in order, grouped by consecutive
    `label(name)`: the partition a person reads off Keras' layer names."""
    groups = []
    for layer in model.layers:
        if not layer.trainable_variables:
            continue
        name = layer.name
        if groups and label(name) == groups[-1][0]:
            groups[-1][1].append(name)
        else:
            groups.append((label(name), [name]))
    return [names for _, names in groups]


# ----------------------------------------------------------------------
# Small models.


def _inverted_residual(x, name, skip, gate):
    """Dense stand-in of an inverted residual: expand, (gate), project, (skip)."""
    h = keras.layers.Dense(8, activation="relu", name=f"{name}_expand")(x)
    h = keras.layers.BatchNormalization(name=f"{name}_expand_bn")(h)
    if gate:
        g = keras.layers.Dense(8, activation="sigmoid", name=f"{name}_se")(h)
        h = keras.layers.Multiply(name=f"{name}_se_mul")([h, g])
    h = keras.layers.Dense(4, name=f"{name}_project")(h)
    return keras.layers.Add(name=f"{name}_add")([x, h]) if skip else h


def _named_net():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="stem")(inputs)
    x = keras.layers.LayerNormalization(name="stem_norm")(x)
    x = _inverted_residual(x, "unit0", skip=False, gate=True)
    x = _inverted_residual(x, "unit1", skip=True, gate=False)
    x = _inverted_residual(x, "unit2", skip=False, gate=False)
    x = _inverted_residual(x, "unit3", skip=True, gate=True)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x), name="net")


def test_gates_stay_inside_and_names_delimit_units_without_skip():
    blocks = _names(lw.detect_blocks(_named_net()))
    assert blocks == [["stem", "stem_norm"]] + [
        [f"unit{i}_expand", f"unit{i}_expand_bn"]
        + ([f"unit{i}_se"] if i in (0, 3) else []) + [f"unit{i}_project"]
        for i in range(4)
    ] + [["head"]]


def test_unnamed_units_are_blocks_and_chain_layers_between_them_too():
    # Keras' automatic names say nothing: the graph alone decides.
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4)(inputs)
    stem = x
    x = keras.layers.Add()([x, keras.layers.Dense(4)(x)])
    unit0 = x
    x = keras.layers.Dense(4)(x)  # between two units: a block of its own
    down = x
    x = keras.layers.Add()([x, keras.layers.Dense(4)(keras.layers.Dense(4)(x))])
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    sizes = [len(block) for block in lw.detect_blocks(model)]
    assert sizes == [1, 1, 1, 2, 1]
    owner = lambda t: t._keras_history.operation  # noqa: E731
    blocks = lw.detect_blocks(model)
    assert blocks[0] == [owner(stem)] and blocks[2] == [owner(down)]
    assert owner(unit0) not in blocks[1]  # the Add has no variables


def test_nested_residual_backbone_is_expanded_in_place():
    backbone = _named_net()
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="adapter")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="new_head")(backbone(x)))
    blocks = _names(lw.detect_blocks(model))
    assert blocks[0] == ["adapter"] and blocks[-1] == ["new_head"]
    assert blocks[1:-1] == _names(lw.detect_blocks(backbone))


def test_chain_without_residual_units_keeps_one_block_per_layer():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="a")(inputs)
    x = keras.layers.BatchNormalization(name="a_bn")(x)
    x = keras.layers.Dense(4, name="b")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    assert _names(lw.detect_blocks(model)) == [["a"], ["a_bn"], ["b"], ["head"]]


def test_a_layer_called_twice_belongs_to_its_first_block_only():
    shared = keras.layers.Dense(4, name="shared")
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="stem")(inputs)
    x = keras.layers.Add()([x, shared(x)])
    x = keras.layers.Add()([x, shared(keras.layers.Dense(4, name="other")(x))])
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    assert _names(lw.detect_blocks(model)) == [["stem"], ["shared"], ["other"], ["head"]]


def test_frozen_layers_leave_their_block():
    model = _named_net()
    model.get_layer("unit1_expand").trainable = False
    model.get_layer("unit2_expand").trainable = False
    model.get_layer("unit2_expand_bn").trainable = False
    blocks = _names(lw.detect_blocks(model))
    assert blocks[2] == ["unit1_expand_bn", "unit1_project"]
    assert blocks[3] == ["unit2_project"]


# ----------------------------------------------------------------------
# keras.applications (last in the module: while their fixture lives, every
# `clear_session` between tests walks their objects).


@pytest.fixture(scope="module")
def applications():
    # Detection reads the graph and the variables' paths, never their values:
    # left uninitialized, the three models build in about a second instead of
    # a minute of initializer compilation on JAX.
    with keras.StatelessScope(initialize_variables=False):
        return {
            "ResNet50": keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3)),
            "MobileNetV3Small": keras.applications.MobileNetV3Small(
                weights=None, input_shape=(32, 32, 3)),
            "EfficientNetB0": keras.applications.EfficientNetB0(
                weights=None, input_shape=(32, 32, 3)),
        }


def _resnet_label(name):
    match = re.match(r"conv\d_block\d+_", name)
    return match.group(0) if match else "head" if name == "predictions" else "stem"


def _mobilenet_label(name):
    # `expanded_conv_depthwise` (the first unit has no index), `expanded_conv_3_expand`.
    match = re.match(r"expanded_conv(_\d+)?(?=_)", name)
    return match.group(0) if match else "stem" if name.startswith("conv_bn") or name == "conv" else "head"


def _efficientnet_label(name):
    match = re.match(r"block\d[a-z]_", name)
    return match.group(0) if match else "stem" if name.startswith("stem_") else "head"


@pytest.mark.parametrize(
    "name, label, units",
    [
        ("ResNet50", _resnet_label, 3 + 4 + 6 + 3),
        ("MobileNetV3Small", _mobilenet_label, 11),
        ("EfficientNetB0", _efficientnet_label, 16),
    ],
)
def test_applications_give_stem_one_block_per_unit_and_head(applications, name, label, units):
    model = applications[name]
    blocks = _names(lw.detect_blocks(model))
    assert len(blocks) == 1 + units + 1
    assert blocks == _expected(model, label)


def test_resnet_bottleneck_holds_its_projection_shortcut(applications):
    blocks = _names(lw.detect_blocks(applications["ResNet50"]))
    assert blocks[0] == ["conv1_conv", "conv1_bn"]
    assert sorted(blocks[1]) == sorted(
        f"conv2_block1_{i}_{kind}" for i in range(4) for kind in ("conv", "bn"))
    assert blocks[-1] == ["predictions"]


def test_mobilenet_inverted_residuals_with_and_without_skip_or_gate(applications):
    blocks = _names(lw.detect_blocks(applications["MobileNetV3Small"]))
    # The first unit: no expand convolution, a squeeze-excite gate, no skip.
    assert blocks[1] == [
        "expanded_conv_depthwise", "expanded_conv_depthwise_bn",
        "expanded_conv_squeeze_excite_conv", "expanded_conv_squeeze_excite_conv_1",
        "expanded_conv_project", "expanded_conv_project_bn",
    ]
    # Stride 2, no gate, no skip: a plain chain, delimited by its names.
    assert blocks[2] == [f"expanded_conv_1_{part}" for part in (
        "expand", "expand_bn", "depthwise", "depthwise_bn", "project", "project_bn")]
    assert blocks[-1] == ["conv_1", "conv_1_bn", "conv_2", "logits"]


def test_layer_decay_on_mobilenet_scales_whole_units(applications):
    model = applications["MobileNetV3Small"]
    rules = lw.layer_decay(model, decay=0.8)  # 13 blocks: no warning (0.8**12 = 0.07)
    assert [r.lr_scale for r in rules] == pytest.approx([0.8 ** (12 - i) for i in range(13)])
    # The variables each rule selects (an optimizer cannot be built on
    # uninitialized variables on TensorFlow).
    scales = {}
    for variable in model.trainable_variables:
        (rule,) = [r for r in rules if r.matches(variable)]
        scales[variable.path] = rule.lr_scale
    assert len(scales) == len(model.trainable_variables)
    assert scales["conv/kernel"] == pytest.approx(0.8**12, rel=1e-6)
    assert scales["expanded_conv_squeeze_excite_conv/bias"] == pytest.approx(0.8**11, rel=1e-6)
    assert scales["expanded_conv_1_project_bn/gamma"] == pytest.approx(0.8**10, rel=1e-6)
    assert scales["expanded_conv_10_project/kernel"] == pytest.approx(0.8, rel=1e-6)
    assert scales["logits/kernel"] == 1.0
