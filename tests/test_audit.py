"""Fidelity as RL sees it: the audit's confusion matrix of the reflector's claims against LIBERO's
verdict, and an audit started from the held-out init states an evaluation used."""

from __future__ import annotations

import json

import pytest

from world_env_training.eval.reflector_eval import format_audit
from world_env_training.eval.stats import wilson_interval


def test_audit_table_is_the_confusion_matrix_with_the_false_success_interval():
    audit = {"threshold": 0.5, "rollouts": 10, "claimed": 4, "real_successes": 3, "false_successes": 2,
             "false_success_rate": 0.5, "false_success_rate_all": 0.2, "missed": 1, "premature": 0}
    text = format_audit(audit)
    # claimed & achieved 2, claimed & failed 2, achieved & unclaimed 1, neither 5
    assert "| reflector claims success | 2 | 2 |" in text
    assert "| reflector does not | 1 | 5 |" in text
    low, high = wilson_interval(2, 4)
    assert f"[{low:.3f}, {high:.3f}] (95% Wilson, 4 claims)" in text


@pytest.mark.libero
def test_audit_from_an_evaluations_held_out_init_states(tmp_path):
    from world_env_training.eval.audit import audit
    from world_env_training.configs import AuditConfig
    from world_env_training.tiny import write_artifacts

    paths = write_artifacts(tmp_path / "artifacts", threshold=0.9)
    real = {"successes": 1, "episodes": 2, "rate": 0.5, "ci95": list(wilson_interval(1, 2))}
    (tmp_path / "eval.json").write_text(json.dumps({
        "config": {"seed": 0}, "init_states": {"libero_object/0": [7, 31]},
        "summary": {"overall": {"gt_termination": real}}}))
    result = audit(AuditConfig(policy=paths["policy"], world_model=paths["world_model"], reflector=paths["reflector"],
                               eval_json=str(tmp_path / "eval.json"), starts=0, rollouts_per_state=2, max_steps=8,
                               output_dir=str(tmp_path / "audit")))
    assert result["rollouts"] == 4 and result["init_states"] == [7, 31]
    assert [r["init_state_id"] for r in result["per_rollout"]] == [7, 7, 31, 31]
    assert result["real_eval"] == real
    text = (tmp_path / "audit" / "audit.md").read_text()
    assert "Imagined against real success from the same held-out init states (7, 31)" in text
    assert "| real (evaluate, GT termination) | 0.500 |" in text
    first = audit(AuditConfig(policy=paths["policy"], world_model=paths["world_model"], reflector=paths["reflector"],
                              eval_json=str(tmp_path / "eval.json"), starts=1, rollouts_per_state=2, max_steps=8,
                              output_dir=str(tmp_path / "audit_first")))
    assert first["init_states"] == [7] and first["rollouts"] == 2

    (tmp_path / "old.json").write_text(json.dumps({"config": {"seed": 0}, "summary": {}}))
    with pytest.raises(ValueError, match="no init_states"):
        audit(AuditConfig(policy=paths["policy"], world_model=paths["world_model"], reflector=paths["reflector"],
                          eval_json=str(tmp_path / "old.json"), output_dir=str(tmp_path / "audit2")))
