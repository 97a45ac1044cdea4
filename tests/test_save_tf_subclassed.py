"""`save NAME x.h5` of a subclassed tf-keras model (transformers' TFBertModel) writes the weights HDF5 that
its own ``load_weights`` and transformers' ``from_pretrained`` read, as ``tf_model.h5`` is.

The oracles are tf-keras and transformers themselves: a fresh model of the same config, built and given
the file by ``load_weights`` or ``from_pretrained``, must hold every variable of the saved one and compute
the same outputs; before the load, its variables differ.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import real_models  # noqa: E402

real_models.import_torchvision()

import transformers  # noqa: E402

from modelshell.core.session import Session  # noqa: E402

INPUTS = {"input_ids": np.array([[5, 17, 3, 40, 2, 9], [1, 60, 22, 7, 31, 4]], dtype=np.int32),
          "attention_mask": np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]], dtype=np.int32)}


def _built(config):
    model = transformers.TFBertModel(config)
    model(model.dummy_inputs, training=False)
    return model


def _variables(model) -> dict[str, np.ndarray]:
    """By name below the model's own scope (a second model is ``tf_bert_model_1``)."""
    return {v.name.split("/", 1)[1]: v.numpy() for v in model.weights}


def _outputs(model) -> np.ndarray:
    return model(INPUTS, training=False).last_hidden_state.numpy()


def _saved(tmp_path, name: str):
    config = real_models.bert_config()
    model = _built(config)
    session = Session()
    session.namespace["tb"] = model
    outcome = session.run_line(f"save tb {tmp_path / name}")
    assert outcome.ok, outcome.error
    assert outcome.results[0].text.startswith(f"saved tb to {tmp_path / name}")
    return config, model


def _assert_same_model(loaded, model) -> None:
    want, got = _variables(model), _variables(loaded)
    assert sorted(got) == sorted(want) and len(want) == len(model.weights)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    np.testing.assert_allclose(_outputs(loaded), _outputs(model), rtol=0, atol=1e-6)


def test_a_subclassed_tf_keras_model_saves_the_weights_its_load_weights_reads(tmp_path):
    config, model = _saved(tmp_path, "bert.h5")
    fresh = _built(config)
    assert any(not np.array_equal(a, b) for a, b in zip(_variables(fresh).values(), _variables(model).values()))
    assert not np.allclose(_outputs(fresh), _outputs(model))
    fresh.load_weights(str(tmp_path / "bert.h5"))
    _assert_same_model(fresh, model)


def test_from_pretrained_loads_the_saved_file_as_tf_model_h5(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    config, model = _saved(folder, "tf_model.h5")
    config.save_pretrained(str(folder))
    loaded = transformers.TFBertModel.from_pretrained(str(folder))
    _assert_same_model(loaded, model)
