"""Tiny keras-hub models (random weights, no downloads) shared by the block
and task tests: 2 or 3 layers per stack, hidden sizes of 8-16."""

import keras


def _hub():
    import keras_hub  # noqa: PLC0415  (optional dependency, skipped without it)

    return keras_hub


def _vit_kwargs():
    return dict(image_shape=(16, 16, 3), patch_size=8, num_layers=2, num_heads=2,
                hidden_dim=8, mlp_dim=16)


def backbone(name):
    """The tiny backbone of family `name` (see `BACKBONES`)."""
    m = _hub().models
    text = dict(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8,
                intermediate_dim=16)
    if name == "bert":
        return m.BertBackbone(**text, max_sequence_length=8)
    if name == "roberta":
        return m.RobertaBackbone(**text, max_sequence_length=8)
    if name == "distil_bert":
        return m.DistilBertBackbone(**text, max_sequence_length=8)
    if name == "electra":
        t = dict(text, vocab_size=text["vocabulary_size"])
        del t["vocabulary_size"]
        return m.ElectraBackbone(**t, embedding_dim=8, max_sequence_length=8)
    if name == "albert":
        return m.AlbertBackbone(**text, embedding_dim=8, max_sequence_length=8)
    if name == "gpt2":
        return m.GPT2Backbone(**text, max_sequence_length=8)
    if name == "opt":
        return m.OPTBackbone(**text, max_sequence_length=8)
    if name == "gemma":
        return m.GemmaBackbone(vocabulary_size=50, num_layers=2, num_query_heads=2,
                               num_key_value_heads=1, hidden_dim=8, intermediate_dim=16,
                               head_dim=4)
    if name == "llama":
        return m.LlamaBackbone(vocabulary_size=50, num_layers=2, num_query_heads=2,
                               num_key_value_heads=1, hidden_dim=8, intermediate_dim=16)
    if name == "mistral":
        return m.MistralBackbone(vocabulary_size=50, num_layers=2, num_query_heads=2,
                                 num_key_value_heads=1, hidden_dim=8, intermediate_dim=16)
    if name == "vit":
        return m.ViTBackbone(**_vit_kwargs())
    if name == "deit":
        return m.DeiTBackbone(image_shape=(16, 16, 3), patch_size=8, num_layers=2,
                              num_heads=2, hidden_dim=8, intermediate_dim=16)
    if name == "dinov2":
        return m.DINOV2Backbone(patch_size=8, num_layers=2, hidden_dim=8, num_heads=2,
                                intermediate_dim=16, image_shape=(16, 16, 3),
                                position_embedding_shape=(16, 16, 3))
    if name == "swin":
        return m.SwinTransformerBackbone(image_shape=(16, 16, 3), embed_dim=8,
                                         depths=(2, 2), num_heads=(2, 2), window_size=2,
                                         patch_size=2)
    if name == "t5":
        return m.T5Backbone(**text)
    if name == "bart":
        return m.BartBackbone(**text, max_sequence_length=8)
    if name == "whisper":
        return m.WhisperBackbone(**text, num_mels=8, max_encoder_sequence_length=16,
                                 max_decoder_sequence_length=8)
    if name == "clip":
        return m.CLIPBackbone(
            m.CLIPVisionEncoder(patch_size=8, hidden_dim=8, num_layers=2, num_heads=2,
                                intermediate_dim=16, image_shape=(16, 16, 3)),
            m.CLIPTextEncoder(vocabulary_size=50, embedding_dim=8, hidden_dim=8,
                              num_layers=2, num_heads=2, intermediate_dim=16,
                              max_sequence_length=8),
            projection_dim=8)
    if name == "siglip":
        return m.SigLIPBackbone(
            m.SigLIPVisionEncoder(patch_size=8, hidden_dim=8, num_layers=2, num_heads=2,
                                  intermediate_dim=16, image_shape=(16, 16, 3)),
            m.SigLIPTextEncoder(vocabulary_size=50, embedding_dim=8, hidden_dim=8,
                                num_layers=2, num_heads=2, intermediate_dim=16,
                                max_sequence_length=8))
    if name == "pali_gemma":
        return m.PaliGemmaBackbone(vocabulary_size=50, image_size=16, num_layers=2,
                                   num_query_heads=2, num_key_value_heads=1, hidden_dim=8,
                                   intermediate_dim=16, head_dim=4, vit_patch_size=8,
                                   vit_num_heads=2, vit_hidden_dim=8, vit_num_layers=2)
    if name == "resnet":
        return m.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[3],
                                stackwise_num_filters=[64, 64], stackwise_num_blocks=[2, 2],
                                stackwise_num_strides=[1, 2], block_type="basic_block",
                                image_shape=(16, 16, 3))
    raise ValueError(name)


BACKBONES = ["bert", "roberta", "distil_bert", "electra", "albert", "gpt2", "opt", "gemma",
             "llama", "mistral", "vit", "deit", "dinov2", "swin", "t5", "bart", "whisper",
             "clip", "siglip", "pali_gemma", "resnet"]


def task(name, initialized=False):
    """A tiny keras-hub task on a tiny backbone, without preprocessing.

    Unless `initialized`, the backbone's variables are left uninitialized
    (detection reads structure only): on JAX that saves compiling every
    initializer. Not on torch, whose modules cannot track an uninitialized
    variable (and which initializes eagerly, fast).
    """
    m = _hub().models
    backbone_name, make = {
        "bert_classifier": ("bert", lambda b: m.BertTextClassifier(
            b, num_classes=3, preprocessor=None)),
        "vit_classifier": ("vit", lambda b: m.ViTImageClassifier(b, num_classes=3)),
        "gemma_causal_lm": ("gemma", lambda b: m.GemmaCausalLM(b, preprocessor=None)),
        "bart_seq2seq_lm": ("bart", lambda b: m.BartSeq2SeqLM(b, preprocessor=None)),
    }[name]
    if initialized or keras.backend.backend() == "torch":
        return make(backbone(backbone_name))
    with keras.StatelessScope(initialize_variables=False):
        backbone_model = backbone(backbone_name)
    return make(backbone_model)


TASKS = ["bert_classifier", "vit_classifier", "gemma_causal_lm", "bart_seq2seq_lm"]
