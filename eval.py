"""Evaluate the best checkpoint of a run on dev and test: python eval.py --config=... --workdir=DIR.

Evaluates the model's final training stage (DIR itself, or e.g. DIR/stage2 for KuDA). Writes
eval_<split>.json, predictions_<split>.npz and report.md with its plots (plots/: learning curves,
confusion matrix, per-class F1) in that run folder, and prints the metrics table.
"""
import os

from mmfuse_jax import cli


def main(argv):
    del argv
    cli.init_distributed()  # multi-host: --coordinator_address/--num_processes/--process_id or --distributed=auto
    from mmfuse_jax import report
    from mmfuse_jax.training import distributed, loop

    config, workdir = cli.CONFIG.value, cli.WORKDIR.value

    def run():
        ev = loop.run_evaluation(config, workdir)
        print(loop.format_table(ev.results, f"{config.model_name} on {config.dataset.name} (x100)"))
        if distributed.is_primary():  # only process 0 writes the report
            report.after_evaluate(ev.run_dir, ev.config, ev.preds, train=ev.train, checkpoint_step=ev.checkpoint_step)
            print(f"report: {os.path.join(ev.run_dir, 'report.md')}")

    cli.run_user_facing(run, config=config)


if __name__ == "__main__":
    cli.run_app(main)
