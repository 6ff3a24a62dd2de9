"""Run artifacts: the loss curve draws what metrics.jsonl holds, a single point included."""

from tifa_lite.training.outputs import last_metrics, plot_loss


def test_curve_draws_train_and_eval_loss_even_from_one_point(tmp_path):
    out = tmp_path / "curve.png"
    assert plot_loss([{"step": 1, "loss": 2.0}, {"step": 1, "eval_loss": 2.5}], out) == ["train loss", "eval loss"]
    assert out.read_bytes().startswith(b"\x89PNG")
    assert plot_loss([{"step": 3, "train_runtime": 1.0}], tmp_path / "none.png") == []
    assert not (tmp_path / "none.png").exists()


def test_last_metrics_keeps_the_final_summary_and_the_last_evaluation():
    history = [{"loss": 3.0, "step": 1}, {"eval_loss": 2.9, "step": 1}, {"eval_loss": 2.7, "eval_runtime": 1.0, "step": 2},
               {"train_loss": 2.95, "train_runtime": 4.0, "step": 2}]
    assert last_metrics(history) == {"eval_loss": 2.7, "eval_runtime": 1.0, "train_loss": 2.95, "train_runtime": 4.0}
