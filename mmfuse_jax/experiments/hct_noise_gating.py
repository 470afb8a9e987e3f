"""HCT-DMG: when one modality is noisy in training, does the gate move to the clean ones? The gate
is a parameter (one softmax over modalities for the whole model), so it can only react to noise seen
in training: synthetic data with extra noise on audio or on video (the data knobs), gate read from the
trained params; eval-time noise (perturbations) shows what the fixed gate costs."""
from mmfuse_jax.experiments import Experiment, Run, register
from mmfuse_jax.experiments.common import gate_probabilities, mean_std_cell, metric_table

NOISE = 2.0  # std of the added noise; the synthetic cues are +-1 over unit noise
EVAL = (f"noise:audio:{NOISE:g}", f"noise:video:{NOISE:g}")
MODALITIES = ("text", "audio", "video")


def runs(preset):
    base = {"gate_freeze.enabled": False}  # one stage: the gate the table reads is the one that learned
    return [Run("clean", "hct_dmg", base, perturbations=EVAL),
            Run("noisy_audio", "hct_dmg", base, synthetic={"audio_noise": NOISE}, perturbations=EVAL),
            Run("noisy_video", "hct_dmg", base, synthetic={"video_noise": NOISE}, perturbations=EVAL)]


def table(results):
    data = {}

    def extra(name):
        if name is None:
            return [f"acc {s}" for s in EVAL] + [f"gate {m}" for m in MODALITIES]
        gates = gate_probabilities(results[name].seed_runs)
        data[name] = {str(k): v.tolist() for k, v in gates.items()}
        return [results[name].cell("acc", perturbation=s) for s in EVAL] + \
            [mean_std_cell([g[i] for g in gates.values()]) for i in range(3)]

    t = metric_table(results, ["acc", "f1"], extra=extra, plot_metric="acc")
    t.data = {"gates": data}
    g = {n: [sum(v[i] for v in d.values()) / max(len(d), 1) for i in range(3)] for n, d in data.items()}
    if {"clean", "noisy_audio", "noisy_video"} <= set(g):
        t.notes = [f"gate on audio: clean {g['clean'][1]:.3f} -> noisy audio {g['noisy_audio'][1]:.3f}; "
                   f"gate on video: clean {g['clean'][2]:.3f} -> noisy video {g['noisy_video'][2]:.3f} "
                   "(a drop = the gate moved away from the noisy modality)"]
    t.notes.append(f"noisy_*: trained and evaluated on synthetic data with N(0, {NOISE:g}^2) added to that modality")
    return t


register(Experiment("hct_noise_gating", "HCT-DMG: does the learned modality gate move away from a modality made "
                    "noisy in training?", runs, table))
