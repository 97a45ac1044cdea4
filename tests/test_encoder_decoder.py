"""Encoder-decoder models: the decoder's inputs by role, outputs by name, tensors tied across the encoder,
the decoder and the head, and a position table with rows before its first position.

The ports themselves (BART, T5 and Marian between transformers' torch and TF classes, BART between
transformers and keras-hub, both ways) are in `test_real_models.py`'s MUST_PORT; here are the pieces they
rest on, each on real models (tiny configs, random weights) or real layers, with the libraries' own calls
as the reference.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import torch

import real_models as rm
from modelshell.core.session import Session
from modelshell.frameworks.detect import wrap_object
from modelshell.transfer.inputs import paired_inputs
from test_real_models import state, same_state

pytestmark = pytest.mark.slow

def session_with(torch_model, keras_model) -> Session:
    session = Session()
    session.namespace["t"], session.namespace["k"] = torch_model, keras_model
    return session


def test_the_decoder_inputs_are_filled_by_role_on_a_sequence_of_their_own() -> None:
    """transformers' BART takes `input_ids`/`decoder_input_ids`, keras-hub's `encoder_token_ids`/
    `decoder_token_ids`: each role gets the same values on both sides, the decoder a shorter sequence than
    the encoder (a model that read one for the other would fail on shapes), ids below the vocabulary,
    masks 0/1 with one padded place; and the torch model runs on what it is given (its own call)."""
    tm, km = rm.PAIRS["kh-bart"].build()
    t, k = wrap_object(tm, "t"), wrap_object(km, "k")
    given = paired_inputs(t, k, t.layers(), k.layers())
    assert set(given.a) == {"input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"}
    assert set(given.b) == {"encoder_token_ids", "encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask"}
    for mine, theirs in (("input_ids", "encoder_token_ids"), ("attention_mask", "encoder_padding_mask"),
                         ("decoder_input_ids", "decoder_token_ids"), ("decoder_attention_mask", "decoder_padding_mask")):
        np.testing.assert_array_equal(given.a[mine], given.b[theirs])
    encoder, decoder = given.a["input_ids"], given.a["decoder_input_ids"]
    assert encoder.shape[0] == decoder.shape[0] and encoder.shape[1] != decoder.shape[1]
    assert not np.array_equal(encoder[:, :decoder.shape[1]], decoder)  # two sequences, not one seen twice
    for ids in (encoder, decoder):
        assert 0 <= ids.min() and ids.max() < tm.config.vocab_size
    for mask in (given.a["attention_mask"], given.a["decoder_attention_mask"]):
        assert set(np.unique(mask)) == {0, 1} and (mask == 0).sum() == 1
    with torch.no_grad():
        out = tm(**{name: torch.from_numpy(value) for name, value in given.a.items()})
    assert out.last_hidden_state.shape[:2] == decoder.shape
    assert out.encoder_last_hidden_state.shape[:2] == encoder.shape


def test_the_outputs_are_compared_by_name_decoder_with_decoder() -> None:
    """After a right copy, `verify` compares transformers' `last_hidden_state` (the decoder's) with
    keras-hub's `decoder_sequence_output` and the encoders' outputs with each other, and they agree; before
    the copy they differ (the same comparison can fail)."""
    tm, km, _, _ = rm.prepare(rm.PAIRS["kh-bart"])
    session = session_with(tm, km)
    before = session.run_line("verify t k")
    assert not before.ok and not before.results[0].data["ok"], before.results[0].data  # a failing line
    assert session.run_line("copy t k").ok
    after = session.run_line("verify t k")
    assert after.ok, after.error
    data = after.results[0].data
    names = [o["name"] for o in data["outputs"]]
    assert names == ["output.last_hidden_state", "output.encoder_last_hidden_state"], names
    decoder, encoder = (o["shape"] for o in data["outputs"])
    assert decoder[1] < encoder[1], (decoder, encoder)  # the decoder's sequence is the shorter one
    assert data["ok"], data


def test_a_tied_tensor_paired_through_one_of_its_other_names_is_written_once() -> None:
    """BART's `shared.weight` is its encoder's and decoder's `embed_tokens.weight` (one tensor, three names
    in the state dict). Paired through the decoder's name (`--map`), the copy writes the one tensor, its
    names stay one tensor, and the torch model computes what the TF model computes (before: refused,
    `shared.weight` left without a value)."""
    pair = rm.PAIRS["hf-bart"]
    tm, km, t_in, k_in = rm.prepare(pair)
    assert rm.differs(pair.run_torch(tm, t_in), pair.run_keras(km, k_in))
    outcome = session_with(tm, km).run_line("copy k t --map model.shared*=decoder.embed_tokens")
    assert outcome.ok, outcome.error
    assert tm.shared.weight.data_ptr() == tm.decoder.embed_tokens.weight.data_ptr() == \
        tm.encoder.embed_tokens.weight.data_ptr()
    rm.assert_close(pair.run_torch(tm, t_in), pair.run_keras(km, k_in))


class TiedLM(torch.nn.Module):
    """An embedding, a norm, and an output head that is the embedding (one tensor, two names)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 20, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(input_ids)))


def untied_keras_lm(tied: bool):
    """The same function in Keras with its head a Dense of its own; ``tied``: its kernel set to the
    embedding's transpose, as the torch model's one tensor would give both."""
    import keras

    inputs = keras.Input((None,), dtype="int32")
    embed = keras.layers.Embedding(20, 8)
    norm = keras.layers.LayerNormalization(epsilon=1e-5)
    head = keras.layers.Dense(20, use_bias=False)
    model = keras.Model(inputs, head(norm(embed(inputs))))
    rm.perturb_constants(model, np.random.default_rng(3))
    if tied:
        head.kernel.assign(np.asarray(embed.embeddings.numpy()).T)
    return model


def _lm_outputs(tm: torch.nn.Module, km, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        t = tm(torch.from_numpy(ids)).numpy()
    return t, np.asarray(km(ids.astype(np.int32)))


def test_a_tied_tensor_given_two_different_values_refuses_and_changes_nothing() -> None:
    """Two pairs write the torch model's one tensor (the embedding from Keras's Embedding, the head from
    Keras's Dense): with different values the copy refuses in one line and the torch model is as it was,
    where writing it twice would let the last one win in silence; with equal values it copies, and the
    torch model then computes the Keras model's outputs (both by their own calls)."""
    ids = np.random.default_rng(0).integers(0, 20, (2, 6)).astype(np.int64)
    torch.manual_seed(0)
    tm = TiedLM().eval()
    rm.perturb_constants(tm, np.random.default_rng(1))
    before = state(tm)
    outcome = session_with(tm, untied_keras_lm(tied=False)).run_line("copy k t")
    assert not outcome.ok and "one tied tensor" in outcome.error and "\n" not in outcome.error.strip(), outcome.error
    assert same_state(before, state(tm))

    km = untied_keras_lm(tied=True)
    assert rm.differs({"y": _lm_outputs(tm, km, ids)[0]}, {"y": _lm_outputs(tm, km, ids)[1]})
    outcome = session_with(tm, km).run_line("copy k t")
    assert outcome.ok, outcome.error
    assert tm.head.weight.data_ptr() == tm.embed.weight.data_ptr()
    got, want = _lm_outputs(tm, km, ids)
    rm.assert_close({"y": got}, {"y": want})


def test_a_position_table_of_another_size_than_its_offset_allows_is_refused() -> None:
    """The offset rule takes transformers' 2 rows before the first position, no other difference: a
    keras-hub BART for sequences of 32 against transformers' table for 64 is refused by shape, in one line
    naming the table, and nothing is written."""
    import keras_hub

    tm, _ = rm.PAIRS["kh-bart"].build()
    c = tm.config
    km = keras_hub.models.BartBackbone(vocabulary_size=c.vocab_size, num_layers=c.encoder_layers,
                                       num_heads=c.encoder_attention_heads, hidden_dim=c.d_model,
                                       intermediate_dim=c.encoder_ffn_dim, dropout=0.0, max_sequence_length=32)
    before = state(km)
    outcome = session_with(tm, km).run_line("copy t k")
    assert not outcome.ok
    assert "embed_positions" in outcome.error and "(66, 32)" in outcome.error, outcome.error
    assert "\n" not in outcome.error.strip()
    assert same_state(before, state(km))


def test_keras_variables_that_share_a_path_are_told_apart() -> None:
    """keras-hub's T5 makes its encoder's and its decoder's relative attention bias under one path
    (`self_attention/embeddings`): modelshell names each by the layer that owns it, and a write to one
    leaves the other as it was, where a lookup by path would reach the same variable for both."""
    _, km = rm.PAIRS["kh-t5"].build()
    biases = [stack[0].self_attention.relative_attention_bias
              for stack in (km.encoder_transformer_layers, km.decoder_transformer_layers)]
    assert biases[0].path == biases[1].path  # the premise
    k = wrap_object(km, "k")
    names = [t.name for t in k.tensors()]
    assert len(set(names)) == len(names)
    ours = [n for n in names if n.endswith("/embeddings") and "self_attention" in n]
    assert ours == ["transformer_encoder_layer_0/self_attention/embeddings",
                    "transformer_decoder_layer_0/self_attention/embeddings"], ours
    kept = np.array(biases[0].numpy())
    new = np.full(tuple(biases[1].shape), 0.5, np.float32)
    k.write({ours[1]: new})
    np.testing.assert_array_equal(np.asarray(biases[1].numpy()), new)
    np.testing.assert_array_equal(np.asarray(biases[0].numpy()), kept)
    np.testing.assert_array_equal(k.read(ours[0]), kept)


def test_alike_layers_left_over_pair_in_order_and_crosswise_is_caught() -> None:
    """The two relative attention biases pair in execution order (encoder's with encoder's), as a group
    that only order decided; the same tensors forced crosswise (`--map`) fit every shape, and the check
    after the copy fails it, naming where the outputs part."""
    tm, km, _, _ = rm.prepare(rm.PAIRS["kh-t5"])
    session = session_with(tm, km)
    layers = {row["a"]: row for row in session.run_line("pair t k").results[0].data["layers"]}
    for stack in ("encoder", "decoder"):
        row = layers[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias"]
        assert row["b"] == f"transformer_{stack}_layer_0/self_attention" and row["basis"] == "order", row
    crosswise = session.run_line(
        "copy t k --map encoder.block.0.layer.0.SelfAttention.relative_attention_bias=transformer_decoder_layer_0/self_attention"
        " --map decoder.block.0.layer.0.SelfAttention.relative_attention_bias=transformer_encoder_layer_0/self_attention")
    assert not crosswise.ok and "differ" in crosswise.error and "\n" not in crosswise.error.strip(), crosswise.error


def whisper_pair() -> rm.ModelPair:
    """transformers' Whisper, torch against TF: mel features (N, mel bins, frames) into the encoder, whose
    torch class takes exactly twice its position table's frames."""
    import transformers

    def config():
        return transformers.WhisperConfig(
            vocab_size=rm.VOCAB, num_mel_bins=8, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, d_model=32, max_source_positions=16,
            max_target_positions=32, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
            pad_token_id=rm.VOCAB - 1, bos_token_id=rm.VOCAB - 2, eos_token_id=rm.VOCAB - 3,
            decoder_start_token_id=rm.VOCAB - 2, suppress_tokens=None, begin_suppress_tokens=None)

    def inputs(rng: np.random.Generator):
        features = rng.normal(0.0, 1.0, (rm.BATCH, 8, 32)).astype(np.float32)
        decoder = rng.integers(0, rm.VOCAB, (rm.BATCH, rm.DECODER_SEQ))
        return ({"input_features": features, "decoder_input_ids": decoder},
                {"input_features": features, "decoder_input_ids": decoder.astype(np.int32)})

    return rm.hf_pair("hf-whisper", config, "WhisperModel", "TFWhisperModel", inputs, rm.SEQ2SEQ_OUTPUTS)


def test_whisper_copies_but_says_it_is_not_verified_for_its_features_cannot_be_made_up() -> None:
    """What is not built, pinned: modelshell does not make up Whisper's `input_features` (the frames must
    be exactly twice the encoder's position table, which no signature says), so neither model runs, the
    layers pair in registration order, and the copy says in its line that it is not verified and why.
    Today that order is right: the TF model computes the torch model's outputs (both libraries' calls)."""
    pair = whisper_pair()
    tm, km, t_in, k_in = rm.prepare(pair)
    assert rm.differs(pair.run_keras(km, k_in), pair.run_torch(tm, t_in))
    outcome = session_with(tm, km).run_line("copy t k")
    assert outcome.ok, outcome.error
    line = str(outcome.results[0].text if hasattr(outcome.results[0], "text") else outcome.results[0])
    assert "not verified: cannot make up a value for the input 'input_features'" in line, line
    assert outcome.results[0].data["confirmed"]["outputs"] == 0
    rm.assert_close(pair.run_keras(km, k_in), pair.run_torch(tm, t_in))
