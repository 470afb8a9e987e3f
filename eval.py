"""Evaluate the best checkpoint of a run on dev and test: python eval.py --config=... --workdir=DIR.

Writes DIR/eval_<split>.json, DIR/predictions_<split>.npz and DIR/report.md with its plots
(DIR/plots/: learning curves, confusion matrix, per-class F1), and prints the metrics table.
"""
import os

from mmfuse_jax import cli


def main(argv):
    del argv
    cli.init_distributed()  # multi-host: --coordinator_address/--num_processes/--process_id or --distributed=auto
    from mmfuse_jax.training import loop

    config, workdir = cli.CONFIG.value, cli.WORKDIR.value

    def run():
        results = loop.run_evaluation(config, workdir)
        print(loop.format_table(results, f"{config.model_name} on {config.dataset.name} (x100)"))
        from mmfuse_jax.training import distributed

        if distributed.is_primary():  # only process 0 writes the report
            print(f"report: {os.path.join(workdir, 'report.md')}")

    cli.run_user_facing(run, config=config)


if __name__ == "__main__":
    cli.run_app(main)
