"""`detect_blocks` on 21 keras-hub families (tiny configs, random weights,
no downloads), against block tables written by hand from the architectures:
flat stacks, nested encoders (ViT, DeiT, DINOv2), hierarchical stages
(Swin), encoder-decoders (T5, BART, Whisper; stacked and parallel),
multi-tower models (CLIP, SigLIP, PaliGemma), a shared layer (ALBERT), and
a residual CNN.

Backbones are built once per module without initializing their variables
(detection reads structure only). The full table runs on torch, where
keras-hub builds these models fastest on CPU (2.5 s for all 21, against
6.6 s on JAX and 8.4 s on TensorFlow, measured on 2 cores); the other
backends run a subset with one family of each kind.
"""

import keras
import pytest

import layerwise as lw
from layerwise._internals import layers as internal_layers
from tests.conftest import BACKEND
from tests.recipes import hub_models

pytest.importorskip("keras_hub")

# Each block: the addresses of its layers (`parent/child` through nested
# layers), space-separated. 2 layers per stack everywhere.
EMB = "token_embedding position_embedding segment_embedding embeddings_layer_norm"
GOLDEN = {
    # Flat stacks: embeddings, one block per layer, final norm / pooler.
    "bert": [EMB, "transformer_layer_0", "transformer_layer_1", "pooled_dense"],
    "electra": [EMB, "transformer_layer_0", "transformer_layer_1", "pooled_dense"],
    "roberta": ["embeddings embeddings_layer_norm", "transformer_layer_0",
                "transformer_layer_1"],
    "distil_bert": ["token_and_position_embedding embeddings_layer_norm",
                    "transformer_layer_0", "transformer_layer_1"],
    "gpt2": ["token_embedding position_embedding", "transformer_layer_0",
             "transformer_layer_1", "layer_norm"],
    "opt": ["embeddings", "transformer_layer_0", "transformer_layer_1", "layer_norm"],
    "gemma": ["token_embedding", "decoder_block_0", "decoder_block_1",
              "final_normalization"],
    "llama": ["token_embedding", "transformer_layer_0", "transformer_layer_1",
              "sequence_output_layernorm"],
    "mistral": ["token_embedding", "transformer_layer_0", "transformer_layer_1",
                "sequence_output_layernorm"],
    # Nested: the blocks sit inside one encoder layer. timm's ViT numbering:
    # patch / position embedding and class token 0, block i -> i + 1, the
    # final norm L + 1 with the head (as MAE's and BEiT's `param_groups_lrd`;
    # timm's own `group_matcher` puts `norm` with the last block).
    "vit": ["vit_patching_and_embedding", "vit_encoder/transformer_block_1",
            "vit_encoder/transformer_block_2", "vit_encoder/ln"],
    "deit": ["deit_patching_and_embedding", "deit_encoder/transformer_block_1",
             "deit_encoder/transformer_block_2", "deit_encoder/ln"],
    "dinov2": ["embeddings", "encoder/layers_0", "encoder/layers_1", "layernorm"],
    # Hierarchical: one block per Swin block; stage 0's patch merging opens
    # stage 1's first block (timm: `layers.1.downsample` with `blocks.0`).
    "swin": ["patch_embedding", "stage_0/blocks_0", "stage_0/blocks_1",
             "stage_0/downsample stage_1/blocks_0", "stage_1/blocks_1", "norm"],
    # Encoder-decoder, stacked: the decoder above the encoder; the encoder's
    # final norm and the decoder's embeddings share the block between.
    "t5": ["token_embedding", "transformer_encoder_layer_0",
           "transformer_encoder_layer_1", "encoder_output_layer_norm",
           "transformer_decoder_layer_0", "transformer_decoder_layer_1",
           "decoder_output_layer_norm"],
    "bart": ["token_embedding encoder_position_embedding encoder_embeddings_layer_norm",
             "transformer_encoder_layer_0", "transformer_encoder_layer_1",
             "decoder_position_embedding decoder_embeddings_layer_norm",
             "transformer_decoder_layer_0", "transformer_decoder_layer_1"],
    "whisper": ["encoder_token_embedding_conv_layer_1 encoder_token_embedding_conv_layer_2",
                "transformer_encoder_layer_0", "transformer_encoder_layer_1",
                "encoder_layer_norm decoder_token_and_position_embedding",
                "transformer_decoder_layer_0", "transformer_decoder_layer_1",
                "decoder_layer_norm"],
    # Towers: aligned at their tops, projections and heads on top.
    "clip": ["clip_vision_encoder/embedding clip_vision_encoder/pre_layer_norm "
             "clip_text_encoder/embedding",
             "clip_vision_encoder/encoder_block_0 clip_text_encoder/encoder_block_0",
             "clip_vision_encoder/encoder_block_1 clip_text_encoder/encoder_block_1",
             "clip_vision_encoder/layer_norm clip_text_encoder/layer_norm "
             "vision_projection text_projection clip_head"],
    "siglip": ["sig_lip_vision_encoder/embedding sig_lip_text_encoder/embedding",
               "sig_lip_vision_encoder/encoder_block_0 sig_lip_text_encoder/encoder_block_0",
               "sig_lip_vision_encoder/encoder_block_1 sig_lip_text_encoder/encoder_block_1",
               "sig_lip_vision_encoder/post_layer_norm sig_lip_vision_encoder/head "
               "sig_lip_text_encoder/post_layer_norm sig_lip_text_encoder/head siglip_head"],
    "pali_gemma": [
        "pali_gemma_vit/image_encoder/encoder_embeddings token_embedding",
        "pali_gemma_vit/image_encoder/encoder_block_0 decoder_block_0",
        "pali_gemma_vit/image_encoder/encoder_block_1 decoder_block_1",
        "pali_gemma_vit/image_encoder/encoder_layer_norm pali_gemma_vit/image_classifier "
        "final_normalization"],
    # Shared: one block for the transformer layer ALBERT reuses at every depth.
    "albert": [EMB + " embedding_projection", "group_0_inner_layer_0", "pooled_dense"],
    # Residual units (no stack): stem, then one block per basic block.
    "resnet": ["conv1_conv conv1_bn"] + [
        f"stack{s}_block{b}_1_conv stack{s}_block{b}_1_bn stack{s}_block{b}_2_conv "
        f"stack{s}_block{b}_2_bn" + (" stack1_block0_0_conv stack1_block0_0_bn"
                                     if (s, b) == (1, 0) else "")
        for s in (0, 1) for b in (0, 1)],
}
# The other direction of encoder-decoders: each stack decays from its own top.
PARALLEL = {
    "t5": ["token_embedding",
           "transformer_encoder_layer_0 transformer_decoder_layer_0",
           "transformer_encoder_layer_1 transformer_decoder_layer_1",
           "encoder_output_layer_norm decoder_output_layer_norm"],
    "whisper": ["encoder_token_embedding_conv_layer_1 encoder_token_embedding_conv_layer_2 "
                "decoder_token_and_position_embedding",
                "transformer_encoder_layer_0 transformer_decoder_layer_0",
                "transformer_encoder_layer_1 transformer_decoder_layer_1",
                "encoder_layer_norm decoder_layer_norm"],
}
# One family of each kind, for the backends that do not run the full table.
SUBSET = ["bert", "vit", "swin", "t5", "clip", "albert"]
FAMILIES = sorted(GOLDEN) if BACKEND == "torch" else SUBSET


@pytest.fixture(autouse=True)
def _seed_and_clear():
    # Replaces the suite's per-test `clear_session`, whose garbage
    # collection walks every model the module fixture keeps alive (~0.7 s a
    # test); these tests read structure, or build their own model.
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="module")
def backbones():
    built = {}

    def get(name):
        if name not in built:
            with keras.StatelessScope(initialize_variables=False):
                built[name] = hub_models.backbone(name)
        return built[name]

    return get


def _find(model, address):
    layer = model
    for name in address.split("/"):
        children = layer.layers if isinstance(layer, keras.Model) else internal_layers.sublayers(layer)
        (layer,) = [child for child in children if child.name == name]
    return layer


def _expected(model, table):
    return [{id(_find(model, address)) for address in block.split()} for block in table]


def _detected(model, **kwargs):
    return [{id(layer) for layer in block} for block in lw.detect_blocks(model, **kwargs)]


@pytest.mark.parametrize("name", FAMILIES)
def test_blocks_of_keras_hub_backbones_match_the_architecture(backbones, name):
    model = backbones(name)
    if name == "albert":
        with pytest.warns(UserWarning, match="'group_0_inner_layer_0' \\(2 calls\\)"):
            blocks = lw.detect_blocks(model)
    else:
        blocks = lw.detect_blocks(model)
    readable = [sorted(layer.name for layer in block) for block in blocks]
    assert [{id(layer) for layer in block} for block in blocks] == _expected(
        model, GOLDEN[name]), readable
    # Every trainable variable in exactly one block.
    paths = [v.path for block in blocks for layer in block for v in layer.trainable_variables]
    assert sorted(paths) == sorted(v.path for v in model.trainable_variables)


@pytest.mark.parametrize("name", ["t5", "whisper"] if BACKEND == "torch" else ["t5"])
def test_parallel_encoder_decoder_decays_each_stack_from_its_top(backbones, name):
    model = backbones(name)
    assert _detected(model, encoder_decoder="parallel") == _expected(model, PARALLEL[name])


def test_vit_numbering_equals_timm_param_groups_layer_decay(backbones):
    # timm's `param_groups_layer_decay` on a 2-block ViT with decay 0.5:
    # layer ids cls/pos/patch 0, blocks 1-2, head 3; scale 0.5 ** (3 - id).
    # The final norm takes the head's id, as in MAE's `param_groups_lrd`.
    model = backbones("vit")
    scales = {}
    for rule in lw.layer_decay(model, 0.5):
        for v in model.trainable_variables:
            if rule.selector.matches(v):
                scales[v.path] = rule.lr_scale
    timm_id = {"vit_patching_and_embedding": 0, "vit_encoder/transformer_block_1": 1,
               "vit_encoder/transformer_block_2": 2, "vit_encoder/ln": 3}
    for path, scale in scales.items():
        (layer_id,) = [i for prefix, i in timm_id.items() if path.startswith(prefix + "/")]
        assert scale == 0.5 ** (3 - layer_id), path
    assert len(scales) == len(model.trainable_variables)


def test_encoder_decoder_option_is_checked_before_anything(backbones):
    with pytest.raises(ValueError, match="`encoder_decoder` must be one of"):
        lw.detect_blocks(backbones("bert"), encoder_decoder="stacked_up")
