"""kuda: Knowledge-Guided Dynamic Modality Attention Fusion (two stages; mmfuse_jax/models/kuda.py).

Presets: sims, simsv2, mosi, mosei (MMSA pickles, mmfuse_jax/data/formats/mmsa.py), bench (SIMS
shapes with a 6-layer/384 BERT, for benchmarks/), demo and tiny (synthetic MMSA-layout data written
on first use by mmfuse_jax/data/synthetic/mmsa.py; tiny is for tests); demo_roberta, tiny_roberta,
mosi_roberta, mosei_roberta: the same with a RoBERTa text branch (`ROBERTA`).
Train both stages (the recipe is `kuda_recipe.stages`):
python train.py --config=configs/kuda.py:sims --workdir=runs/kuda, then eval.py with the same flags
(it evaluates <workdir>/stage2).
Stage 1 knowledge (config.stage1.dataset): mosi/mosei pretrain on CH-SIMSv2 with English text under
data/CH-SIMSv2-en (obtain it first: `kuda_recipe.KNOWLEDGE_HELP`); demo/tiny on a second synthetic dataset
(other seed, other audio/video sizes); sims/simsv2/bench on the target itself.

Sources. The official repository (github:MKMaS-GUET/KuDA @ e60ef6b) ships one set of stage-2
hyperparameters (opts.py, defaults = SIMS; plus values hard-coded in models/) and one of stage 1
(pretrain.py); its README says they "need to be modified for different datasets" but gives no other
values, so every dataset uses them, with the lengths and feature sizes of its own release (mmsa.py).
"""
from configs import datasets
from configs.base import base_config, parse_preset

# config preset -> `configs.datasets` entry (the synthetic sizes are there: MMSA_DEMO, MMSA_TINY, MMSA_BENCH)
DATASETS = {"sims": "sims", "simsv2": "simsv2", "mosi": "mmsa_mosi", "mosei": "mmsa_mosei",
            "bench": "synthetic_mmsa_bench", "demo": "synthetic_mmsa_demo", "tiny": "synthetic_mmsa_tiny"}
# config preset -> the `configs.datasets` entry stage 1 pretrains on (config.stage1.dataset); absent: the
# target itself. MOSI/MOSEI: CH-SIMSv2 with English text (pretrain.py external_knowledge; KuDA README).
KNOWLEDGE = {"mosi": "simsv2_en", "mosei": "simsv2_en", "demo": "synthetic_mmsa_demo_knowledge",
             "tiny": "synthetic_mmsa_tiny_knowledge"}
# RoBERTa instead of BERT for the text branch (experiment kuda_text_encoders): preset -> the BERT preset
# it copies. demo/tiny: the same synthetic data with a random RoBERTa of the BERT's sizes; mosi/mosei:
# Hugging Face roberta-base (English, as their bert-base-uncased) under ROBERTA_PATH.
ROBERTA = {"demo_roberta": "demo", "tiny_roberta": "tiny", "mosi_roberta": "mosi", "mosei_roberta": "mosei"}
ROBERTA_PATH = "pretrained/roberta-base"
PRESETS = tuple(DATASETS) + tuple(ROBERTA)


def get_config(arg: str | None = None):
    preset = parse_preset(arg, default="demo", presets=PRESETS)
    return _with_roberta(_config(ROBERTA[preset]), preset) if preset in ROBERTA else _config(preset)


def _config(preset: str):
    c = base_config("kuda", preset, DATASETS[preset])
    if preset not in ("demo", "tiny", "bench"):
        c.dataset.num_buckets = 1  # KuDA's length-alignment Linears need the full, fixed lengths
    ds, m = c.dataset, c.model
    m.text_len, m.audio_len, m.video_len = ds.max_len.text, ds.max_len.audio, ds.max_len.video
    # models/Encoder_KIAdapter.py + DyRoutFusion_CLS.py (hard-coded there) and opts.py:
    m.taps = ()                 # () = default_taps(BERT layers): hidden states 3, 6, 9, 11 of a 12-layer BERT
    m.encoder_width = 128       # UniPretrain proj_fea_dim for V/A
    m.encoder_layers = 4        # UniPretrain num_layers=4
    m.encoder_heads = 8         # UniPretrain nhead=8
    m.encoder_dropout = 0.2     # TfEncoder tf_dropout=0.2
    m.adapter_heads = 4         # MixDomainAdapter(nhead=4, num_layers=2, dropout=0.1)
    m.adapter_layers = 2
    m.adapter_dropout = 0.1
    m.hidden = 256              # opts.py hidden_size (256 also hard-coded)
    m.ffn = 512                 # opts.py ffn_size
    m.fusion_layers = 3         # DyRoutTrans: 3 clones (opts.py fusion_layers is unused)
    m.heads, m.head_dim = 8, 64  # MultiHAtten(heads=8, dim_head=64)
    m.fusion_dropout = 0.3      # DyRoutTrans_block: DyRout_block(opt, dropout=0.3) (opts.py dropout unused)
    m.ratio_mode = "official"   # 'official' (a no-op, as released) | 'paper' | 'attention' | 'none'
    m.ratio_inference = "dynamic"  # 'attention' at inference: 'dynamic' (from the unimodal predictions) | 'fixed'
    m.fusion = "attention"      # paper + official: dynamic modality attention fusion (DyRout blocks); 'concat' |
    #                             'add' replace that module (paper open question 3; models/kuda.py docstring)
    m.ratio_k = 0.1             # OverallModal.py: calculate_ratio_senti(..., k=0.1)
    m.nce_weight = 0.1          # train.py: loss_re + 0.1 * nce_loss
    m.clone_init = True         # _get_clones = copy.deepcopy: cloned blocks start identical
    m.stage, m.modality, m.target = 2, "text", "unimodal"  # set per stage by models/kuda.py stages()
    # Stage 2 optimisation (train.py, opts.py, core/scheduler.py): AdamW lr 3e-5, wd 1e-5, batch 32,
    # 50 epochs, GradualWarmup over 10 % of the epochs (epoch 1 at lr 0) then cosine; no clipping.
    c.optimizer.update({"lr": 3e-5, "weight_decay": 1e-5, "warmup_ratio": 0.1, "grad_clip": 0.0,
                        "schedule": "warmup_cosine_epochs"})
    c.batch_size = c.eval_batch_size = 32
    c.num_epochs = 50
    c.optimizer.epochs = c.get_ref("num_epochs")  # the per-epoch schedule follows --config.num_epochs
    # train.py has no early stopping (it logs every epoch); we keep the best dev MAE checkpoint.
    c.patience = c.num_epochs
    c.early_stop_metric, c.early_stop_mode = "mae", "min"
    c.metric = ""  # '' = config.dataset.metric; stage-1 runs are scored on the unimodal labels (kuda_recipe.stages)
    c.seed = 1111  # opts.py / pretrain.py seed
    # Stage 1 (pretrain.py): each modality alone on its unimodal label, MSE; AdamW lr 1e-4, wd 1e-3,
    # batch 32, epochs T/V/A 100/100/50, same warmup + cosine; the last epoch's weights are saved
    # (save_model after the loop). train.py loads them and freezes 'adapter'/'decoder' parameters.
    # stage1.dataset: the knowledge dataset stage 1 trains on (a `configs.datasets` entry, MMSA layout,
    # with unimodal labels), read with the target's BERT; empty (or root ''): the target itself.
    c.stage1 = {"enabled": True, "target": "unimodal", "epochs": {"text": 100, "video": 100, "audio": 50},
                "lr": 1e-4, "weight_decay": 1e-3, "select": "last", "freeze": True, "dataset": {}}
    if preset in KNOWLEDGE:
        # MOSI/MOSEI have no unimodal labels: as pretrain.py, stage 1 learns each modality's sentiment on
        # CH-SIMSv2 (unimodal labels; English text for English targets, KuDA README). Its audio/video
        # feature sizes (25/177) differ from the target's, so stage 2 loads every stage-1 layer that fits:
        # the text branch whole, audio/video all but their input projections (kuda_recipe.stages,
        # warm_start_fit='fitting'). Obtain data/CH-SIMSv2-en (see `kuda_recipe.KNOWLEDGE_HELP`), or set
        # --config.stage1.dataset.root='' --config.stage1.target=multimodal (stage 1 on the target's label).
        c.stage1.dataset = datasets.dataset(KNOWLEDGE[preset])
        c.stage1.dataset.num_buckets = 1  # one compiled shape per stage-1 run
    if preset in ("demo", "tiny", "bench"):
        _small_preset(c, preset)
    return c


def _with_roberta(c, preset: str):
    """``c`` (a BERT preset) with a RoBERTa text branch: its checkpoint is the dataset's ``bert_path``
    (encoders/bert.py reads model_type from it) and the MMSA text is re-tokenised from raw_text with its
    BPE (read option tokenize_raw_text), in stage 1's knowledge dataset too; nothing else changes. The
    prepared data stay apart from the BERT preset's (another root, or another prepared_dir)."""
    c.preset = preset
    if len(c.dataset.synthetic):  # demo/tiny: the same pickles under their own roots, with a random RoBERTa
        c.dataset = datasets.dataset(c.dataset.name + "_roberta")
        c.stage1.dataset = datasets.dataset(c.stage1.dataset.name + "_roberta")
        c.stage1.dataset.num_buckets = 1
        return c
    c.dataset.bert_path = ROBERTA_PATH  # the knowledge dataset's bert_path '' reads it with the target's
    for ds in (c.dataset, c.stage1.dataset):
        ds.read_options.tokenize_raw_text = True
        ds.prepared_dir = f"{ds.root}/prepared_roberta"
    return c


def _small_preset(c, preset: str) -> None:
    """bench / demo / tiny: the synthetic data's BERT and our sizes."""
    m = c.model
    c.model.pretrained_bert = True  # the random BERT written with the synthetic data
    if preset == "bench":  # benchmarks/: the stage-2 step of train.py after stage 1 (adapters and decoders
        # frozen, OverallModal.preprocess_model), with a per-step schedule (a benchmark's few steps are
        # not whole epochs; the schedule costs nothing either way)
        c.optimizer.schedule = "linear"  # the frozen lists come from the recipe's final stage
    if preset == "demo":  # ours: a smaller model and larger steps so the demo learns in minutes
        m.update({"hidden": 64, "ffn": 128, "heads": 4, "head_dim": 16, "encoder_width": 32, "encoder_heads": 4,
                  "adapter_heads": 2})
        c.optimizer.lr, c.num_epochs, c.patience = 1e-3, 12, 12
        c.stage1.update({"lr": 1e-3, "epochs": {"text": 6, "video": 6, "audio": 6}})
        c.log_every = 10
    if preset == "tiny":  # ours: seconds-long runs for tests. No dropout and fewer layers: on CPU each
        # dropout site (a threefry draw) adds ~1 s of XLA compile time, each layer ~0.5-1 s.
        m.update({"hidden": 16, "ffn": 24, "heads": 2, "head_dim": 8, "encoder_width": 16, "encoder_heads": 2,
                  "encoder_layers": 2, "adapter_heads": 2, "adapter_layers": 1, "fusion_layers": 1,
                  "taps": (2,), "encoder_dropout": 0.0, "adapter_dropout": 0.0, "fusion_dropout": 0.0})
        c.optimizer.lr, c.num_epochs, c.patience = 3e-3, 2, 2
        c.stage1.update({"lr": 3e-3, "epochs": {"text": 1, "video": 1, "audio": 1}})
        c.batch_size = c.eval_batch_size = 16
        c.log_every = 1
