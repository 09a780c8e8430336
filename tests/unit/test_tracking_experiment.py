"""ringctl's MLflow experiment carries the kind tag MLflow's UI reads (training runs, not GenAI traces), on a real
sqlite store; a kind the user chose is kept."""

from __future__ import annotations

from ringctl.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, Tracking


def _kind(uri: str, name: str) -> str | None:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri).get_experiment_by_name(name).tags.get(EXPERIMENT_KIND_TAG)


def test_experiment_is_created_with_the_training_kind_and_keeps_a_users_kind(tmp_path):
    from mlflow.tracking import MlflowClient

    assert EXPERIMENT_KIND == "custom_model_development"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trk = Tracking(uri, "ringctl")
    assert _kind(uri, "ringctl") == EXPERIMENT_KIND
    assert Tracking(uri, "ringctl").experiment_id == trk.experiment_id  # found, not created twice

    c = MlflowClient(uri)
    # an experiment made before this tag existed (or by someone else) gets it when ringctl first uses it
    old = c.create_experiment("older")
    assert EXPERIMENT_KIND_TAG not in c.get_experiment(old).tags
    assert Tracking(uri, "older").experiment_id == old
    assert _kind(uri, "older") == EXPERIMENT_KIND
    # a kind the user set is theirs: not overwritten, neither on creation nor later
    c.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    Tracking(uri, "chosen")
    assert _kind(uri, "chosen") == "genai_development"
    c.set_experiment_tag(trk.experiment_id, EXPERIMENT_KIND_TAG, "finetuning")
    Tracking(uri, "ringctl")
    assert _kind(uri, "ringctl") == "finetuning"
