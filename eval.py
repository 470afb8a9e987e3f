"""Evaluate the best checkpoint of a run on dev and test: python eval.py --config=... --workdir=DIR.

Evaluates the model's final training stage (DIR itself, or e.g. DIR/stage2 for KuDA). Writes
eval_<split>.json, predictions_<split>.npz and report.md with its plots (plots/: learning curves,
confusion matrix, per-class F1) in that run folder, and prints the metrics table.
--perturb=drop:audio,noise:video:0.5 evaluates with perturbed inputs (mmfuse_jax/perturb.py; ';' separates
several evaluations) into eval_<split>__<perturbation>.json and adds them to report.md's robustness table.
--seeds=0,1,2 evaluates DIR/seed_<k> of a seed sweep and rewrites DIR/aggregate.{md,json}.
"""
import os

from mmfuse_jax import cli


def main(argv):
    del argv
    cli.init_distributed()  # multi-host: --coordinator_address/--num_processes/--process_id or --distributed=auto
    config, workdir = cli.CONFIG.value, cli.WORKDIR.value
    if cli.SEEDS.value:
        from mmfuse_jax import sweep

        return sweep.run_command(config, workdir, cli.SEEDS.value, cli.PERTURB.value, train=False)

    def run():
        from mmfuse_jax import perturb, report  # after the config is checked: a mistake is reported before JAX loads
        from mmfuse_jax.training import distributed, loop

        specs = perturb.split_list(cli.PERTURB.value)
        for spec in specs or [""]:
            ev = loop.run_evaluation(config, workdir, perturb=spec)
            title = f"{config.model_name} on {config.dataset.name} (x100)" + (f", perturbed: {spec}" if spec else "")
            print(loop.format_table(ev.results, title))
        if distributed.is_primary():  # only process 0 writes the report
            if specs:  # the clean predictions and plots stay; the report gains the robustness rows
                report.write_report(ev.run_dir)
            else:
                report.after_evaluate(ev.run_dir, ev.config, ev.preds, train=ev.train,
                                      checkpoint_step=ev.checkpoint_step)
            print(f"report: {os.path.join(ev.run_dir, 'report.md')}")

    cli.run_user_facing(run, config=config)


if __name__ == "__main__":
    cli.run_app(main)
