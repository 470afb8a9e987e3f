"""Train a model: python train.py --config=configs/<model>.py:<preset> --workdir=DIR [--config.x=y].

Prints the resolved config, saves it as DIR/config.json, trains with early stopping on dev (resuming
from DIR/checkpoints if there), logs DIR/metrics.jsonl and TensorBoard events; then run eval.py.
With --seeds=0,1,2: one run per seed under DIR/seed_<k>, each trained and evaluated, then
DIR/aggregate.md and DIR/aggregate.json (mean ± std over seeds; mmfuse_jax/sweep.py).
"""
from mmfuse_jax import cli


def main(argv):
    del argv
    cli.init_distributed()  # multi-host: --coordinator_address/--num_processes/--process_id or --distributed=auto
    config, workdir = cli.CONFIG.value, cli.WORKDIR.value
    if cli.SEEDS.value:
        from mmfuse_jax import sweep

        return sweep.run_command(config, workdir, cli.SEEDS.value, cli.PERTURB.value)
    def train():
        from mmfuse_jax.training import loop  # after the config is checked: a mistake is reported before JAX loads

        print(loop.run(config, workdir))

    cli.run_user_facing(train, config=config)


if __name__ == "__main__":
    cli.run_app(main)
