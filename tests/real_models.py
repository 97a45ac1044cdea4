"""Pairs of real models, written by other teams, that compute the same function in torch and in Keras.

Each `ModelPair` builds a torch model and a Keras model offline (config objects and constructors, random
weights, nothing downloaded), gives matching inputs for both (named inputs where the model takes names:
transformers' `input_ids`/`attention_mask`/`token_type_ids`/`pixel_values`, keras-hub's
`token_ids`/`padding_mask`/`segment_ids`; torchvision NCHW against keras.applications NHWC) and runs each
model with its library's own call, returning named outputs that can be compared key by key.

Whether a pair really computes the same function is checked by an independent port, never by modelshell:
transformers' own cross-loader (`load_pytorch_model_in_tf2_model`) for its PT/TF classes, keras-hub's own
converters (`keras_hub.src.utils.transformers.convert_*.convert_weights`) for keras-hub against
transformers, and `port_by_order` here (a converter written by hand for these few architectures) for
torchvision against keras.applications. `same_function=False` marks the pairs that do not (ResNet50 v1.5
against v1, the asymmetric padding of Keras' MobileNets): modelshell must refuse those or say where they
diverge (`diverges_at`, found layer by layer after the reference port by `first_divergence`), never copy
them in silence.

`prepare` gives both models of a pair ready to compare: every tensor that starts constant made random
(`perturb_constants`), so that a tensor a copy skips or swaps shows, and batch norms set to the
statistics of a batch (`calibrate_norms`), so that the outputs depend on the input at all (with random
running statistics a MobileNet's output is the same for every input to 1e-7, and any copy "agrees").

Run it as a script (`python tests/real_models.py [NAME ...]`) for the matrix of what modelshell's `copy`
does today on every pair and direction: refused / ported OK / WRONG (silent).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import glob
import importlib
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "K2T",
    "PAIRS",
    "T2K",
    "TOLERANCE",
    "ModelPair",
    "Reference",
    "assert_close",
    "calibrate_norms",
    "differs",
    "first_divergence",
    "import_torchvision",
    "max_diff",
    "perturb_constants",
    "port_by_order",
    "prepare",
    "reference_port",
]

T2K, K2T = "torch->keras", "keras->torch"
BATCH, SEQ, DECODER_SEQ = 2, 8, 5
VOCAB = 100


# ----------------------------------------------------------------------------------------------------
# Imports


def import_torchvision():
    """Import torchvision on a CPU build of torch that its compiled ops were not built for.

    The only torchvision wheel of the pinned version is a CUDA build; against the CPU torch its `_C.so`
    does not load, and `import torchvision` then fails registering fake kernels for `torchvision::nms`
    and `qnms` (`operator torchvision::nms does not exist`). Where, and only where, the library does not
    load, the two schemas are defined (as `_meta_registrations.py` and the strings in `_C.so` give them),
    so that the Python side imports; the models use none of the compiled ops. transformers imports
    torchvision when it is installed, so this runs before transformers too.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("torchvision is not installed (make setup installs it)")
    if not hasattr(torch.ops.torchvision, "nms"):
        libs = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so"))
        try:
            torch.ops.load_library(libs[0])
        except (IndexError, OSError):
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _KEEP.append(lib)  # a Library that is collected undefines its operators
    import torchvision

    return torchvision


_KEEP: list[Any] = []
import_torchvision()

import keras  # noqa: E402  (Keras 3, keras.applications and keras-hub)
import keras_hub  # noqa: E402
import tensorflow as tf  # noqa: E402
import transformers  # noqa: E402  (its TF classes pick tf-keras themselves)
import torchvision.models as tvm  # noqa: E402
from transformers.modeling_tf_pytorch_utils import load_pytorch_model_in_tf2_model  # noqa: E402

tf.get_logger().setLevel("ERROR")  # retracing warnings of the many small models


# ----------------------------------------------------------------------------------------------------
# The pairs


@dataclass(frozen=True)
class ModelPair:
    """A torch model and a Keras model that compute the same function (unless `same_function` is False)."""

    name: str
    family: str  # transformers | keras-hub | torchvision
    build: Callable[[], tuple[torch.nn.Module, Any]]
    inputs: Callable[[np.random.Generator], tuple[dict[str, np.ndarray], Any]]  # (torch kwargs, keras input)
    run_torch: Callable[[torch.nn.Module, dict[str, np.ndarray]], dict[str, np.ndarray]]
    run_keras: Callable[..., dict[str, np.ndarray]]  # (model, inputs, training=False)
    port: Callable[[torch.nn.Module, Any], None]  # independent reference: torch weights into Keras
    same_function: bool = True
    note: str = ""
    keras_order: Callable[[list], list] | None = None  # torchvision pairs: the reference port's order
    diverges_at: tuple[str, str] | None = None  # pairs that differ: first (torch, Keras) layer that does


# --- inputs


def text_inputs(torch_names: dict[str, str], keras_names: dict[str, str] | None, vocab: int = VOCAB, low: int = 0):
    """Ids below the vocabulary (from `low`: RoBERTa counts positions past its padding id 1), a 0/1 mask
    with the last two places of the second row padded, segments 0 then 1; for an encoder-decoder model a
    decoder sequence of its own, shorter (DECODER_SEQ), its mask with the last place of the second row
    padded. `torch_names`/`keras_names` map the roles ids/mask/segments/decoder_ids/decoder_mask to each
    side's input names."""

    def make(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], Any]:
        ids = rng.integers(low, vocab, (BATCH, SEQ)).astype(np.int64)
        mask = np.ones((BATCH, SEQ), np.int64)
        mask[1, -2:] = 0
        segments = (np.arange(SEQ)[None, :] >= SEQ // 2).astype(np.int64).repeat(BATCH, 0)
        decoder_mask = np.ones((BATCH, DECODER_SEQ), np.int64)
        decoder_mask[1, -1] = 0
        roles = {"ids": ids, "mask": mask, "segments": segments, "decoder_mask": decoder_mask,
                 "decoder_ids": rng.integers(low, vocab, (BATCH, DECODER_SEQ)).astype(np.int64)}
        t = {name: roles[role] for role, name in torch_names.items()}
        names = keras_names or torch_names
        k = {name: roles[role].astype(np.int32) for role, name in names.items()}
        return t, k

    return make


def image_inputs(size: int, keras_channels_last: bool, torch_name: str = "x"):
    def make(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], Any]:
        x = rng.normal(0.0, 1.0, (BATCH, 3, size, size)).astype(np.float32)
        k = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if keras_channels_last else {torch_name: x}
        return {torch_name: x}, k

    return make


def audio_inputs(length: int):
    def make(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], Any]:
        x = rng.normal(0.0, 1.0, (BATCH, length)).astype(np.float32)
        return {"input_values": x}, {"input_values": x}

    return make


# --- forward passes, each with the library's own call


def hf_torch(*keys: str):
    def run(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():  # the models are built in eval mode
            out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        return {k: out[k].detach().numpy().copy() for k in keys}

    return run


def hf_tf(*keys: str):
    def run(model: Any, inputs: dict[str, np.ndarray], training: bool = False) -> dict[str, np.ndarray]:
        out = model({k: tf.constant(v) for k, v in inputs.items()}, training=training)
        return {k: np.asarray(out[k]) for k in keys}

    return run


def keras_call(names: dict[str, str] | str, nchw: bool = False):
    """Keras' own call. `names` maps each output name of the torch side to the Keras dict output, or is
    the one name for a model with a single output; `nchw` moves a 4-D channels-last output to NCHW."""

    def run(model: Any, inputs: Any, training: bool = False) -> dict[str, np.ndarray]:
        out = model(inputs, training=training)
        if isinstance(names, str):
            got = {names: out}
        else:
            got = {mine: out[theirs] for mine, theirs in names.items()}
        got = {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in got.items()}
        if nchw:
            got = {k: np.moveaxis(v, -1, 1) if v.ndim == 4 else v for k, v in got.items()}
        return got

    return run


def torch_call(name: str = "output"):
    def run(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {name: model(*[torch.from_numpy(v) for v in inputs.values()]).numpy().copy()}

    return run


# --- transformers, torch against TF classes of the same config


def hf_pair(name: str, config: Callable[[], Any], torch_cls: str, tf_cls: str, inputs, keys, note=""):
    def build():
        cfg = config()
        torch.manual_seed(0)
        tm = getattr(transformers, torch_cls)(cfg).eval()
        km = getattr(transformers, tf_cls)(cfg)
        t_in, k_in = inputs(np.random.default_rng(0))
        km({k: tf.constant(v) for k, v in k_in.items()}, training=False)  # builds its weights
        return tm, km

    def port(tm, km):
        load_pytorch_model_in_tf2_model(km, tm)

    return ModelPair(name, "transformers", build, inputs, hf_torch(*keys), hf_tf(*keys), port, note=note)


TEXT_BERT = {"ids": "input_ids", "mask": "attention_mask", "segments": "token_type_ids"}
TEXT_IDS_MASK = {"ids": "input_ids", "mask": "attention_mask"}
TINY = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def bert_config():
    return transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64, type_vocab_size=2, **TINY,
    )


def gpt2_config():
    return transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )


def distilbert_config():
    return transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64,
        dropout=0.0, attention_dropout=0.0,
    )


def vit_config():
    return transformers.ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=37, layer_norm_eps=1e-6, **TINY,
    )


def llama_config():
    return transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6,
        rope_theta=10000.0, tie_word_embeddings=True, attention_bias=False,
    )


def decoder_config(cls: str, **extra):
    """A tiny decoder-only LM config of transformers (Mistral, Qwen2, Gemma: Llama's shape with their
    own norms, biases and activations), grouped-query attention, rotary positions."""
    return lambda: getattr(transformers, cls)(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0, **extra)


def roberta_config():
    return transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=64 + 2, type_vocab_size=1, pad_token_id=1, **TINY)


def albert_config():
    return transformers.AlbertConfig(
        vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_hidden_groups=1,
        inner_group_num=1, num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
        type_vocab_size=2, hidden_act="gelu", **TINY)


def bart_config():
    return transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


def t5_config():
    return transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
        feed_forward_proj="relu")  # keras-hub's T5 has 32 buckets and a distance of 128, always


def marian_config():
    return transformers.MarianConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=VOCAB - 1,
        decoder_start_token_id=VOCAB - 1)


TEXT_SEQ2SEQ = {"ids": "input_ids", "mask": "attention_mask", "decoder_ids": "decoder_input_ids",
                "decoder_mask": "decoder_attention_mask"}
SEQ2SEQ_OUTPUTS = ["last_hidden_state", "encoder_last_hidden_state"]

HF_PAIRS = [
    hf_pair("hf-bart", bart_config, "BartModel", "TFBartModel", text_inputs(TEXT_SEQ2SEQ, None), SEQ2SEQ_OUTPUTS,
            note="encoder-decoder; one embedding shared by encoder and decoder; learned positions with offset 2"),
    hf_pair("hf-t5", t5_config, "T5Model", "TFT5Model", text_inputs(TEXT_SEQ2SEQ, None), SEQ2SEQ_OUTPUTS,
            note="encoder-decoder; relative attention bias in each stack's first block; no biases, RMS norms"),
    hf_pair("hf-marian", marian_config, "MarianModel", "TFMarianModel", text_inputs(TEXT_SEQ2SEQ, None),
            SEQ2SEQ_OUTPUTS, note="encoder-decoder; sinusoidal positions (a fixed table in torch, computed in TF)"),
    hf_pair("hf-bert", bert_config, "BertModel", "TFBertModel", text_inputs(TEXT_BERT, None),
            ["last_hidden_state", "pooler_output"]),
    hf_pair("hf-gpt2", gpt2_config, "GPT2Model", "TFGPT2Model", text_inputs(TEXT_IDS_MASK, None),
            ["last_hidden_state"]),
    hf_pair("hf-gpt2-lm", gpt2_config, "GPT2LMHeadModel", "TFGPT2LMHeadModel",
            text_inputs(TEXT_IDS_MASK, None), ["logits"], note="LM head tied to the embedding"),
    hf_pair("hf-distilbert", distilbert_config, "DistilBertModel", "TFDistilBertModel",
            text_inputs(TEXT_IDS_MASK, None), ["last_hidden_state"]),
    hf_pair("hf-vit", vit_config, "ViTModel", "TFViTModel", image_inputs(32, False, "pixel_values"),
            ["last_hidden_state", "pooler_output"]),
    hf_pair("hf-resnet", lambda: transformers.ResNetConfig(
                num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                layer_type="bottleneck"),
            "ResNetModel", "TFResNetModel", image_inputs(32, False, "pixel_values"),
            ["last_hidden_state", "pooler_output"]),
    hf_pair("hf-convnext", lambda: transformers.ConvNextConfig(
                num_channels=3, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], image_size=32),
            "ConvNextModel", "TFConvNextModel", image_inputs(32, False, "pixel_values"),
            ["last_hidden_state", "pooler_output"]),
    hf_pair("hf-swin", lambda: transformers.SwinConfig(
                image_size=32, patch_size=4, num_channels=3, embed_dim=16, depths=[1, 1],
                num_heads=[2, 2], window_size=4, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, drop_path_rate=0.0),
            "SwinModel", "TFSwinModel", image_inputs(32, False, "pixel_values"),
            ["last_hidden_state", "pooler_output"]),
    hf_pair("hf-mobilevit", lambda: transformers.MobileViTConfig(
                image_size=32, num_channels=3, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                num_attention_heads=2, mlp_ratio=2.0, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0,
                initializer_range=0.2),  # at 0.02 the convs' outputs are below batch norm's epsilon
            "MobileViTModel", "TFMobileViTModel", image_inputs(32, False, "pixel_values"),
            ["last_hidden_state", "pooler_output"]),
    hf_pair("hf-wav2vec2", lambda: transformers.Wav2Vec2Config(
                vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=37, conv_dim=(16, 16), conv_stride=(4, 4), conv_kernel=(8, 8),
                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, hidden_dropout=0.0,
                attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                layerdrop=0.0, do_stable_layer_norm=False, feat_extract_norm="group"),
            "Wav2Vec2Model", "TFWav2Vec2Model", audio_inputs(400), ["last_hidden_state"]),
    hf_pair("hf-roberta", roberta_config, "RobertaModel", "TFRobertaModel",
            text_inputs(TEXT_IDS_MASK, None, low=2), ["last_hidden_state", "pooler_output"]),
    hf_pair("hf-albert", albert_config, "AlbertModel", "TFAlbertModel", text_inputs(TEXT_BERT, None),
            ["last_hidden_state", "pooler_output"], note="one shared block run num_layers times"),
    hf_pair("hf-electra", lambda: transformers.ElectraConfig(
                vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=37, max_position_embeddings=64, **TINY),
            "ElectraModel", "TFElectraModel", text_inputs(TEXT_BERT, None), ["last_hidden_state"]),
    hf_pair("hf-deit", lambda: transformers.DeiTConfig(
                image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=2, intermediate_size=37, **TINY),
            "DeiTModel", "TFDeiTModel", image_inputs(32, False, "pixel_values"),
            ["last_hidden_state", "pooler_output"], note="a class and a distillation token"),
    hf_pair("hf-regnet", lambda: transformers.RegNetConfig(
                num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8),
            "RegNetModel", "TFRegNetModel", image_inputs(32, False, "pixel_values"),
            ["last_hidden_state", "pooler_output"], note="grouped convolutions, squeeze-excitation"),
    hf_pair("hf-segformer", lambda: transformers.SegformerConfig(
                num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0),
            "SegformerModel", "TFSegformerModel", image_inputs(32, False, "pixel_values"),
            ["last_hidden_state"], note="overlapping patch embeddings, spatial-reduction attention"),
]


# --- keras-hub against transformers' torch classes


class _StateLoader:
    """keras-hub's `SafetensorLoader` interface (`get_tensor`, `port_weight`) over a torch state dict, so
    that keras-hub's own converters read the torch model's weights without a file or a download."""

    def __init__(self, model: torch.nn.Module, extra: dict[str, np.ndarray] | None = None):
        self.state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        self.state.update(extra or {})

    def get_tensor(self, key: str) -> np.ndarray:
        """The converters name the weights of a task model (`distilbert.embeddings...`); a base model's
        state names them without its prefix, and the other way round."""
        if key in self.state:
            return self.state[key]
        hits = [k for k in self.state if k.endswith("." + key) or key.endswith("." + k)]
        if len(hits) != 1:
            raise KeyError(f"{key} (candidates: {hits})")
        return self.state[hits[0]]

    def port_weight(self, keras_variable, hf_weight_key, hook_fn=None):
        value = self.get_tensor(hf_weight_key)
        if hook_fn:
            value = hook_fn(value, list(keras_variable.shape))
        keras_variable.assign(value)


def keras_hub_pair(name, config, torch_cls, backbone: Callable[[Any], Any], converter: str | Callable, inputs,
                   keys: dict[str, str], note="", extra: Callable[[torch.nn.Module], dict] | None = None,
                   same_function: bool = True):
    """`backbone(hf_config)` builds the keras-hub backbone of the same architecture, written out here
    (not through the converter's config mapping) so the pair shows which arguments correspond. `extra`
    gives the converter tensors a base model lacks (an LM head keras-hub's backbone keeps but never
    runs). `converter` names keras-hub's own converter module, or is a reference port written here where
    keras-hub has none (T5)."""

    def build():
        cfg = config()
        torch.manual_seed(0)
        return getattr(transformers, torch_cls)(cfg).eval(), backbone(cfg)

    def port(tm, km):
        if callable(converter):
            converter(tm, km)
            return
        module = importlib.import_module(f"keras_hub.src.utils.transformers.{converter}")
        module.convert_weights(km, _StateLoader(tm, extra(tm) if extra else None), tm.config.to_dict())

    single = len(keys) == 1 and next(iter(keys.values())) is None
    run_keras = keras_call(next(iter(keys)) if single else keys)
    return ModelPair(name, "keras-hub", build, inputs, hf_torch(*keys), run_keras, port, note=note,
                     same_function=same_function)


KH_TEXT_BERT = {"ids": "token_ids", "mask": "padding_mask", "segments": "segment_ids"}
KH_TEXT = {"ids": "token_ids", "mask": "padding_mask"}

def _decoder_backbone(cls: str, **extra):
    return lambda c: getattr(keras_hub.models, cls)(
        vocabulary_size=c.vocab_size, num_layers=c.num_hidden_layers, num_query_heads=c.num_attention_heads,
        hidden_dim=c.hidden_size, intermediate_dim=c.intermediate_size, num_key_value_heads=c.num_key_value_heads,
        layer_norm_epsilon=c.rms_norm_eps, **extra)


def port_t5(tm: torch.nn.Module, km: Any) -> None:
    """The reference converter for transformers' T5 (non-gated feed-forward) into keras-hub's
    T5Backbone, written by hand from the two libraries' code, as keras-hub has no T5 converter: every
    keras-hub variable gets its transformers tensor by name, each Linear weight transposed into a Dense
    kernel; the relative attention bias (buckets, heads) is the same table in both."""
    state = {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}

    def attention(layer, prefix):
        for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("output", "o")):
            getattr(layer, f"{ours}_projector").kernel.assign(state[f"{prefix}.{theirs}.weight"].T)

    km.token_embedding.embeddings.assign(state["shared.weight"])
    for stack, layers, norm in (("encoder", km.encoder_transformer_layers, km.encoder_layer_norm),
                                ("decoder", km.decoder_transformer_layers, km.decoder_layer_norm)):
        for i, layer in enumerate(layers):
            prefix = f"{stack}.block.{i}.layer"
            attention(layer.self_attention, f"{prefix}.0.SelfAttention")
            if i == 0:
                layer.self_attention.relative_attention_bias.assign(
                    state[f"{prefix}.0.SelfAttention.relative_attention_bias.weight"])
            layer.self_attention_layer_norm.weight.assign(state[f"{prefix}.0.layer_norm.weight"])
            feed_forward = 1
            if stack == "decoder":
                attention(layer.cross_attention, f"{prefix}.1.EncDecAttention")
                layer.cross_attention_layer_norm.weight.assign(state[f"{prefix}.1.layer_norm.weight"])
                feed_forward = 2
            layer.input_projector.kernel.assign(state[f"{prefix}.{feed_forward}.DenseReluDense.wi.weight"].T)
            layer.output_projector.kernel.assign(state[f"{prefix}.{feed_forward}.DenseReluDense.wo.weight"].T)
            layer.layer_norm.weight.assign(state[f"{prefix}.{feed_forward}.layer_norm.weight"])
        norm.weight.assign(state[f"{stack}.final_layer_norm.weight"])


KH_SEQ2SEQ = {"ids": "encoder_token_ids", "mask": "encoder_padding_mask", "decoder_ids": "decoder_token_ids",
              "decoder_mask": "decoder_padding_mask"}

KERAS_HUB_PAIRS = [
    keras_hub_pair(
        "kh-bart", bart_config, "BartModel",
        lambda c: keras_hub.models.BartBackbone(
            vocabulary_size=c.vocab_size, num_layers=c.encoder_layers, num_heads=c.encoder_attention_heads,
            hidden_dim=c.d_model, intermediate_dim=c.encoder_ffn_dim, dropout=0.0,
            max_sequence_length=c.max_position_embeddings),
        "convert_bart", text_inputs(TEXT_SEQ2SEQ, KH_SEQ2SEQ),
        {"last_hidden_state": "decoder_sequence_output", "encoder_last_hidden_state": "encoder_sequence_output"},
        note="encoder-decoder; transformers' position tables have 2 rows more (its positions start at 2)"),
    keras_hub_pair(
        "kh-t5", t5_config, "T5Model",
        lambda c: keras_hub.models.T5Backbone(
            vocabulary_size=c.vocab_size, num_layers=c.num_layers, num_heads=c.num_heads, hidden_dim=c.d_model,
            intermediate_dim=c.d_ff, key_value_dim=c.d_kv, dropout=0.0, activation="relu",
            use_gated_activation=False, layer_norm_epsilon=c.layer_norm_epsilon),
        port_t5, text_inputs(TEXT_SEQ2SEQ, KH_SEQ2SEQ),
        {"last_hidden_state": "decoder_sequence_output", "encoder_last_hidden_state": "encoder_sequence_output"},
        note="encoder-decoder; keras-hub keeps each stack's relative attention bias on its attention block "
             "and names both `self_attention/embeddings`; keras-hub has 32 buckets, always"),
    keras_hub_pair(
        "kh-bert", bert_config, "BertModel",
        lambda c: keras_hub.models.BertBackbone(
            vocabulary_size=c.vocab_size, num_layers=c.num_hidden_layers,
            num_heads=c.num_attention_heads, hidden_dim=c.hidden_size,
            intermediate_dim=c.intermediate_size, max_sequence_length=c.max_position_embeddings,
            num_segments=c.type_vocab_size, dropout=0.0),
        "convert_bert", text_inputs(TEXT_BERT, KH_TEXT_BERT),
        {"last_hidden_state": "sequence_output", "pooler_output": "pooled_output"}),
    keras_hub_pair(
        "kh-gpt2", gpt2_config, "GPT2Model",
        lambda c: keras_hub.models.GPT2Backbone(
            vocabulary_size=c.vocab_size, num_layers=c.n_layer, num_heads=c.n_head,
            hidden_dim=c.n_embd, intermediate_dim=4 * c.n_embd, max_sequence_length=c.n_positions,
            dropout=0.0),
        "convert_gpt2", text_inputs(TEXT_IDS_MASK, KH_TEXT), {"last_hidden_state": None}),
    keras_hub_pair(
        "kh-distilbert", distilbert_config, "DistilBertModel",
        lambda c: keras_hub.models.DistilBertBackbone(
            vocabulary_size=c.vocab_size, num_layers=c.n_layers, num_heads=c.n_heads,
            hidden_dim=c.dim, intermediate_dim=c.hidden_dim, max_sequence_length=c.max_position_embeddings,
            dropout=0.0),
        "convert_distilbert", text_inputs(TEXT_IDS_MASK, KH_TEXT), {"last_hidden_state": None}),
    keras_hub_pair(
        "kh-llama", llama_config, "LlamaModel",
        lambda c: keras_hub.models.LlamaBackbone(
            vocabulary_size=c.vocab_size, num_layers=c.num_hidden_layers,
            num_query_heads=c.num_attention_heads, hidden_dim=c.hidden_size,
            intermediate_dim=c.intermediate_size, num_key_value_heads=c.num_key_value_heads,
            rope_max_wavelength=c.rope_theta, layer_norm_epsilon=c.rms_norm_eps,
            tie_word_embeddings=c.tie_word_embeddings),
        "convert_llama3", text_inputs(TEXT_IDS_MASK, KH_TEXT), {"last_hidden_state": None}),
    keras_hub_pair(
        "kh-vit", vit_config, "ViTModel",
        lambda c: keras_hub.models.ViTBackbone(
            image_shape=(c.image_size, c.image_size, c.num_channels), patch_size=(c.patch_size, c.patch_size),
            num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads, hidden_dim=c.hidden_size,
            mlp_dim=c.intermediate_size, layer_norm_epsilon=c.layer_norm_eps, use_mha_bias=c.qkv_bias),
        "convert_vit", image_inputs(32, True, "pixel_values"), {"last_hidden_state": None}),
    keras_hub_pair(
        "kh-deit", lambda: transformers.DeiTConfig(
            image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=37, layer_norm_eps=1e-6, **TINY), "DeiTModel",
        lambda c: keras_hub.models.DeiTBackbone(
            image_shape=(c.image_size, c.image_size, c.num_channels), patch_size=c.patch_size,
            num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads, hidden_dim=c.hidden_size,
            intermediate_dim=c.intermediate_size, layer_norm_epsilon=c.layer_norm_eps),
        "convert_deit", image_inputs(32, True, "pixel_values"), {"last_hidden_state": None},
        note="a class and a distillation token"),
    keras_hub_pair(
        "kh-mistral", decoder_config("MistralConfig", sliding_window=None), "MistralModel",
        _decoder_backbone("MistralBackbone", rope_max_wavelength=10000.0, sliding_window=None),
        "convert_mistral", text_inputs(TEXT_IDS_MASK, KH_TEXT), {"last_hidden_state": None},
        note="keras-hub's backbone keeps an untied LM head (reverse embeddings) it does not run; its "
             "converter rounds every weight through float16 (4.6e-4 of the outputs' size after it)",
        extra=lambda tm: {"lm_head.weight": tm.embed_tokens.weight.detach().numpy().copy()}),
    keras_hub_pair(
        "kh-qwen2", decoder_config("Qwen2Config", use_sliding_window=False, tie_word_embeddings=True),
        "Qwen2Model", _decoder_backbone("QwenBackbone", rope_max_wavelength=10000.0),
        "convert_qwen", text_inputs(TEXT_IDS_MASK, KH_TEXT), {"last_hidden_state": None},
        note="q/k/v projections with biases"),
    keras_hub_pair(
        "kh-gemma", decoder_config("GemmaConfig", head_dim=8, hidden_activation="gelu_pytorch_tanh"), "GemmaModel",
        lambda c: keras_hub.models.GemmaBackbone(
            vocabulary_size=c.vocab_size, num_layers=c.num_hidden_layers, num_query_heads=c.num_attention_heads,
            num_key_value_heads=c.num_key_value_heads, hidden_dim=c.hidden_size,
            intermediate_dim=2 * c.intermediate_size, head_dim=c.head_dim, layer_norm_epsilon=c.rms_norm_eps),
        "convert_gemma", text_inputs(TEXT_IDS_MASK, KH_TEXT), {"last_hidden_state": None},
        note="keras-hub's q/k/v kernels are (H, E, D), its gate and up projections (E, I) each"),
    keras_hub_pair(
        "kh-roberta", roberta_config, "RobertaModel",
        lambda c: keras_hub.models.RobertaBackbone(
            vocabulary_size=c.vocab_size, num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
            hidden_dim=c.hidden_size, intermediate_dim=c.intermediate_size,
            max_sequence_length=c.max_position_embeddings - 2, dropout=0.0),
        "convert_roberta", text_inputs(TEXT_IDS_MASK, KH_TEXT, low=2), {"last_hidden_state": None},
        same_function=False,
        note="keras-hub's RoBERTa has no token-type table (its converter drops transformers'), and "
             "transformers' position table has two rows more (its positions start after the padding id)"),
    keras_hub_pair(
        "kh-albert", albert_config, "AlbertModel",
        lambda c: keras_hub.models.AlbertBackbone(
            vocabulary_size=c.vocab_size, num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
            embedding_dim=c.embedding_size, hidden_dim=c.hidden_size, intermediate_dim=c.intermediate_size,
            num_groups=c.num_hidden_groups, num_inner_repetitions=c.inner_group_num,
            max_sequence_length=c.max_position_embeddings, num_segments=c.type_vocab_size, dropout=0.0),
        "convert_albert", text_inputs(TEXT_BERT, KH_TEXT_BERT),
        {"last_hidden_state": "sequence_output", "pooler_output": "pooled_output"},
        note="one shared block run num_layers times"),
]


# --- torchvision against keras.applications


def _post_order(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Modules that own tensors directly, children before their parent (a block's own `layer_scale`
    comes after the layers it scales)."""
    out = []

    def walk(prefix, m):
        for n, c in m.named_children():
            walk(f"{prefix}{n}.", c)
        own = list(m.named_parameters(recurse=False)) + [
            (n, b) for n, b in m.named_buffers(recurse=False) if b.is_floating_point()
        ]
        if own:
            out.append((prefix.rstrip("."), m))

    walk("", module)
    return out


def _torch_unit_tensors(m: torch.nn.Module) -> list[torch.Tensor]:
    """A module's own parameters, then its own saved floating buffers: for a batch norm weight, bias,
    running mean and variance, the order of Keras' gamma, beta, moving mean and variance."""
    state = m.state_dict()
    own = [n for n, _ in m.named_parameters(recurse=False)] + [n for n, _ in m.named_buffers(recurse=False)]
    return [state[n] for n in own if n in state and state[n].is_floating_point()]


def _weighted_layers(model: Any) -> list:
    """Keras layers that own weights, nested models (ConvNeXt's stem and downsampling `Sequential`s)
    opened up."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_weighted_layers(layer))
        elif layer.weights:
            out.append(layer)
    return out


def pair_by_order(tm: torch.nn.Module, km: Any, keras_order: Callable[[list], list] = lambda ls: ls,
                  ) -> list[tuple[str, torch.nn.Module, Any]]:
    """The reference converter's pairing: (torch name, module, Keras layer), in order."""
    units = _post_order(tm)
    layers = keras_order(_weighted_layers(km))
    if len(units) != len(layers):
        raise ValueError(f"{len(units)} torch modules with tensors against {len(layers)} Keras layers")
    return [(name, m, layer) for (name, m), layer in zip(units, layers)]


def first_divergence(pair: ModelPair, seed: int = 0) -> tuple[str, str] | None:
    """After the reference port of a torchvision pair, the first (torch module, Keras layer) of its pairing
    whose outputs differ (in shape, or by more than TOLERANCE of their size); None where all agree. An
    oracle for what `copy` must name for a pair that does not compute the same function."""
    assert pair.keras_order is not None, "torchvision pairs only"
    tm, km, t_in, k_in = prepare(pair, seed)
    pair.port(tm, km)
    pairs = pair_by_order(tm, km, pair.keras_order)
    seen: dict[str, np.ndarray] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=name: seen.__setitem__(n, out.detach().numpy().copy()))
             for name, m, _ in pairs]
    try:
        pair.run_torch(tm, t_in)
    finally:
        for h in hooks:
            h.remove()
    probe = keras.Model(km.input, [layer.output for _, _, layer in pairs])
    outs = [np.asarray(keras.ops.convert_to_numpy(o)) for o in probe(k_in, training=False)]
    for (name, _, layer), k in zip(pairs, outs):
        t = seen[name]
        activation = getattr(layer, "activation", None)
        if activation is not None and activation is not keras.activations.linear:
            # a Keras conv with its activation fused (VGG's `relu`): the same on the torch output
            t = np.moveaxis(np.asarray(activation(np.moveaxis(t, 1, -1))), -1, 1) if t.ndim == 4 else t
        k = np.moveaxis(k, -1, 1) if k.ndim == 4 else k
        if t.shape != k.shape or np.max(np.abs(t - k)) > TOLERANCE * max(1.0, float(np.max(np.abs(t)))):
            return name, layer.name
    return None


def port_by_order(tm: torch.nn.Module, km: Any, keras_order: Callable[[list], list] = lambda ls: ls,
                  zero_bias: bool = False) -> None:
    """The reference converter for torchvision -> keras.applications, written for these architectures:
    torch's tensor-owning modules in post-order against Keras' weighted layers in graph order
    (`keras_order` fixes what a model builds in another order), one layout per kind of layer;
    `zero_bias` sets to zero the bias of a Keras conv whose torch conv has none. Refuses
    (ValueError) on any count or shape that does not fit, so a pair it ports is a proven pair."""
    for name, m, layer in pair_by_order(tm, km, keras_order):
        tensors = _torch_unit_tensors(m)
        keras_vars = layer.weights
        if zero_bias and len(keras_vars) == len(tensors) + 1 and getattr(layer, "use_bias", False):
            layer.bias.assign(np.zeros(tuple(layer.bias.shape), np.float32))
            keras_vars = [v for v in keras_vars if v is not layer.bias]
        if len(tensors) != len(keras_vars):
            raise ValueError(f"{name} ({len(tensors)} tensors) against {layer.name} ({len(keras_vars)})")
        for t, v in zip(tensors, keras_vars):
            v.assign(_torch_to_keras(t.detach().numpy(), tuple(v.shape), layer))


def _torch_to_keras(a: np.ndarray, shape: tuple[int, ...], layer: Any) -> np.ndarray:
    if a.ndim == 4:  # conv (O, I/g, kh, kw)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            a = a.transpose(2, 3, 0, 1)  # (kh, kw, C, 1)
        else:
            a = a.transpose(2, 3, 1, 0)
    elif a.ndim == 2:  # Linear (O, I) against Dense (I, O) or a 1x1 Conv2D (1, 1, I, O)
        a = a.T
    if a.size != int(np.prod(shape)) or (a.ndim == len(shape) and a.shape != shape and a.ndim != 1):
        raise ValueError(f"{a.shape} does not fit {layer.name} {shape}")
    return a.reshape(shape)


def _resnet_keras_order(layers: list) -> list:
    """Keras builds a block's shortcut conv first (`..._0_conv`, `_0_bn`); torchvision registers
    `downsample` last."""
    def key(i_layer):
        i, layer = i_layer
        parts = layer.name.split("_")
        if len(parts) >= 4 and parts[1].startswith("block") and parts[2] == "0":
            return (parts[0], parts[1], 9, parts[3] == "bn", i)
        if len(parts) >= 4 and parts[1].startswith("block"):
            return (parts[0], parts[1], int(parts[2]), parts[3] == "bn", i)
        return (layer.name if i else "", "", 0, "", i)

    blocks = [(i, layer) for i, layer in enumerate(layers)]
    head = [x for x in blocks if "block" not in x[1].name]
    body = sorted([x for x in blocks if "block" in x[1].name], key=key)
    stem = [x for x in head if x[1].name.startswith("conv1")]
    tail = [x for x in head if not x[1].name.startswith("conv1")]
    return [layer for _, layer in stem + body + tail]


def resnet50_v1(num_classes: int) -> torch.nn.Module:
    """torchvision's ResNet50 with the stride of each stage's first block on its 1x1 conv (ResNet v1, as
    Keras builds it) instead of on the 3x3 conv (v1.5)."""
    model = tvm.resnet50(weights=None, num_classes=num_classes)
    for stage in (model.layer2, model.layer3, model.layer4):
        stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
    return model


def he_init(km: Any) -> Any:
    """New random kernels, He-normal as torchvision's VGG draws them: with Keras' Glorot kernels a
    13-conv ReLU stack without norms halves its signal at every layer, and its output is all biases."""
    rng = np.random.default_rng(0)
    for layer in km.layers:
        if isinstance(layer, keras.layers.Conv2D):
            shape = tuple(layer.kernel.shape)
            fan_out = shape[0] * shape[1] * shape[3]
            layer.kernel.assign(rng.normal(0.0, np.sqrt(2.0 / fan_out), shape).astype(np.float32))
    return km


def vision_pair(name, torch_model, keras_model, size, keras_order=lambda ls: ls, note="",
                zero_bias=False, diverges_at=None):
    def build():
        torch.manual_seed(0)
        return torch_model().eval(), keras_model()

    def port(tm, km):
        port_by_order(tm, km, keras_order, zero_bias)

    return ModelPair(name, "torchvision", build, image_inputs(size, True), torch_call(),
                     keras_call("output", nchw=True), port, same_function=diverges_at is None, note=note,
                     keras_order=keras_order, diverges_at=diverges_at)


APPS = keras.applications
HEAD = dict(weights=None, classes=10, classifier_activation=None)

VISION_PAIRS = [
    vision_pair("tv-vgg16", lambda: tvm.vgg16(weights=None).features,
                lambda: he_init(APPS.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))), 32,
                note="features only: at 32 px torchvision's head (7x7 adaptive pool) and Keras' do not match"),
    vision_pair("tv-vgg19", lambda: tvm.vgg19(weights=None).features,
                lambda: he_init(APPS.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))), 32,
                note="features only, as VGG16"),
    vision_pair("tv-densenet121", lambda: tvm.densenet121(weights=None, num_classes=10),
                lambda: APPS.DenseNet121(input_shape=(64, 64, 3), **HEAD), 64,
                note="classifier after a global pool"),
    vision_pair("tv-convnext-tiny", lambda: tvm.convnext_tiny(weights=None, num_classes=10),
                lambda: APPS.ConvNeXtTiny(input_shape=(64, 64, 3), include_preprocessing=False, **HEAD), 64,
                note="LayerNorm2d, grouped Conv2D as depthwise, layer scale (C,1,1) vs (C,)"),
    vision_pair("tv-resnet50-v1", lambda: resnet50_v1(10),
                lambda: APPS.ResNet50(input_shape=(64, 64, 3), **HEAD), 64, _resnet_keras_order,
                zero_bias=True,
                note="torchvision ResNet50 restrided to v1; Keras' convs have biases (zero: same function)"),
    vision_pair("tv-resnet50", lambda: tvm.resnet50(weights=None, num_classes=10),
                lambda: APPS.ResNet50(input_shape=(64, 64, 3), **HEAD), 64, _resnet_keras_order,
                zero_bias=True, diverges_at=("layer2.0.conv1", "conv3_block1_1_conv"),
                note="torchvision v1.5 (stride on the 3x3 conv) against Keras v1 (stride on the 1x1)"),
    # Features only: behind a global pool a one-pixel shift of the padding changes the logits by 1e-3
    # of their size, too little to tell from rounding in a deep model; the feature maps differ plainly.
    vision_pair("tv-mobilenet-v2", lambda: tvm.mobilenet_v2(weights=None).features,
                lambda: APPS.MobileNetV2(input_shape=(64, 64, 3), weights=None, include_top=False), 64,
                diverges_at=("0.0", "Conv1"), note="Keras pads stride-2 convs asymmetrically ('same', then ZeroPadding2D)"),
    vision_pair("tv-mobilenet-v3-small", lambda: tvm.mobilenet_v3_small(weights=None).features,
                lambda: APPS.MobileNetV3Small(input_shape=(64, 64, 3), weights=None, include_top=False,
                                              include_preprocessing=False), 64,
                diverges_at=("0.0", "conv"), note="Keras pads stride-2 convs asymmetrically"),
]

PAIRS: dict[str, ModelPair] = {p.name: p for p in HF_PAIRS + KERAS_HUB_PAIRS + VISION_PAIRS}


# ----------------------------------------------------------------------------------------------------
# Weights that start constant, made random


def perturb_constants(model: Any, rng: np.random.Generator | None = None) -> int:
    """Give random values to every floating tensor of a torch or Keras model that holds one value (biases,
    norm gamma/beta, running mean/variance, layer scales) and to class/mask tokens, so that a tensor a copy
    skips or swaps cannot pass. Variances and tensors of ones get U(0.5, 1.5), the rest N(0, 0.2).
    Returns how many tensors changed."""
    rng = rng if rng is not None else np.random.default_rng(0)
    is_torch = isinstance(model, torch.nn.Module)
    if is_torch:
        tensors = [(n, t) for n, t in model.state_dict().items() if t.is_floating_point()]
    else:
        tensors = [(getattr(v, "path", v.name), v) for v in model.weights if "float" in str(v.dtype)]
    changed = 0
    for name, tensor in tensors:
        value = tensor.detach().numpy() if is_torch else np.asarray(tensor.numpy())
        lowered = name.lower()
        token = any(w in lowered for w in ("cls_token", "class_token", "mask_token"))
        if value.size == 0 or not (token or value.min() == value.max()):
            continue
        if value.size == 1 and not any(w in lowered for w in ("bias", "beta", "gamma", "scale")):
            continue  # a lone number that is not an affine term (a temperature, a step count)
        if "var" in lowered or np.all(value == 1):
            new = rng.uniform(0.5, 1.5, value.shape).astype(value.dtype)
        else:
            new = rng.normal(0.0, 0.2, value.shape).astype(value.dtype)
        if is_torch:
            with torch.no_grad():
                tensor.copy_(torch.from_numpy(new))
        else:
            tensor.assign(new)
        changed += 1
    return changed


def calibrate_norms(model: Any, forward: Callable[[], Any]) -> int:
    """Set the running statistics of every batch norm to those of one batch (`forward()` runs it; a Keras
    `forward` passes training=True). With random weights and running variances the signal of a deep
    convolutional model dies out layer by layer, and its output is the same for every input (MobileNet:
    to 1e-7), so a copy that swaps early layers would pass; normalised on real statistics it stays alive.
    Returns how many norms were set."""
    if isinstance(model, torch.nn.Module):
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.train()
            m.momentum = 1.0  # running = this batch
        try:
            forward()
        finally:
            for m in norms:
                m.momentum = 0.1
                m.eval()
        return len(norms)
    norms = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if any(c.__name__ == "BatchNormalization" for c in type(layer).__mro__)]
    kept = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # moving = this batch
    try:
        if norms:
            forward()
    finally:
        for layer, momentum in zip(norms, kept):
            layer.momentum = momentum
    return len(norms)


def prepare(pair: ModelPair, seed: int = 0) -> tuple[torch.nn.Module, Any, dict[str, np.ndarray], Any]:
    """Both models built, their constant tensors perturbed, their batch norms calibrated on a batch of
    their own, and the inputs to compare them on: (torch model, Keras model, torch inputs, Keras inputs)."""
    rng = np.random.default_rng(seed)
    tm, km = pair.build()
    perturb_constants(tm, rng)
    perturb_constants(km, rng)
    t_batch, k_batch = pair.inputs(rng)
    calibrate_norms(tm, lambda: pair.run_torch(tm, t_batch))
    calibrate_norms(km, lambda: pair.run_keras(km, k_batch, training=True))
    t_in, k_in = pair.inputs(rng)
    return tm, km, t_in, k_in


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert list(a) == list(b), (list(a), list(b))
    worst = 0.0
    for k in a:
        assert a[k].shape == b[k].shape, (k, a[k].shape, b[k].shape)
        worst = max(worst, float(np.max(np.abs(a[k].astype(np.float64) - b[k]))))
    return worst


def scale(a: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(v))) for v in a.values())


# Agreement is to this fraction of the outputs' size (deep random models reach large activations). The
# same-function pairs agree to 1e-6 after their reference ports, but for ResNet50: 9e-5, most of it from
# Keras' batch-norm epsilon 1.001e-5 against torch's 1e-5 over 53 norms (1.8e-5 with the same epsilon).
# The wrong copies of today differ by 2.5e-3 (Swin) to 1 of the outputs' size.
TOLERANCE = 5e-4


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], rel: float = TOLERANCE) -> None:
    """Agreement to `rel` of the outputs' magnitude."""
    diff, size = max_diff(got, want), scale(want)
    assert diff <= rel * max(1.0, size), f"outputs differ by {diff:.3g} (outputs up to {size:.3g})"


def differs(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rel: float = 1e-3) -> bool:
    return max_diff(a, b) > rel * max(1.0, scale(b))


@dataclass(frozen=True)
class Reference:
    """What the pair's independent converter shows, each figure relative to the torch outputs' size."""

    before: float  # the outputs' difference before the port
    after: float  # after it: tiny where the pair computes the same function
    torch_sensitivity: float  # how much each model's outputs change with the input: a model whose
    keras_sensitivity: float  # outputs hardly depend on it proves nothing about a copy


def reference_port(pair: ModelPair, seed: int = 0) -> Reference:
    """Port the torch weights into Keras with the pair's independent converter."""
    tm, km, t_in, k_in = prepare(pair, seed)
    t_other, k_other = pair.inputs(np.random.default_rng(seed + 1000))
    want = pair.run_torch(tm, t_in)
    size = max(1.0, scale(want))
    keras_out = pair.run_keras(km, k_in)
    sensitivity = (max_diff(pair.run_torch(tm, t_other), want) / scale(want),
                   max_diff(pair.run_keras(km, k_other), keras_out) / scale(keras_out))
    before = max_diff(keras_out, want) / size
    pair.port(tm, km)
    return Reference(before, max_diff(pair.run_keras(km, k_in), want) / size, *sensitivity)


# ----------------------------------------------------------------------------------------------------
# What modelshell's copy does today


def copy_outcome(pair: ModelPair, direction: str, seed: int = 0) -> tuple[str, str]:
    """Build, perturb, copy with a real Session; ('refused', reason) / ('ok', diff) / ('WRONG', diff)."""
    from modelshell.core.session import Session

    tm, km, t_in, k_in = prepare(pair, seed)
    session = Session()
    session.namespace["t"], session.namespace["k"] = tm, km
    outcome = session.run_line("copy t k" if direction == T2K else "copy k t")
    if not outcome.ok:
        return "refused", (outcome.error or "").splitlines()[0][:100] if outcome.error else "(no reason)"
    src, dst = (pair.run_torch(tm, t_in), pair.run_keras(km, k_in))
    if direction == K2T:
        src, dst = dst, src
    diff = max_diff(dst, src)
    return ("ok" if not differs(dst, src, TOLERANCE) else "WRONG"), f"max abs diff {diff:.3g}"


def main(names: list[str]) -> None:
    counts: dict[str, int] = {}
    for name in names or list(PAIRS):
        pair = PAIRS[name]
        for direction in (T2K, K2T):
            start = time.perf_counter()
            try:
                status, detail = copy_outcome(pair, direction)
            except Exception as e:  # a pair that does not build or run here is reported, not hidden
                status, detail = "ERROR", f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
            counts[status] = counts.get(status, 0) + 1
            took = time.perf_counter() - start
            kind = "" if pair.same_function else " (differs)"
            print(f"{name + kind:34} {direction:13} {status:8} {took:5.1f}s  {detail}", flush=True)
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
